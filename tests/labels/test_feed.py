"""GET /api/v1/labels/: every final human decision once, with its provenance, in
JSONL, CSV and Parquet; only for pipeline accounts, and only of their queues."""

import json

import pytest

from apps.explanations.documents import explanation_document
from apps.explanations.models import Explanation
from apps.queues.models import Queue
from apps.reviews.models import Decision, Escalation
from apps.reviews.services.decisions import review_item_escalate
from apps.reviews.services.escalations import escalation_claim, escalation_resolve
from apps.reviews.services.leases import review_item_claim
from tests.factories import decide_items, explain, make_client, make_items, make_user, model_spec
from tests.helpers import read_page

# Transactional: the feed serves committed decisions only, never the reader's own open transaction.
pytestmark = pytest.mark.django_db(transaction=True)

CONTRACT_FIELDS = {
    "cursor", "prediction_id", "external_id", "model", "features", "context",
    "model_label", "model_probabilities", "label", "source", "overridden", "reason_code",
    "reasons", "reviewer", "decided_at", "explanation", "selection_probability",
}  # fmt: skip


def test_every_decision_is_one_label_with_the_contract_fields(
    model_version, reviewer, pipeline_client
):
    item_ids = make_items(model_version=model_version, n=5)
    explain(item_ids)
    decide_items(reviewer, 5, override_every=2)

    status, labels, next_cursor = read_page(pipeline_client)

    assert status == 200
    assert len(labels) == 5
    assert next_cursor == labels[-1]["cursor"]
    first = labels[0]
    assert set(first) == CONTRACT_FIELDS
    decision = Decision.objects.select_related("item__prediction").get(
        item__prediction_id=first["prediction_id"]
    )
    prediction = decision.item.prediction
    assert first["external_id"] == prediction.external_id
    assert first["model"] == "credit-default:3"
    assert first["features"] == prediction.features  # all of them: pipelines retrain on them
    assert first["context"] == {"amount": 20000}
    assert first["model_label"] == "approve"
    assert first["model_probabilities"] == {"approve": 0.6, "deny": 0.4}
    assert first["reasons"] == ["low_confidence"]
    assert first["selection_probability"] == 1.0
    assert first["source"] == "reviewer"
    assert (first["label"], first["overridden"], first["reason_code"]) == ("deny", True, "policy")
    accepted = labels[1]
    assert (accepted["label"], accepted["overridden"], accepted["reason_code"]) == (
        "approve",
        False,
        None,
    )
    assert first["decided_at"].endswith("Z")
    assert [label["prediction_id"] for label in labels] == list(
        Decision.objects.order_by("id").values_list("item__prediction_id", flat=True)
    )


def test_the_explanation_covers_every_feature_by_size_and_adds_up(
    model_version, reviewer, pipeline_client
):
    item_ids = make_items(model_version=model_version, n=1)
    explain(item_ids, contributions=(0.05, -0.02, 0.3, -0.13))
    decide_items(reviewer, 1)

    _, [label], _ = read_page(pipeline_client)

    explanation = label["explanation"]
    assert [row["feature"] for row in explanation["contributions"]] == [
        "age",
        "homeowner",
        "income",
        "region",
    ]
    assert explanation["contributions"][0] == {"feature": "age", "value": 41, "contribution": 0.3}
    total = explanation["base_value"] + sum(r["contribution"] for r in explanation["contributions"])
    assert total == pytest.approx(explanation["model_output"], abs=1e-12)
    assert (explanation["method"], explanation["output"]) == ("precomputed", "probability")


def test_an_explanation_stored_without_its_document_is_served_the_same(
    model_version, reviewer, pipeline_client
):
    item_ids = make_items(model_version=model_version, n=2)
    explain(item_ids[:1])
    explain(item_ids[1:], document=False)
    decide_items(reviewer, 2)

    _, [with_document, without], _ = read_page(pipeline_client)

    def without_values(explanation: dict) -> dict:
        rows = [{**row, "value": None} for row in explanation["contributions"]]
        return {**explanation, "contributions": rows}

    for label in (with_document, without):
        rows = label["explanation"]["contributions"]
        assert {row["feature"]: row["value"] for row in rows} == label["features"]
    assert without_values(with_document["explanation"]) == without_values(without["explanation"])


def test_an_item_without_an_explanation_has_a_null_one(model_version, reviewer, pipeline_client):
    make_items(model_version=model_version, n=1)
    decide_items(reviewer, 1)

    _, [label], _ = read_page(pipeline_client)

    assert label["explanation"] is None


def test_the_reviewer_is_a_stable_pseudonym_never_the_username(
    model_version, reviewer, pipeline_client
):
    other = make_user("rev-2", "reviewer")
    make_items(model_version=model_version, n=3)
    decide_items(reviewer, 2)
    decide_items(other, 1)

    _, labels, _ = read_page(pipeline_client)
    again = read_page(pipeline_client)[1]

    names = [label["reviewer"] for label in labels]
    assert names[0] == names[1] != names[2]
    assert names == [label["reviewer"] for label in again]
    assert not any("rev-" in name for name in names)


def test_following_the_cursor_gives_each_label_once_in_a_stable_order(
    model_version, reviewer, pipeline_client
):
    make_items(model_version=model_version, n=11)
    decide_items(reviewer, 11)
    expected = list(Decision.objects.order_by("id").values_list("item__prediction_id", flat=True))

    seen, cursor, sizes = [], None, []
    while True:
        _, page, cursor = read_page(pipeline_client, after=cursor, limit=4)
        if not page:
            break
        sizes.append(len(page))
        seen += [label["prediction_id"] for label in page]
        assert cursor == page[-1]["cursor"]

    assert sizes == [4, 4, 3]
    assert seen == expected
    # An empty page hands back the cursor it was given: nothing newer yet.
    assert read_page(pipeline_client, after=cursor)[1:] == ([], cursor)
    # New decisions come after it.
    make_items(model_version=model_version, n=2, prefix="later")
    decide_items(reviewer, 2)
    _, page, _ = read_page(pipeline_client, after=cursor)
    assert [label["external_id"] for label in page] == ["later-0", "later-1"]


def test_a_cursor_from_the_middle_of_a_page_resumes_after_that_label(
    model_version, reviewer, pipeline_client
):
    make_items(model_version=model_version, n=5)
    decide_items(reviewer, 5)
    _, labels, _ = read_page(pipeline_client)

    _, rest, _ = read_page(pipeline_client, after=labels[1]["cursor"])

    assert rest == labels[2:]


def _normalised(row: dict) -> dict:
    """A CSV or Parquet row as JSONL has it: JSON cells parsed, types restored."""
    out = dict(row)
    for name in ("features", "context", "model_probabilities", "reasons", "explanation"):
        out[name] = json.loads(out[name]) if out[name] not in (None, "") else None
    return out


def test_jsonl_csv_and_parquet_agree_row_for_row(model_version, reviewer, pipeline_client):
    item_ids = make_items(model_version=model_version, n=7)
    explain(item_ids[:4])
    decide_items(reviewer, 7, override_every=3)

    _, jsonl, cursor_jsonl = read_page(pipeline_client)
    _, csv_rows, cursor_csv = read_page(pipeline_client, format="csv")
    _, table, cursor_parquet = read_page(pipeline_client, format="parquet")

    assert cursor_jsonl == cursor_csv == cursor_parquet
    parquet_rows = table.to_pylist()
    assert len(jsonl) == len(csv_rows) == len(parquet_rows) == 7
    assert list(jsonl[0]) == list(csv_rows[0]) == table.column_names  # same fields, same order
    for from_jsonl, from_csv, from_parquet in zip(jsonl, csv_rows, parquet_rows, strict=True):
        csv_row = _normalised(from_csv)
        csv_row["prediction_id"] = int(csv_row["prediction_id"])
        csv_row["overridden"] = csv_row["overridden"] == "true"
        csv_row["selection_probability"] = float(csv_row["selection_probability"])
        csv_row["reason_code"] = csv_row["reason_code"] or None
        assert csv_row == from_jsonl
        parquet_row = _normalised(from_parquet)
        parquet_row["decided_at"] = parquet_row["decided_at"].isoformat().replace("+00:00", "Z")
        assert parquet_row == from_jsonl


def test_a_cell_a_spreadsheet_would_run_is_neutralised_in_csv(
    model_version, reviewer, pipeline_client
):
    make_items(model_version=model_version, n=1, prefix='=HYPERLINK("http://evil")')
    decide_items(reviewer, 1)

    _, [row], _ = read_page(pipeline_client, format="csv")
    _, [label], _ = read_page(pipeline_client)

    assert row["external_id"] == "'" + label["external_id"]
    assert label["external_id"].startswith("=HYPERLINK")


def test_filters_by_model_source_and_overridden(
    model_version, reviewer, pipeline_client, admin_client
):
    make_items(model_version=model_version, n=4)
    decide_items(reviewer, 4, override_every=2)  # items 0 and 2 overridden
    escalated_item = make_items(model_version=model_version, n=1, prefix="esc")[0]
    item = review_item_claim(user=reviewer)
    assert item.id == escalated_item
    review_item_escalate(user=reviewer, item_id=item.id, token=str(item.lease_token), reason="odd")
    manager = make_user("mgr", "escalation_manager")
    escalation = Escalation.objects.get(item_id=item.id)
    escalation_claim(user=manager, escalation_id=escalation.id)
    escalation_resolve(user=manager, escalation_id=escalation.id, label="deny", comment="fraud")

    def ids(**params):
        status, labels, _ = read_page(pipeline_client, **params)
        assert status == 200, labels
        return [label["external_id"] for label in labels]

    assert ids(overridden="true") == ["item-0", "item-2", "esc-0"]
    assert ids(overridden="false") == ["item-1", "item-3"]
    assert ids(source="escalation") == ["esc-0"]
    assert ids(model="credit-default:3") == ["item-0", "item-1", "item-2", "item-3", "esc-0"]
    assert ids(model=str(model_version.id), source="reviewer") == [f"item-{i}" for i in range(4)]
    other = admin_client.post("/api/v1/models/", model_spec(version="4"), format="json")
    assert other.status_code == 201, other.json()
    assert ids(model="credit-default:4") == []


def test_a_pipeline_account_of_one_queue_sees_only_that_queues_labels(model_version, reviewer):
    other_queue = Queue.objects.create(name="other")
    make_items(model_version=model_version, n=2)
    make_items(model_version=model_version, n=2, prefix="other", queue=other_queue)
    decide_items(reviewer, 4)
    scoped = make_client("pipe-default", "pipeline", queues=["default"])
    everywhere = make_client("pipe-all", "pipeline")

    assert [r["external_id"] for r in read_page(scoped)[1]] == ["item-0", "item-1"]
    assert len(read_page(everywhere)[1]) == 4


@pytest.mark.parametrize("role", ["producer", "reviewer", "escalation_manager", "admin"])
def test_only_pipeline_accounts_read_labels(role, model_version, reviewer):
    make_items(model_version=model_version, n=1)
    decide_items(reviewer, 1)
    client = make_client(f"someone-{role}", role)

    response = client.get("/api/v1/labels/")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_no_credentials_is_401(anon_client):
    assert anon_client.get("/api/v1/labels/").status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "abc"}, "after"),
        ({"after": "1.2.3"}, "after"),
        ({"after": "-1.0"}, "after"),
        ({"after": "99999999999999999999.0"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"format": "xml"}, "format"),
        ({"source": "model"}, "source"),
        ({"overridden": "maybe"}, "overridden"),
        ({"model": "nope:1"}, "model"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(params, field, pipeline_client, model_version):
    status, body, _ = read_page(pipeline_client, **params)

    assert status == 400
    assert field in body["error"]["details"]


def test_a_filter_traversing_relations_is_ignored_not_applied(
    model_version, reviewer, pipeline_client
):
    make_items(model_version=model_version, n=2)
    decide_items(reviewer, 2)

    status, labels, _ = read_page(pipeline_client, decided_by__password__startswith="pbkdf2")

    assert status == 200
    assert len(labels) == 2


def test_an_explanation_stored_by_the_pipeline_is_served_from_its_document(
    routed_items, model_version, reviewer, pipeline_client
):
    routed_items(2)  # intake, then the explanation task (in-process here)
    decide_items(reviewer, 2)
    explanations = list(Explanation.objects.select_related("prediction").order_by("id"))
    assert all(e.document for e in explanations)

    _, labels, _ = read_page(pipeline_client)

    for explanation, label in zip(explanations, labels, strict=True):
        assert label["prediction_id"] == explanation.prediction_id
        assert label["explanation"] == json.loads(
            explanation_document(
                method=explanation.method,
                output=explanation.output,
                base_value=explanation.base_value,
                model_output=explanation.model_output,
                additivity_error=explanation.additivity_error,
                contributions=explanation.contributions,
                names=[f["name"] for f in model_version.features],
                values=explanation.prediction.features,
            )
        )
