"""The loop closed: reviewers' labels back into training, over HTTP only.

This module is the pipeline side of ``make retrain-demo`` and imports nothing of the
server (no Django): every step goes through the HTTP API, and the labels come through
``reviewqueue_client``. ``manage.py retrain_demo`` gives it tokens and a server; it
also runs on its own against any server:

    python scripts/retrain_demo.py --url http://127.0.0.1:8000   # tokens from RQ_*_TOKEN

An honest before and after. ``demo_setup``'s model is trained on every row of the
breast cancer data, so no row is unseen by it. This demo therefore runs its own lineage
of the same recipe (``breast-cancer-retrain``; ``scripts/demo_model.py``, beside this
file), with three disjoint parts of the data
fixed by a seed:

* held out (30%): never trained on, never sent as a prediction, so never labelled;
* initial training (30% of the rest): version 1 is trained on these alone;
* traffic (the rest, or its first ``traffic_rows``): sent to version 1 as predictions.

The routed predictions are reviewed by a simulated reviewer who knows the truth: it
accepts the model's label when it is right and escalates it when it is wrong, and an
escalation manager resolves the escalation with the true label (an override without a
configured reason code is not allowed, so a disagreement goes up, as in real life).
The pipeline then pulls the labels of version 1 through the client, retrains on the
initial rows plus the labelled rows, registers the result as the next version, and
prints both versions' accuracy on the held-out rows.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import lightgbm
import numpy as np
import requests
from reviewqueue_client import ReviewQueueClient
from sklearn.model_selection import train_test_split


def _sibling(name: str) -> ModuleType:
    """``scripts/<name>.py`` (``scripts`` is no package): loaded from its file, once per
    process, under the name ``manage.py``'s demo commands load it by too."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # first: dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# The demo's model recipe (data, training, spec, routing), shared with demo_setup.
recipe = _sibling("demo_model")

MODEL_NAME = "breast-cancer-retrain"
QUEUE = "retrain-demo"
SEED = recipe.SEED
HELD_OUT_SHARE = 0.3
INITIAL_SHARE = 0.3
BATCH_SIZE = 1000
EXTERNAL_PREFIX = "bcr-"
ESCALATION_REASON = "model_wrong"
ROLES = ("admin", "producer", "reviewer", "escalation_manager", "pipeline")
TOKEN_ENV = {role: f"RQ_{role.upper()}_TOKEN" for role in ROLES}


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class Dataset:
    data: Any  # the recipe's Data: every row, its names and its context
    rows: np.ndarray
    target: np.ndarray
    feature_names: list[str]
    labels: list[str]
    held_out: np.ndarray
    initial: np.ndarray
    traffic: np.ndarray


@dataclass
class Report:
    model_ref: str = ""
    created_v1: bool = False
    sent: int = 0
    routed: int = 0
    accepted: int = 0
    escalated: int = 0
    resolved: int = 0
    labels: int = 0
    overridden: int = 0
    label_pages: int = 0
    next_cursor: str = ""
    new_ref: str = ""
    accuracy_before: float = 0.0
    accuracy_after: float = 0.0
    held_out: int = 0
    trained_before: int = 0
    trained_after: int = 0
    lines: list[str] = field(default_factory=list)


def dataset_split(*, traffic_rows: int | None = None) -> Dataset:
    """The three disjoint parts of the data. The held-out part depends only on the seed,
    not on ``traffic_rows``, so runs of any size never train on it."""
    data = recipe.data_load()
    index = np.arange(len(data.target))
    rest, held_out = train_test_split(
        index, test_size=HELD_OUT_SHARE, random_state=SEED, stratify=data.target
    )
    traffic, initial = train_test_split(
        rest, test_size=INITIAL_SHARE, random_state=SEED, stratify=data.target[rest]
    )
    if traffic_rows is not None:
        traffic = traffic[:traffic_rows]
    return Dataset(
        data=data,
        rows=data.rows,
        target=data.target,
        feature_names=data.feature_names,
        labels=data.labels,
        held_out=np.sort(held_out),
        initial=np.sort(initial),
        traffic=np.sort(traffic),
    )


def train(rows: np.ndarray, target: np.ndarray, feature_names: list[str]) -> lightgbm.Booster:
    """The demo's recipe, as ``demo_setup`` trains it."""
    return recipe.train(rows, target, feature_names)


def accuracy(booster: lightgbm.Booster, rows: np.ndarray, target: np.ndarray) -> float:
    predicted = (np.asarray(booster.predict(rows)) > 0.5).astype(int)
    return float((predicted == target).mean())


def artifact(booster: lightgbm.Booster) -> bytes:
    return recipe.artifact(booster)


class Api:
    """A thin JSON client for the non-pipeline roles (admin, producer, reviewers)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(
        self, method: str, path: str, *, expect: Sequence[int] = (200,), body: Any = None
    ) -> requests.Response:
        url = path if "://" in path else f"{self.base_url}{path}"
        response = self.session.request(method, url, json=body, timeout=300)
        if response.status_code not in expect:
            raise DemoError(f"{method} {path}: HTTP {response.status_code}: {response.text[:2000]}")
        return response


def model_spec(data: Dataset, *, version: str, booster: lightgbm.Booster) -> dict[str, Any]:
    return recipe.model_spec(
        data.data, name=MODEL_NAME, version=version, booster=booster, queue=QUEUE
    )


def model_register(admin: Api, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Register; a 409 (that name:version exists) means reuse it."""
    response = admin.call("POST", "/api/v1/models/", body=spec, expect=(201, 409))
    if response.status_code == 201:
        return response.json(), True
    existing = admin.call("GET", f"/api/v1/models/{spec['name']}:{spec['version']}/")
    return existing.json(), False


def model_versions(admin: Api, name: str) -> list[dict[str, Any]]:
    """Every registered version of ``name`` (the list is paged)."""
    found, url = [], "/api/v1/models/"
    while url:
        page = admin.call("GET", url).json()
        found += [m for m in page["results"] if m["name"] == name]
        url = page["next"]
    return found


def next_version(admin: Api, name: str) -> str:
    numbers = [int(m["version"]) for m in model_versions(admin, name) if m["version"].isdigit()]
    return str(max(numbers, default=0) + 1)


def external_id(row: int) -> str:
    return f"{EXTERNAL_PREFIX}{row:04d}"


def row_of(external: str) -> int:
    if not external.startswith(EXTERNAL_PREFIX):
        raise DemoError(f"not one of this demo's predictions: {external!r}")
    return int(external.removeprefix(EXTERNAL_PREFIX))


def predictions_send(
    producer: Api, data: Dataset, *, booster: lightgbm.Booster, model_ref: str
) -> list[dict[str, Any]]:
    """The traffic rows as version 1 scores them, sent through the bulk intake."""
    positive = np.asarray(booster.predict(data.rows[data.traffic]))
    items = [
        recipe.prediction(
            data.data, row=int(row), positive=p, model_ref=model_ref, external_id=external_id(row)
        )
        for row, p in zip(data.traffic, positive, strict=True)
    ]
    answers = []
    for start in range(0, len(items), BATCH_SIZE):
        body = {"items": items[start : start + BATCH_SIZE]}
        result = producer.call("POST", "/api/v1/predictions/", body=body).json()
        if result["errors"]:
            errors = [r["error"] for r in result["results"] if "error" in r][:3]
            raise DemoError(f"the intake refused {result['errors']} prediction(s): {errors}")
        answers += result["results"]
    return answers


def review_routed(
    *,
    reviewer: Api,
    manager: Api,
    producer: Api,
    data: Dataset,
    model_ref: str,
    routed: Sequence[dict[str, Any]],
    wait_seconds: float,
    report: Report,
) -> None:
    """Decide every routed prediction of ``model_ref`` as a reviewer who knows the truth.

    Claims until the queue is empty, then checks the routed predictions' status: items
    still waiting for their explanation (or leased elsewhere) are waited for, up to
    ``wait_seconds``. A wrong model label is escalated, and the escalation resolved.
    """
    deadline = time.monotonic() + wait_seconds
    pending = {answer["id"] for answer in routed}
    while True:
        while (claim := reviewer.call("POST", "/api/v1/queue/claim/", body={"queue": QUEUE},
                                      expect=(200, 204))).status_code == 200:  # fmt: skip
            item = claim.json()
            prediction = item["prediction"]
            token = item["lease"]["token"]
            truth = data.labels[data.target[row_of(prediction["external_id"])]]
            if prediction["model"] != model_ref:
                raise DemoError(f"queue {QUEUE!r} holds an item of {prediction['model']}")
            if prediction["prediction"]["label"] == truth:
                reviewer.call(
                    "POST",
                    f"/api/v1/reviews/{item['id']}/decide/",
                    body={"lease_token": token, "label": truth},
                )
                report.accepted += 1
            else:
                reviewer.call(
                    "POST",
                    f"/api/v1/reviews/{item['id']}/escalate/",
                    body={
                        "lease_token": token,
                        "reason": ESCALATION_REASON,
                        "comment": "the model's label is wrong",
                    },
                )
                report.escalated += 1
        report.resolved += escalations_resolve(manager=manager, data=data, model_ref=model_ref)
        statuses = {
            pid: producer.call("GET", f"/api/v1/predictions/{pid}/").json()["status"]
            for pid in pending
        }
        pending = {pid for pid, status in statuses.items() if status != "decided"}
        if not pending:
            return
        if time.monotonic() >= deadline:
            report.lines.append(
                f"{len(pending)} routed prediction(s) still undecided after {wait_seconds:g}s "
                "(explanations pending, or leased by someone else); going on without them"
            )
            return
        time.sleep(0.5)


def escalations_resolve(*, manager: Api, data: Dataset, model_ref: str) -> int:
    """Resolve every open escalation of ``model_ref`` with the true label."""
    resolved, url = 0, "/api/v1/escalations/?status=open"
    while url:
        page = manager.call("GET", url).json()
        for escalation in page["results"]:
            prediction = escalation["prediction"]
            if prediction["model"] != model_ref:
                continue
            truth = data.labels[data.target[row_of(prediction["external_id"])]]
            manager.call(
                "POST",
                f"/api/v1/escalations/{escalation['id']}/resolve/",
                body={"label": truth, "comment": "checked against the ground truth"},
            )
            resolved += 1
        url = page["next"]
    return resolved


def run(
    *,
    base_url: str,
    tokens: dict[str, str],
    traffic_rows: int | None = None,
    wait_seconds: float = 120.0,
    write: Callable[[str], None] = print,
) -> Report:
    """The whole loop against the server at ``base_url``; returns what it measured."""
    missing = [role for role in ROLES if not tokens.get(role)]
    if missing:
        raise DemoError(f"no token for: {', '.join(missing)}")
    admin, producer = Api(base_url, tokens["admin"]), Api(base_url, tokens["producer"])
    reviewer = Api(base_url, tokens["reviewer"])
    manager = Api(base_url, tokens["escalation_manager"])
    report = Report()

    data = dataset_split(traffic_rows=traffic_rows)
    before = train(data.rows[data.initial], data.target[data.initial], data.feature_names)
    model, report.created_v1 = model_register(admin, model_spec(data, version="1", booster=before))
    report.model_ref = model["ref"]
    if model["artifact_sha256"] != hashlib.sha256(artifact(before)).hexdigest():
        raise DemoError(
            f"{model['ref']} was registered with another model file (another LightGBM?); "
            "its predictions would not be the ones this run computes"
        )
    write(
        f"{model['ref']}: trained on {len(data.initial)} rows "
        f"({'registered' if report.created_v1 else 'already registered, reused'}); "
        f"{len(data.held_out)} rows held out, never trained on nor sent"
    )

    answers = predictions_send(producer, data, booster=before, model_ref=model["ref"])
    routed = [a for a in answers if a["routed"]]
    report.sent, report.routed = len(answers), len(routed)
    write(f"sent {report.sent} predictions, {report.routed} routed to review")

    review_routed(
        reviewer=reviewer,
        manager=manager,
        producer=producer,
        data=data,
        model_ref=model["ref"],
        routed=routed,
        wait_seconds=wait_seconds,
        report=report,
    )
    write(
        f"reviewed: {report.accepted} accepted, {report.escalated} escalated as wrong, "
        f"{report.resolved} escalation(s) resolved with the true label"
    )

    with ReviewQueueClient(base_url, tokens["pipeline"]) as client:
        pulled = client.labels_pandas(model=model["ref"])
    labels = pulled.frame
    report.labels, report.label_pages = len(labels), pulled.pages
    report.next_cursor = pulled.next_cursor
    report.overridden = int(labels["overridden"].sum()) if len(labels) else 0
    write(
        f"pulled {report.labels} labels of {model['ref']} through the client "
        f"({report.overridden} overriding the model; {report.label_pages} page(s), "
        f"next cursor {report.next_cursor})"
    )

    label_rows = [row_of(external) for external in labels.get("external_id", [])]
    leaked = set(label_rows) & set(data.held_out.tolist())
    if leaked:
        raise DemoError(f"held-out rows came back as labels: {sorted(leaked)[:5]}")
    labelled = (
        np.array(
            [[features[name] for name in data.feature_names] for features in labels["features"]]
        )
        if len(labels)
        else np.empty((0, len(data.feature_names)))
    )
    targets = np.array([data.labels.index(label) for label in labels.get("label", [])], dtype=int)
    rows = np.vstack([data.rows[data.initial], labelled])
    target = np.concatenate([data.target[data.initial], targets])
    after = train(rows, target, data.feature_names)

    version = next_version(admin, MODEL_NAME)
    new_model, _ = model_register(admin, model_spec(data, version=version, booster=after))
    report.new_ref = new_model["ref"]
    write(f"retrained on {len(rows)} rows ({len(data.initial)} initial + {len(labelled)} "
          f"labelled); registered {report.new_ref}")  # fmt: skip

    held_rows, held_target = data.rows[data.held_out], data.target[data.held_out]
    report.held_out = len(data.held_out)
    report.trained_before, report.trained_after = len(data.initial), len(rows)
    report.accuracy_before = accuracy(before, held_rows, held_target)
    report.accuracy_after = accuracy(after, held_rows, held_target)
    write(f"held-out accuracy ({report.held_out} rows never trained on, never labelled):")
    write(f"  before  {model['ref']:<28} {report.accuracy_before:.4f}")
    write(f"  after   {report.new_ref:<28} {report.accuracy_after:.4f}")
    for line in report.lines:
        write(line)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's root URL")
    parser.add_argument("--traffic-rows", type=int, default=None)
    parser.add_argument("--wait-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    tokens = {role: os.environ.get(env, "") for role, env in TOKEN_ENV.items()}
    try:
        run(
            base_url=args.url,
            tokens=tokens,
            traffic_rows=args.traffic_rows,
            wait_seconds=args.wait_seconds,
        )
    except DemoError as exc:
        print(f"retrain demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
