"""Schemathesis over the whole OpenAPI schema, against the WSGI application.

What runs: every operation of drf-spectacular's schema (``/api/schema/``, loaded from
``reviewqueue.wsgi.application``), one pytest item per operation, each on a freshly
seeded ``world`` (tests/security/conftest.py) inside the test's transaction. The
phases are examples, coverage (deterministic boundary and negative cases, missing
headers, undeclared methods) and fuzzing, in both generation modes (positive and
negative), with every check on except ``positive_data_acceptance`` (below).

What it proves: no input makes a server error; every answer (status, content type,
headers, body) is described by the schema; invalid input is refused; every operation
refuses a call with no credentials and with bad ones (``ignored_auth`` repeats each
accepted call without the token and with a wrong one); ``use_after_free`` and
``ensure_resource_availability`` are on, though the API has no DELETE for them to
act on.

Choices:

- Credentials: each operation is called with the real token of the role it needs
  (``ROLE_BY_OPERATION``; a new operation without an entry fails here), passed
  explicitly so that ``ignored_auth`` knows them to be valid and probes without them.
- Reaching past validation: the schema cannot say which ids exist, which lease token is
  live or which labels a model has. A ``before_call`` hook therefore gives the positive
  cases of an operation, in turn: nothing (random ids and tokens go out as generated),
  real objects with the generated secrets (a live lease's item with a random token:
  409), or everything real (the lease and its token, an open or claimed escalation, the
  seeded prediction, model and exports, a model's labels and reason codes, whole valid
  prediction and model bodies, some sent twice: 200 and 409). Fresh leases and
  escalations are made as the calls use them up. Negative cases go as generated.
  Schemathesis re-validates a case the hook changed, so it judges what was sent. Each
  operation must reach at least one 2xx.
- ``positive_data_acceptance`` is off: a body valid for the schema is still refused
  when it names a label the model lacks or a lease that is not live, which the schema
  cannot express; the filled cases cover acceptance instead (at least one 2xx each).
- Repeatable: a fixed seed, ``derandomize`` and no example database (nothing is written
  into the repository). ``max_examples`` keeps the run about a minute on two cores.
- ``test_every_operation_requires_credentials`` reads the schema itself: an operation
  whose schema made credentials optional would escape ``ignored_auth``.
- The schema is loaded when the module is imported: the lazy
  ``schemathesis.pytest.from_fixture`` of Schemathesis 4.32 does not run under pytest 9
  (it sets ``Node._nodeid``, which pytest 9 no longer has).
- The WSGI application runs in the test's thread and transaction: Django's closing of
  connections at the end of a request is suspended meanwhile, as Django's test client
  does.
"""

import base64
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.config import SchemathesisConfig

from apps.labels.models import ExportJob
from apps.labels.services import export_build, export_download_url
from apps.registry.models import ModelVersion
from apps.reviews.models import Escalation, EscalationStatus, ItemStatus, ReviewItem
from apps.reviews.services.decisions import review_item_escalate
from apps.reviews.services.escalations import escalation_claim
from apps.reviews.services.leases import review_item_claim
from reviewqueue.wsgi import application
from tests.factories import lightgbm_artifact, make_items, model_spec, prediction_body

# Hypothesis keeps caches (not examples: there is no example database) out of the
# repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "reviewqueue-hypothesis")

MAX_EXAMPLES = 25

CONFIG = {
    "seed": 20240611,
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
    },
    "checks": {
        # Off on purpose, see the module docstring.
        "positive_data_acceptance": {"enabled": False},
    },
}

schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", application, config=SchemathesisConfig.from_dict(CONFIG)
)

ROLE_BY_OPERATION = {
    "models_list": "reviewer",
    "models_create": "admin",
    "models_retrieve": "producer",
    "predictions_list": "producer",
    "predictions_create": "producer",
    "predictions_retrieve": "producer",
    "queue_claim": "reviewer",
    "reviews_heartbeat": "reviewer",
    "reviews_release": "reviewer",
    "reviews_decide": "reviewer",
    "reviews_escalate": "reviewer",
    "escalations_list": "escalation_manager",
    "escalations_claim": "escalation_manager",
    "escalations_resolve": "escalation_manager",
    "escalations_return": "escalation_manager",
    "labels_list": "pipeline",
    "exports_list": "pipeline",
    "exports_create": "pipeline",
    "exports_retrieve": "pipeline",
    "exports_download": "pipeline",
}

# The positive cases of an operation take turns: as generated, real objects with the
# generated secrets, everything real.
AS_GENERATED, REAL_OBJECTS, ALL_REAL = 0, 1, 2


def operation_id(case) -> str:
    return case.operation.definition.raw["operationId"]


class RealValues:
    """The seeded world, handed out to cases: live leases, escalations in each state,
    the ids of the seeded objects. Makes more as calls use them up."""

    def __init__(self, world, download_token: str) -> None:
        self.world = world
        self.own = world.own
        self.reviewer = world.members["reviewer"].user
        self.manager = world.members["escalation_manager"].user
        self.download_token = download_token
        self.calls: Counter[str] = Counter()
        self.fills: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.refills = 0

    # The pools.

    def leased_item(self) -> tuple[int, str]:
        """An item of ``default`` leased to the member reviewer, and its token."""
        held = ReviewItem.objects.filter(
            status=ItemStatus.LEASED, leased_by=self.reviewer, lease_expires_at__gt=timezone.now()
        ).first()
        if held is not None:
            return held.id, str(held.lease_token)
        item = review_item_claim(user=self.reviewer, queue="default")
        if item is None:
            self.refills += 1
            version = ModelVersion.objects.get(name="credit-default", version="3")
            make_items(model_version=version, n=10, prefix=f"fuzz-{self.refills}")
            item = review_item_claim(user=self.reviewer, queue="default")
        return item.id, str(item.lease_token)

    def open_escalation(self) -> int:
        found = Escalation.objects.filter(
            status=EscalationStatus.OPEN, item__queue__name="default"
        ).first()
        if found is not None:
            return found.id
        item_id, token = self.leased_item()
        review_item_escalate(
            user=self.reviewer, item_id=item_id, token=token, reason="needs_second_look"
        )
        return Escalation.objects.get(item_id=item_id, status=EscalationStatus.OPEN).id

    def claimed_escalation(self) -> tuple[int, str]:
        found = Escalation.objects.filter(
            status=EscalationStatus.CLAIMED,
            claimed_by=self.manager,
            lease_expires_at__gt=timezone.now(),
        ).first()
        if found is None:
            found = escalation_claim(user=self.manager, escalation_id=self.open_escalation())
        return found.id, str(found.lease_token)

    # The hook.

    def fill(self, case) -> None:
        """Fill a positive case by its turn: as generated, real objects with the
        generated secrets (lease and download tokens), or everything real."""
        op = operation_id(case)
        n = self.calls[op]
        self.calls[op] += 1
        # Negative cases go as generated: what makes them invalid must reach the server.
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return
        level = n % 3
        if level == AS_GENERATED:
            return
        filler = getattr(self, f"_fill_{op}", None)
        if filler is not None:
            filler(case, n, secrets=level == ALL_REAL)

    def _fill_reviews(self, case, n: int, secrets: bool) -> None:
        item_id, token = self.leased_item()
        _path(case, "item_id", item_id)
        if secrets:
            _body_set(case, "lease_token", token)

    _fill_reviews_heartbeat = _fill_reviews
    _fill_reviews_release = _fill_reviews

    def _fill_reviews_decide(self, case, n: int, secrets: bool) -> None:
        self._fill_reviews(case, n, secrets)
        if n % 2:
            _body_set(case, "label", "approve")
        else:
            _body_set(case, "label", "deny")
            _body_set(case, "reason_code", "policy", add=True)

    def _fill_reviews_escalate(self, case, n: int, secrets: bool) -> None:
        self._fill_reviews(case, n, secrets)
        _body_set(case, "reason", "needs_second_look")

    def _fill_queue_claim(self, case, n: int, secrets: bool) -> None:
        _body_set(case, "queue", "default")

    def _fill_escalations_claim(self, case, n: int, secrets: bool) -> None:
        _path(case, "escalation_id", self.open_escalation())

    def _fill_escalations_resolve(self, case, n: int, secrets: bool) -> None:
        self._fill_escalations_return(case, n, secrets)
        _body_set(case, "label", ("approve", "deny")[n % 2])

    def _fill_escalations_return(self, case, n: int, secrets: bool) -> None:
        escalation_id, token = self.claimed_escalation()
        _path(case, "escalation_id", escalation_id)
        if secrets:
            _body_set(case, "lease_token", token)

    def _fill_escalations_list(self, case, n: int, secrets: bool) -> None:
        _query_drop(case, "cursor")

    _fill_models_list = _fill_escalations_list
    _fill_exports_list = _fill_escalations_list

    def _fill_models_retrieve(self, case, n: int, secrets: bool) -> None:
        _path(case, "ref", self.own["model_ref"] if n % 2 else str(self.own["model"]))

    def _fill_models_create(self, case, n: int, secrets: bool) -> None:
        # JSON only: Schemathesis cannot re-validate a multipart body holding bytes.
        if case.media_type != "application/json":
            return
        k = self.next_fill("models_create")
        if k % 3 == 2:
            # The version registered by the previous fill again: 409.
            case.body = model_spec(name=f"fuzz-model-{k - 1}")
        elif k % 3 == 1:
            case.body = model_spec(name=f"fuzz-model-{k}")
        else:
            spec = model_spec(name=f"fuzz-model-{k}", explainer={"kind": "lightgbm"})
            case.body = {**spec, "artifact": base64.b64encode(lightgbm_artifact()).decode()}

    def _fill_predictions_list(self, case, n: int, secrets: bool) -> None:
        _query_drop(case, "cursor")
        _query_set(case, "model", self.own["model_ref"])
        _query_set(case, "external_id", self.own["external_id"])

    def _fill_predictions_create(self, case, n: int, secrets: bool) -> None:
        if case.media_type != "application/json":
            return
        k = self.next_fill("predictions_create")
        if k % 4 == 3:
            case.body = {"items": [prediction_body(f"fuzz-bulk-{k}-{i}") for i in range(3)]}
            return
        # In turn: a new prediction (201), the same again (200), the same external_id
        # with other content (409).
        context = {"amount": 500 + k % 4 // 2}
        case.body = prediction_body(f"fuzz-{k // 4}", context=context)

    def _fill_predictions_retrieve(self, case, n: int, secrets: bool) -> None:
        _path(case, "prediction_id", self.own["prediction"])

    def _fill_labels_list(self, case, n: int, secrets: bool) -> None:
        _query_set(case, "after", "")
        _query_set(case, "model", self.own["model_ref"])

    def _fill_exports_create(self, case, n: int, secrets: bool) -> None:
        _body_set(case, "after", "")
        _body_set(case, "model", self.own["model_ref"])

    def _fill_exports_retrieve(self, case, n: int, secrets: bool) -> None:
        _path(case, "export_id", self.own["export"])

    def _fill_exports_download(self, case, n: int, secrets: bool) -> None:
        _path(case, "export_id", self.own["export"])
        if secrets:
            _query_set(case, "token", self.download_token, add=True)

    def next_fill(self, name: str) -> int:
        k = self.fills[name]
        self.fills[name] += 1
        return k


def _path(case, name: str, value) -> None:
    if case.path_parameters is not None and name in case.path_parameters:
        case.path_parameters[name] = value


def _body_set(case, name: str, value, *, add: bool = False) -> None:
    if isinstance(case.body, dict) and (add or name in case.body):
        case.body[name] = value


def _query_set(case, name: str, value, *, add: bool = False) -> None:
    if case.query is not None and (add or name in case.query):
        case.query[name] = value


def _query_drop(case, name: str) -> None:
    if case.query is not None:
        case.query.pop(name, None)


_active: RealValues | None = None


@schemathesis.hook
def before_call(context, case, kwargs):
    """Fill the case with real values (a global hook: inert outside these tests)."""
    if _active is not None:
        _active.fill(case)


@pytest.fixture
def real_values(request, world, settings, tmp_path):
    """The seeded world with a finished export, active for the hook; the WSGI
    application kept in the test's transaction."""
    global _active
    settings.EXPORT_ROOT = tmp_path / "exports"
    export_build(job_id=world.own["export"])
    job = ExportJob.objects.get(id=world.own["export"])
    url = export_download_url(job=job, request=None)
    assert url is not None, job.status
    token = parse_qs(urlsplit(url).query)["token"][0]
    # The world's APIClient calls reconnect these after each request; from here on
    # only the WSGI application answers, in this thread and transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    _active = values = RealValues(world, token)
    failed_before = request.session.testsfailed
    try:
        yield values
    finally:
        _active = None
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    if request.session.testsfailed > failed_before:
        return
    # Past validation: every operation reached its business logic at least once.
    for op, statuses in values.statuses.items():
        assert any(200 <= s < 300 for s in statuses), (op, dict(statuses))


@pytest.mark.django_db
@schema.parametrize()
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api(case, world, real_values):
    op = operation_id(case)
    token = world.members[ROLE_BY_OPERATION[op]].token
    response = case.call_and_validate(headers={"Authorization": f"Token {token}"})
    real_values.statuses[op][response.status_code] += 1


def test_every_operation_requires_credentials():
    """The schema admits no anonymous caller anywhere (``ignored_auth`` trusts an
    operation whose schema makes credentials optional), and every operation has a role
    above."""
    operations = {
        (method, path): operation
        for path, methods in schema.raw_schema["paths"].items()
        for method, operation in methods.items()
    }
    assert {op["operationId"] for op in operations.values()} == set(ROLE_BY_OPERATION)
    for (method, path), operation in operations.items():
        security = operation.get("security")
        assert security, (method, path)
        assert {} not in security, f"{method.upper()} {path} admits anonymous callers"
        assert "401" in operation["responses"], (method, path)
