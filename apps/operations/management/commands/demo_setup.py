"""Fill an empty installation with something to look at: accounts, a model, predictions.

Everything goes through the doors a real deployment uses. Accounts are made by the
accounts service; the model is registered and the predictions are sent through the
HTTP API (in-process, with DRF's test client and the accounts' real tokens), so the
demo runs the same validation, routing and intake code as any client would.

Running it again changes nothing but the passwords: accounts are upserted, the
registry's 409 for an existing ``name:version`` means "reuse it", and predictions sent
again with the same content come back as duplicates. That holds because the model is
trained deterministically (fixed seed, one thread), so its probabilities, and with
them each prediction's content, are the same on every run.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm
import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework.test import APIClient

from apps.accounts.roles import Role
from apps.accounts.services import account_token, account_upsert
from apps.operations.scripts import script_module
from apps.registry.services import reason_code_upsert

# The data, the training and the routing policy: scripts/demo_model.py, shared with the
# retraining pipeline.
recipe = script_module("demo_model")

MODEL_NAME = "breast-cancer"
MODEL_VERSION = "1"
QUEUE = "default"
N_TREES = recipe.N_TREES
# The API's bulk limit: one request per thousand predictions.
BATCH_SIZE = 1000
SERVER_URL = "http://127.0.0.1:8000/"

# The reasons a reviewer may give for overriding the model's label (an override needs
# one), so that an override works in the review screen and the API from the start.
REASON_CODES: tuple[tuple[str, str], ...] = (
    ("measurement_error", "A feature value is wrong: mis-measured or mis-entered"),
    ("imaging_reviewed", "The reviewer read the images and disagrees with the model"),
    ("clinical_context", "The patient's history or referral says otherwise"),
)

DEMO_ACCOUNTS: tuple[tuple[str, Role], ...] = (
    ("demo-admin", Role.ADMIN),
    ("demo-producer", Role.PRODUCER),
    ("demo-reviewer", Role.REVIEWER),
    ("demo-manager", Role.ESCALATION_MANAGER),
    ("demo-pipeline", Role.PIPELINE),
)


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: str
    password: str
    token: str


@dataclass(frozen=True)
class TrainedModel:
    """A fitted booster and the data it scores: ``positive[i]`` is P(labels[1]) for row i."""

    booster: lightgbm.Booster
    data: Any  # the recipe's Data
    positive: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        return self.data.feature_names

    @property
    def labels(self) -> list[str]:
        return self.data.labels

    @property
    def rows(self) -> np.ndarray:
        return self.data.rows

    @property
    def artifact(self) -> bytes:
        """The LightGBM text model, as the registry stores it."""
        return recipe.artifact(self.booster)


@dataclass
class IntakeSummary:
    """What the intake API answered, added up over every bulk request."""

    requests: int = 0
    created: int = 0
    duplicates: int = 0
    errors: int = 0
    routed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def add(self, body: dict[str, Any]) -> None:
        self.requests += 1
        self.created += body["created"]
        self.duplicates += body["duplicates"]
        self.errors += body["errors"]
        for result in body["results"]:
            if "error" in result:
                if len(self.error_samples) < 5:
                    error = result["error"]
                    self.error_samples.append(
                        f"{error['code']}: {error['message']} {error['details']}"
                    )
            elif result["routed"]:
                self.routed += 1
                self.reasons.update(result["reasons"])


def accounts_create() -> list[DemoAccount]:
    """One account per role, each with a fresh random password and its API token.

    Passwords are random rather than well known because the demo server answers anyone
    who can reach the machine; they are printed, and replaced on every run.
    """
    accounts = []
    for username, role in DEMO_ACCOUNTS:
        password = secrets.token_urlsafe(12)
        user = account_upsert(username=username, roles=[role], password=password)
        accounts.append(
            DemoAccount(
                username=username,
                role=str(role),
                password=password,
                token=account_token(user=user),
            )
        )
    return accounts


def reason_codes_create() -> list[str]:
    """The demo model's override reasons (registry service); their codes."""
    return [
        reason_code_upsert(model_name=MODEL_NAME, code=code, description=description).code
        for code, description in REASON_CODES
    ]


def model_train() -> TrainedModel:
    """The recipe's LightGBM classifier, trained on every row of the breast cancer data."""
    data = recipe.data_load()
    booster = recipe.train(data.rows, data.target, data.feature_names)
    return TrainedModel(booster=booster, data=data, positive=np.asarray(booster.predict(data.rows)))


def model_spec(trained: TrainedModel) -> dict[str, Any]:
    """The registration body: the contract's spec, with the model file base64-encoded."""
    return recipe.model_spec(
        trained.data, name=MODEL_NAME, version=MODEL_VERSION, booster=trained.booster, queue=QUEUE
    )


def api_client(*, token: str) -> APIClient:
    """An in-process API client that authenticates with ``token``.

    It sends a Host header the settings allow, as a browser or model server would.
    """
    host = next(iter(settings.ALLOWED_HOSTS), "localhost")
    client = APIClient(HTTP_HOST="localhost" if host == "*" else host.lstrip("."))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _failure(action: str, response: Any) -> CommandError:
    return CommandError(
        f"{action} failed: HTTP {response.status_code}: {response.content.decode()[:2000]}"
    )


def model_register(*, client: APIClient, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Register the model; if that version exists already (409), fetch it instead.

    Returns the registry's answer and whether this run created it.
    """
    response = client.post("/api/v1/models/", spec, format="json")
    if response.status_code == 201:
        return response.json(), True
    if response.status_code == 409:
        existing = client.get(f"/api/v1/models/{spec['name']}:{spec['version']}/")
        if existing.status_code == 200:
            return existing.json(), False
        raise _failure("fetching the registered model", existing)
    raise _failure("registering the model", response)


def prediction_items(*, trained: TrainedModel, model_ref: str) -> list[dict[str, Any]]:
    """One prediction per dataset row, as a model server would send it."""
    return [
        recipe.prediction(
            trained.data, row=row, positive=p, model_ref=model_ref, external_id=f"bc-{row:04d}"
        )
        for row, p in enumerate(trained.positive)
    ]


def predictions_send(*, client: APIClient, items: Sequence[dict[str, Any]]) -> IntakeSummary:
    """Send ``items`` through the bulk intake API, a thousand per request."""
    summary = IntakeSummary()
    for start in range(0, len(items), BATCH_SIZE):
        batch = list(items[start : start + BATCH_SIZE])
        response = client.post("/api/v1/predictions/", {"items": batch}, format="json")
        if response.status_code != 200:
            raise _failure("sending predictions", response)
        summary.add(response.json())
    return summary


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with left-aligned columns."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


class Command(BaseCommand):
    help = (
        "Set up the demo: one account per role, a LightGBM model registered through the "
        "API, and the breast cancer dataset sent as predictions. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--url", default=SERVER_URL, help=f"where the demo is served (default {SERVER_URL})"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"].rstrip("/")
        accounts = accounts_create()
        tokens = {account.role: account.token for account in accounts}

        trained = model_train()
        model, created = model_register(
            client=api_client(token=tokens[Role.ADMIN]), spec=model_spec(trained)
        )
        self._print_model(model, created=created, trained=trained)

        items = prediction_items(trained=trained, model_ref=model["ref"])
        summary = predictions_send(client=api_client(token=tokens[Role.PRODUCER]), items=items)
        self._print_intake(summary, sent=len(items))
        self._heading("Override reasons")
        self.stdout.write(f"{MODEL_NAME}: {', '.join(reason_codes_create())}")

        self._print_accounts(accounts)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Open {url}/ and log in at {url}/login/"))
        self.stdout.write("(reviewers: demo-reviewer; escalations: demo-manager)")
        self.stdout.write(f"API docs: {url}/api/docs/ (the API takes 'Authorization: Token ...')")
        self.stdout.write(f"Admin:    {url}/admin/ (log in as demo-admin)")

    def _heading(self, text: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(text))

    def _print_accounts(self, accounts: Sequence[DemoAccount]) -> None:
        self._heading("Demo accounts (passwords are new on every run; tokens stay)")
        rows = [[a.username, a.role, a.password, a.token] for a in accounts]
        self.stdout.write(format_table(["username", "role", "password", "API token"], rows))

    def _print_model(self, model: dict[str, Any], *, created: bool, trained: TrainedModel) -> None:
        self._heading("Model")
        verb = "registered" if created else "already registered, reused"
        self.stdout.write(
            f"{model['ref']} (id {model['id']}) {verb}: LightGBM, {N_TREES} trees, "
            f"{len(model['features'])} numeric features, labels {', '.join(model['labels'])}; "
            f"routed items go to queue {model['queue']!r}"
        )
        if model["artifact_sha256"] != hashlib.sha256(trained.artifact).hexdigest():
            self.stdout.write(
                self.style.WARNING(
                    "The registered model file differs from the one trained now (another "
                    "LightGBM version?); predictions whose probabilities changed will be "
                    "refused as conflicting duplicates."
                )
            )

    def _print_intake(self, summary: IntakeSummary, *, sent: int) -> None:
        self._heading("Predictions")
        self.stdout.write(
            f"sent {sent} in {summary.requests} request(s): created {summary.created}, "
            f"duplicates {summary.duplicates}, errors {summary.errors}"
        )
        accepted = sent - summary.errors - summary.routed
        self.stdout.write(f"routed to review {summary.routed}, auto-accepted {accepted}")
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary.reasons.most_common())
        self.stdout.write(f"reasons: {reasons or 'none'}")
        for sample in summary.error_samples:
            self.stdout.write(self.style.ERROR(f"error: {sample}"))
