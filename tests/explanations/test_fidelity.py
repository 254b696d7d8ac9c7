"""Explanations of real models are exact: what the service stores matches the libraries'
own contribution routines, adds up to the model's output, and reaches reviewers with
sensitive features folded into one row.

Every model is trained here on small data, registered through the API, and fed
predictions through the API; the explanation runs in-process (eager Celery).
"""

import numpy as np
import pytest
import shap
import skops.io
import xgboost
from celery.exceptions import Retry
from django.forms.models import model_to_dict
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression

from apps.explanations import services as explanation_services
from apps.explanations.models import Explanation
from apps.explanations.selectors import SENSITIVE_ROW, explained_label
from apps.predictions.models import Prediction
from apps.registry.models import ModelArtifact
from apps.reviews import tasks
from apps.reviews.models import ExplanationStatus, ItemStatus, ReviewItem
from tests.factories import gradient_boosting, lightgbm_booster, make_client, xgboost_booster

from .helpers import (
    CLAIM,
    MODELS,
    binary_probabilities,
    feature_names,
    numeric_features,
    post_predictions,
    prediction_items,
    registration,
    stored_explanations,
)

N_FEATURES = 10


@pytest.fixture(autouse=True)
def fresh_explainers():
    """Explainers are cached per model version id and process: start and end empty."""
    explanation_services._explainers.clear()
    yield
    explanation_services._explainers.clear()


@pytest.fixture
def send(producer_client, django_capture_on_commit_callbacks):
    """Post predictions as the producer; see ``post_predictions``."""

    def post(items: list[dict], *, explain: bool = True) -> list[int]:
        return post_predictions(
            producer_client, django_capture_on_commit_callbacks, items, explain=explain
        )

    return post


@pytest.fixture
def reviewer(db):
    return make_client("fidelity-reviewer", "reviewer")


def breast_cancer(n_features: int = N_FEATURES):
    """The first ``n_features`` columns, the targets, and every 12th row to predict."""
    data = load_breast_cancer()
    X = data.data[:, :n_features]
    return X, data.target, [str(name) for name in data.target_names], X[::12]


def register(admin_client, body: dict) -> dict:
    r = admin_client.post(MODELS, body, format="json")
    assert r.status_code == 201, r.content
    return r.json()


def assert_ready(item_ids: list[int]) -> None:
    items = ReviewItem.objects.filter(id__in=item_ids)
    assert {(i.status, i.explanation_status) for i in items} == {
        (ItemStatus.READY, ExplanationStatus.READY)
    }
    assert items.count() == len(item_ids)


def test_lightgbm_binary_matches_its_native_contributions(admin_client, send):
    # given a LightGBM binary model (text format) registered through the API
    X, y, labels, rows = breast_cancer()
    booster = lightgbm_booster(X, y, n_trees=30)
    names = feature_names(N_FEATURES)
    register(
        admin_client,
        registration(
            name="lgb-binary",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "lightgbm"},
            artifact=booster.model_to_string().encode(),
        ),
    )
    # when the producer sends the model's predictions and they are explained
    ids = send(
        prediction_items(
            model="lgb-binary:1",
            rows=rows,
            probabilities=binary_probabilities(booster.predict(rows)),
            labels=labels,
            names=names,
        )
    )
    # then every item is ready, its explanation equal to LightGBM's own pred_contrib
    assert_ready(ids)
    native = booster.predict(rows, pred_contrib=True)
    raw = booster.predict(rows, raw_score=True)
    for i, explanation in enumerate(stored_explanations(ids)):
        assert (explanation.method, explanation.output) == ("tree_shap", "log_odds")
        np.testing.assert_allclose(explanation.contributions, native[i, :-1], rtol=0, atol=1e-6)
        assert explanation.base_value == pytest.approx(native[i, -1], abs=1e-6)
        assert explanation.model_output == pytest.approx(raw[i], abs=1e-6)
        # and it adds up to the model's raw output
        assert explanation.additivity_error < 1e-6
        total = explanation.base_value + sum(explanation.contributions)
        assert total == pytest.approx(explanation.model_output, abs=1e-6)
        # and it is named after the class whose log-odds it is (the second label),
        # whichever label the model predicted
        prediction = explanation.prediction
        about = explained_label(
            method=explanation.method,
            output=explanation.output,
            labels=labels,
            predicted=prediction.label,
        )
        probability = 1 / (1 + np.exp(-explanation.model_output))
        assert probability == pytest.approx(prediction.probabilities[about], abs=1e-6)
    assert {p.label for p in Prediction.objects.all()} == set(labels)  # both were predicted


@pytest.mark.parametrize("model_format", ["json", "ubj"])
def test_xgboost_binary_matches_its_native_contributions(admin_client, send, model_format):
    # given an XGBoost binary model saved as JSON or UBJ, registered through the API
    X, y, labels, rows = breast_cancer()
    booster = xgboost_booster(X, y, n_rounds=30)
    names = feature_names(N_FEATURES)
    register(
        admin_client,
        registration(
            name="xgb-binary",
            version=model_format,
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "xgboost"},
            artifact=bytes(booster.save_raw(model_format)),
        ),
    )
    # when its predictions are sent and explained
    matrix = xgboost.DMatrix(rows)
    ids = send(
        prediction_items(
            model=f"xgb-binary:{model_format}",
            rows=rows,
            probabilities=binary_probabilities(booster.predict(matrix)),
            labels=labels,
            names=names,
        )
    )
    # then they match XGBoost's pred_contribs (it computes in float32)
    assert_ready(ids)
    native = booster.predict(matrix, pred_contribs=True)
    margin = booster.predict(matrix, output_margin=True)
    for i, explanation in enumerate(stored_explanations(ids)):
        assert (explanation.method, explanation.output) == ("tree_shap", "log_odds")
        np.testing.assert_allclose(explanation.contributions, native[i, :-1], rtol=0, atol=1e-4)
        assert explanation.base_value == pytest.approx(native[i, -1], abs=1e-4)
        assert explanation.model_output == pytest.approx(margin[i], abs=1e-4)
        assert explanation.additivity_error < 1e-4
        total = explanation.base_value + sum(explanation.contributions)
        assert total == pytest.approx(explanation.model_output, abs=1e-4)


def test_sklearn_gradient_boosting_from_skops_adds_up(admin_client, send):
    # given a scikit-learn gradient boosting classifier saved with skops
    X, y, labels, rows = breast_cancer()
    model = gradient_boosting(X, y, n_trees=30)
    names = feature_names(N_FEATURES)
    register(
        admin_client,
        registration(
            name="sk-gb",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "sklearn"},
            artifact=skops.io.dumps(model),
        ),
    )
    # when its predictions are explained
    ids = send(
        prediction_items(
            model="sk-gb:1",
            rows=rows,
            probabilities=model.predict_proba(rows),
            labels=labels,
            names=names,
        )
    )
    # then each explanation adds up to the decision function (log-odds) and matches
    # shap's TreeExplainer on the original estimator
    assert_ready(ids)
    reference = shap.TreeExplainer(model)
    expected = np.asarray(reference.shap_values(rows))
    expected_base = float(np.asarray(reference.expected_value).reshape(-1)[0])
    margin = model.decision_function(rows)
    for i, explanation in enumerate(stored_explanations(ids)):
        assert (explanation.method, explanation.output) == ("tree_shap", "log_odds")
        assert explanation.additivity_error < 1e-6
        total = explanation.base_value + sum(explanation.contributions)
        assert total == pytest.approx(margin[i], abs=1e-6)
        assert explanation.model_output == pytest.approx(margin[i], abs=1e-9)
        np.testing.assert_allclose(explanation.contributions, expected[i], rtol=0, atol=1e-6)
        assert explanation.base_value == pytest.approx(expected_base, abs=1e-6)


def logistic_data(seed: int = 3):
    """Five features on different scales and offsets, and a noisy linear target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 5)) * [1.0, 2.0, 0.5, 3.0, 1.0] + [0.0, 1.0, -1.0, 2.0, 0.0]
    logits = X @ [1.0, -0.5, 2.0, 0.3, 0.0] - 0.7
    y = (logits + rng.logistic(size=300) > 0).astype(int)
    return X, y


def test_linear_explainer_is_coef_times_distance_from_the_background_mean(admin_client, send):
    # given a logistic regression registered as a linear explainer (no artifact)
    X, y = logistic_data()
    model = LogisticRegression().fit(X, y)
    coef, intercept, mean = model.coef_[0], float(model.intercept_[0]), X.mean(axis=0)
    names, labels = feature_names(5), ["no", "yes"]
    register(
        admin_client,
        registration(
            name="linear",
            labels=labels,
            features=numeric_features(names),
            explainer={
                "kind": "linear",
                "coef": coef.tolist(),
                "intercept": intercept,
                "background_mean": mean.tolist(),
            },
        ),
    )
    rows = X[:40]
    # when its predictions are explained
    ids = send(
        prediction_items(
            model="linear:1",
            rows=rows,
            probabilities=model.predict_proba(rows),
            labels=labels,
            names=names,
        )
    )
    # then each contribution is coef * (x - mean), around intercept + coef . mean
    assert_ready(ids)
    for row, explanation in zip(rows, stored_explanations(ids), strict=True):
        assert (explanation.method, explanation.output) == ("linear_shap", "log_odds")
        np.testing.assert_allclose(explanation.contributions, coef * (row - mean), atol=1e-9)
        assert explanation.base_value == pytest.approx(intercept + coef @ mean, abs=1e-9)
        assert explanation.model_output == pytest.approx(row @ coef + intercept, abs=1e-9)
        assert explanation.additivity_error < 1e-9


def test_sklearn_logistic_regression_from_skops_adds_up(admin_client, send):
    # given a scikit-learn LogisticRegression saved with skops
    X, y = logistic_data()
    model = LogisticRegression().fit(X, y)
    names, labels = feature_names(5), ["no", "yes"]
    register(
        admin_client,
        registration(
            name="sk-logistic",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "sklearn"},
            artifact=skops.io.dumps(model),
        ),
    )
    rows = X[:40]
    # when its predictions are explained
    ids = send(
        prediction_items(
            model="sk-logistic:1",
            rows=rows,
            probabilities=model.predict_proba(rows),
            labels=labels,
            names=names,
        )
    )
    # then each explanation adds up to the decision function
    assert_ready(ids)
    margin = model.decision_function(rows)
    for i, explanation in enumerate(stored_explanations(ids)):
        assert (explanation.method, explanation.output) == ("linear_shap", "log_odds")
        assert explanation.model_output == pytest.approx(margin[i], abs=1e-9)
        assert explanation.additivity_error < 1e-6
        total = explanation.base_value + sum(explanation.contributions)
        assert total == pytest.approx(margin[i], abs=1e-6)


def test_multiclass_explains_the_predicted_class(admin_client, send):
    # given a three-class LightGBM model on iris
    data = load_iris()
    X, y, labels = data.data, data.target, [str(n) for n in data.target_names]
    booster = lightgbm_booster(X, y, n_trees=10, num_leaves=4, min_child_samples=5)
    names = feature_names(4)
    register(
        admin_client,
        registration(
            name="lgb-iris",
            task="multiclass_classification",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "lightgbm"},
            artifact=booster.model_to_string().encode(),
        ),
    )
    rows = X[::5]
    probabilities = booster.predict(rows)
    predicted = probabilities.argmax(axis=1)
    assert set(predicted) == {0, 1, 2}
    # when its predictions are explained
    ids = send(
        prediction_items(
            model="lgb-iris:1",
            rows=rows,
            probabilities=probabilities,
            labels=labels,
            names=names,
        )
    )
    # then each explanation is pred_contrib's block of the predicted class
    assert_ready(ids)
    width = len(names) + 1
    native = booster.predict(rows, pred_contrib=True)
    raw = booster.predict(rows, raw_score=True)
    for i, explanation in enumerate(stored_explanations(ids)):
        k = predicted[i]
        block = native[i, k * width : (k + 1) * width]
        assert (explanation.method, explanation.output) == ("tree_shap", "log_odds")
        np.testing.assert_allclose(explanation.contributions, block[:-1], rtol=0, atol=1e-6)
        assert explanation.base_value == pytest.approx(block[-1], abs=1e-6)
        assert explanation.model_output == pytest.approx(raw[i, k], abs=1e-6)
        assert explanation.additivity_error < 1e-6
        total = explanation.base_value + sum(explanation.contributions)
        assert total == pytest.approx(explanation.model_output, abs=1e-6)


def test_reviewers_see_sensitive_features_folded_into_one_row(admin_client, send, reviewer):
    # given a LightGBM model with two sensitive features, and explained predictions
    X, y, labels, rows = breast_cancer(n_features=6)
    booster = lightgbm_booster(X, y, n_trees=30)
    names = ["f0", "f1", "applicant_age", "f3", "home_postcode", "f5"]
    sensitive = ("applicant_age", "home_postcode")
    register(
        admin_client,
        registration(
            name="lgb-sensitive",
            labels=labels,
            features=numeric_features(names, sensitive=sensitive),
            explainer={"kind": "lightgbm"},
            artifact=booster.model_to_string().encode(),
        ),
    )
    ids = send(
        prediction_items(
            model="lgb-sensitive:1",
            rows=rows[:3],
            probabilities=binary_probabilities(booster.predict(rows[:3])),
            labels=labels,
            names=names,
        )
    )
    # when a reviewer claims an item
    r = reviewer.post(CLAIM, format="json")
    # then no sensitive feature's name appears anywhere in the answer
    assert r.status_code == 200, r.content
    text = r.content.decode()
    for name in sensitive:
        assert name not in text
    body = r.json()
    row_index = int(body["prediction"]["external_id"].split("-")[1])
    stored = stored_explanations(ids)[row_index]
    assert body["explanation_status"] == "ready"
    assert set(body["prediction"]["features"]) == {"f0", "f1", "f3", "f5"}
    # and their attribution is one "sensitive features" row without a value
    explanation = body["explanation"]
    contributions = explanation["contributions"]
    by_feature = {row["feature"]: row for row in contributions}
    assert len(contributions) == len(by_feature) == 5
    assert set(by_feature) == {"f0", "f1", "f3", "f5", SENSITIVE_ROW}
    assert by_feature[SENSITIVE_ROW]["value"] is None
    assert by_feature[SENSITIVE_ROW]["contribution"] == pytest.approx(
        stored.contributions[2] + stored.contributions[4], abs=1e-12
    )
    for index, name in enumerate(names):
        if name not in sensitive:
            assert by_feature[name]["value"] == pytest.approx(rows[row_index][index])
            assert by_feature[name]["contribution"] == stored.contributions[index]
    # and the rows are by size, still adding up to the model's output
    sizes = [abs(row["contribution"]) for row in contributions]
    assert sizes == sorted(sizes, reverse=True)
    total = explanation["base_value"] + sum(row["contribution"] for row in contributions)
    assert total == pytest.approx(explanation["model_output"], abs=1e-6)
    raw = booster.predict(rows[row_index : row_index + 1], raw_score=True)[0]
    assert explanation["model_output"] == pytest.approx(raw, abs=1e-6)


def snapshot(item_ids: list[int]) -> tuple[list[dict], list[dict]]:
    """Every stored field of the items' explanations and of the items themselves."""
    explanations = Explanation.objects.filter(prediction__review_item__id__in=item_ids)
    items = ReviewItem.objects.filter(id__in=item_ids).order_by("id")
    return (
        [model_to_dict(e) | {"id": e.id, "created_at": e.created_at} for e in explanations],
        [model_to_dict(i) | {"updated_at": i.updated_at} for i in items],
    )


def test_explaining_twice_stores_one_explanation_and_changes_nothing(admin_client, send, reviewer):
    # given routed predictions whose explanation work has not run yet
    X, y, labels, rows = breast_cancer()
    booster = lightgbm_booster(X, y, n_trees=30)
    names = feature_names(N_FEATURES)
    register(
        admin_client,
        registration(
            name="lgb-twice",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "lightgbm"},
            artifact=booster.model_to_string().encode(),
        ),
    )
    ids = send(
        prediction_items(
            model="lgb-twice:1",
            rows=rows[:5],
            probabilities=binary_probabilities(booster.predict(rows[:5])),
            labels=labels,
            names=names,
        ),
        explain=False,
    )
    # then nothing is claimable while they wait for it
    assert set(ReviewItem.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        ItemStatus.PENDING
    }
    assert reviewer.post(CLAIM, format="json").status_code == 204
    # when the task runs
    tasks.explain_items.run(item_ids=ids)
    first = snapshot(ids)
    # then each prediction has one explanation, and the items are ready
    assert Explanation.objects.filter(prediction__review_item__id__in=ids).count() == 5
    assert_ready(ids)
    # when it runs again (a redelivery)
    tasks.explain_items.run(item_ids=ids)
    # then nothing changed
    assert snapshot(ids) == first
    assert Explanation.objects.count() == 5
    # and the items can be claimed, explained
    r = reviewer.post(CLAIM, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["explanation_status"] == "ready"
    assert r.json()["explanation"]["method"] == "tree_shap"


@pytest.fixture
def broken_model(admin_client):
    """A registered LightGBM model whose artifact row is gone, so it cannot load, and
    a prediction of it, one row of data."""
    X, y, labels, rows = breast_cancer()
    booster = lightgbm_booster(X, y, n_trees=30)
    names = feature_names(N_FEATURES)
    model = register(
        admin_client,
        registration(
            name="lgb-broken",
            labels=labels,
            features=numeric_features(names),
            explainer={"kind": "lightgbm"},
            artifact=booster.model_to_string().encode(),
        ),
    )
    ModelArtifact.objects.filter(model_version_id=model["id"]).delete()
    return prediction_items(
        model="lgb-broken:1",
        rows=rows[:1],
        probabilities=binary_probabilities(booster.predict(rows[:1])),
        labels=labels,
        names=names,
    )


@pytest.fixture
def attempts(monkeypatch) -> list[list[int]]:
    """The item ids of each run of the explanation service by the task."""
    calls: list[list[int]] = []
    compute = tasks.review_items_explain

    def counted(**kwargs):
        calls.append(list(kwargs["item_ids"]))
        return compute(**kwargs)

    monkeypatch.setattr(tasks, "review_items_explain", counted)
    return calls


def assert_claimable_without_explanation(item_id: int, reviewer) -> None:
    item = ReviewItem.objects.get(id=item_id)
    assert (item.status, item.explanation_status) == (ItemStatus.READY, ExplanationStatus.FAILED)
    assert "ArtifactError" in item.explanation_error
    assert not Explanation.objects.exists()
    r = reviewer.post(CLAIM, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["id"] == item_id
    assert r.json()["explanation"] is None
    assert r.json()["explanation_status"] == "failed"


@pytest.fixture
def as_a_worker():
    """Run tasks as a worker with a broker does: retries go back to the broker."""
    from reviewqueue.celery import app

    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = True


def test_a_failing_explanation_is_retried_then_recorded_as_failed(
    broken_model, send, reviewer, attempts, as_a_worker
):
    # given a routed prediction of a model that cannot be explained, its work not run
    [item_id] = send(broken_model, explain=False)
    task = tasks.explain_items
    # when a worker runs the task: each attempt but the last asks for a retry
    for retries in range(task.max_retries):
        with pytest.raises(Retry):
            task.apply(kwargs={"item_ids": [item_id]}, retries=retries)
        item = ReviewItem.objects.get(id=item_id)
        assert (item.status, item.explanation_status) == (
            ItemStatus.PENDING,
            ExplanationStatus.PENDING,
        )
        assert reviewer.post(CLAIM, format="json").status_code == 204
    # and the last attempt gives up
    task.apply(kwargs={"item_ids": [item_id]}, retries=task.max_retries)
    assert attempts == [[item_id]] * (1 + task.max_retries)
    # then the item is claimable, its failure recorded, no explanation stored, and a
    # reviewer claiming it sees no explanation, and why
    assert_claimable_without_explanation(item_id, reviewer)
    # and a redelivery of the last message changes nothing
    task.apply(kwargs={"item_ids": [item_id]}, retries=task.max_retries)
    assert ReviewItem.objects.get(id=item_id).explanation_status == ExplanationStatus.FAILED


def test_in_process_a_failing_explanation_ends_recorded_as_failed(
    broken_model, send, reviewer, attempts
):
    """The embedded default (no broker) keeps the contract too: eager retries run inline,
    and after the last one the item is claimable with explanation_status "failed"."""
    # given tasks that run in-process (no broker)
    # when a routed prediction of a model that cannot be explained arrives
    [item_id] = send(broken_model)
    # then the item is claimable without an explanation, its failure recorded
    assert_claimable_without_explanation(item_id, reviewer)
    # after the task tried once and retried up to its bound
    assert attempts == [[item_id]] * (1 + tasks.explain_items.max_retries)
