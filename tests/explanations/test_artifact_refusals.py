"""Registration refuses every model file it cannot use safely: a 400 naming "artifact",
nothing stored (no version, no artifact, not even its queue), and nothing in the file
ever run. Loading parses data only; a pickle is never unpickled."""

import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skops.io
from django.db import connection
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from apps.queues.models import Queue
from apps.registry.models import ModelArtifact, ModelVersion
from tests.factories import (
    lightgbm_artifact,
    sklearn_artifact,
    synthetic_classes,
    xgboost_artifact,
)

from .helpers import MODELS, feature_names, numeric_features, registration

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "refusals"
KINDS = ("lightgbm", "xgboost", "sklearn")
BINARY = ("no", "yes")
THREE = ("low", "mid", "high")


@pytest.fixture
def admin(admin_client):
    """The admin client; a server error comes back as a 500 answer to assert on."""
    admin_client.raise_request_exception = False
    return admin_client


def body(kind: str, artifact: bytes, *, n_features: int = 4, labels=BINARY) -> dict:
    return registration(
        name="refused",
        labels=labels,
        features=numeric_features(feature_names(n_features)),
        explainer={"kind": kind},
        artifact=artifact,
        routing={"min_confidence": 0.8, "queue": QUEUE},
    )


def assert_refused(response) -> None:
    assert response.status_code == 400, (response.status_code, response.content[:2000])
    error = response.json()["error"]
    assert "artifact" in error["details"], error
    assert not ModelVersion.objects.exists()
    assert not ModelArtifact.objects.exists()
    assert not Queue.objects.filter(name=QUEUE).exists()


ARTIFACTS = {
    "lightgbm": lightgbm_artifact,
    "xgboost": xgboost_artifact,
    "sklearn": sklearn_artifact,
}


# --- pickles ------------------------------------------------------------------------


class Harmless:
    def __init__(self) -> None:
        self.weights = [0.1, 0.2]


class TouchOnLoad:
    """Unpickling this creates the file at ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("kind", KINDS)
def test_a_pickle_is_refused_for_every_kind(admin, kind, protocol):
    # given a pickle of a harmless object, sent as a model file of this kind
    payload = pickle.dumps({"model": Harmless(), "classes": [0, 1]}, protocol=protocol)
    # when an admin registers it
    r = admin.post(MODELS, body(kind, payload), format="json")
    # then it is refused and nothing is stored
    assert_refused(r)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("kind", KINDS)
def test_a_pickle_is_never_unpickled(admin, tmp_path, kind, protocol):
    # given a pickle that creates a marker file when it is loaded (as a control shows)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnLoad(control), protocol=protocol))  # noqa: S301
    assert control.exists()
    marker = tmp_path / "marker"
    payload = pickle.dumps(TouchOnLoad(marker), protocol=protocol)
    # when it is registered as a model file
    r = admin.post(MODELS, body(kind, payload), format="json")
    # then it is refused, and it was never loaded
    assert_refused(r)
    assert not marker.exists()


# --- skops files ----------------------------------------------------------------------


def double(X):
    return 2 * X


def untrusted_pipeline() -> bytes:
    X, y = synthetic_classes(4, 2, n_rows=300)
    model = make_pipeline(FunctionTransformer(double), LogisticRegression())
    return skops.io.dumps(model.fit(X, y))


def hist_gradient_boosting() -> bytes:
    X, y = synthetic_classes(4, 2, n_rows=300)
    return skops.io.dumps(HistGradientBoostingClassifier(max_iter=3).fit(X, y))


@pytest.mark.parametrize(
    ("make", "untrusted"),
    [
        (untrusted_pipeline, f"{__name__}.double"),
        (
            hist_gradient_boosting,
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        ),
    ],
)
def test_a_skops_file_holding_an_untrusted_type_is_refused(admin, make, untrusted):
    # given a skops file holding a type outside the allowlist (a custom function, or a
    # scikit-learn type skops does not trust)
    artifact = make()
    assert untrusted in skops.io.get_untrusted_types(data=artifact)
    # when it is registered
    r = admin.post(MODELS, body("sklearn", artifact), format="json")
    # then it is refused, naming the type
    assert_refused(r)
    assert untrusted in r.json()["error"]["details"]["artifact"]


def gaussian_nb() -> bytes:
    X, y = synthetic_classes(4, 2, n_rows=300)
    return skops.io.dumps(GaussianNB().fit(X, y))


def scaled_logistic_pipeline() -> bytes:
    X, y = synthetic_classes(4, 2, n_rows=300)
    return skops.io.dumps(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y))


def not_an_estimator() -> bytes:
    return skops.io.dumps({"coef": [1.0, 2.0, 3.0, 4.0]})


@pytest.mark.parametrize("make", [gaussian_nb, scaled_logistic_pipeline, not_an_estimator])
def test_a_skops_file_of_an_unsupported_estimator_is_refused(admin, make):
    # given a skops file of types skops trusts, but not a supported classifier
    artifact = make()
    # when it is registered
    r = admin.post(MODELS, body("sklearn", artifact), format="json")
    # then it is refused
    assert_refused(r)


# --- broken files ---------------------------------------------------------------------


CHILD = """
import json, resource, sys, time
# The machine is shared: a file that makes the loader allocate without end stops here.
resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
import django
django.setup()
from tests.factories import make_client
client = make_client("child-admin", "admin")
client.raise_request_exception = False
body = json.loads(sys.stdin.read())
before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
r = client.post("/api/v1/models/", body, format="json")
seconds = time.monotonic() - started
grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
try:
    answer = r.json()
except ValueError:
    answer = r.content.decode(errors="replace")[:2000]
print(json.dumps({"status": r.status_code, "body": answer, "grown_mib": grown_kib / 1024,
                  "seconds": seconds}))
"""
MEMORY_LIMIT = 2 * 1024**3
# Loading a model file of a few kilobytes must not take more than this, nor this long.
MAX_GROWTH_MIB = 256


def register_in_a_child_process(registration_body: dict) -> dict:
    """Register through the API in a separate process against the test database.

    A native library that crashes, or allocates without end, on a file kills or
    bloats that process (capped at MEMORY_LIMIT), not the test run; what a server
    process would suffer is what this reports.
    """
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewqueue.settings.test",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD.replace("MEMORY_LIMIT", str(MEMORY_LIMIT))],
        input=json.dumps(registration_body),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
        check=False,
    )
    if result.returncode < 0:
        died = f"killed by {signal.Signals(-result.returncode).name}"
    else:
        died = f"exit status {result.returncode}"
    assert result.returncode == 0, (
        f"registering the model crashed the server process ({died}; its address space "
        f"was capped at {MEMORY_LIMIT / 1024**3:g} GiB); "
        f"its stderr ends with: {result.stderr[-1500:]}"
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_refused_in_child(answer: dict) -> None:
    assert answer["status"] == 400, answer
    assert "artifact" in answer["body"]["error"]["details"], answer
    assert not ModelVersion.objects.exists()
    assert not ModelArtifact.objects.exists()
    assert not Queue.objects.filter(name=QUEUE).exists()
    # and refusing it cost little
    assert answer["grown_mib"] < MAX_GROWTH_MIB, answer


def lightgbm_cut(where: str) -> bytes:
    text = lightgbm_artifact().decode()
    end_of_trees = text.index("end of trees")
    cut = {"mid-trees": end_of_trees // 2, "last-tree": end_of_trees - 20}[where]
    return text[:cut].encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["mid-trees", "last-tree"])
def test_a_truncated_lightgbm_model_is_refused(where):
    # given a LightGBM text model cut off inside its trees
    artifact = lightgbm_cut(where)
    # when it is registered (in a server process of its own)
    answer = register_in_a_child_process(body("lightgbm", artifact))
    # then the server answers 400 and stores nothing
    assert_refused_in_child(answer)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_truncated_xgboost_json_model_is_refused(admin, fraction):
    # given an XGBoost JSON model cut off
    whole = xgboost_artifact()
    artifact = whole[: int(len(whole) * fraction)]
    # when it is registered
    r = admin.post(MODELS, body("xgboost", artifact), format="json")
    # then it is refused and nothing is stored
    assert_refused(r)


def xgboost_ubj_cut(where: str) -> bytes:
    whole = xgboost_artifact(model_format="ubj")
    # "categories_segments" is an array; cutting right after its "[" leaves it open
    open_array = whole.index(b"categories_segments[") + len(b"categories_segments[")
    cut = {"open-array": open_array, "mid-trees": len(whole) // 2}[where]
    return whole[:cut]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["open-array", "mid-trees"])
def test_a_truncated_xgboost_ubj_model_is_refused(where):
    # given an XGBoost UBJ model cut off
    artifact = xgboost_ubj_cut(where)
    # when it is registered (in a server process of its own)
    answer = register_in_a_child_process(body("xgboost", artifact))
    # then the server answers 400 at little cost, and stores nothing
    assert_refused_in_child(answer)


@pytest.mark.parametrize("seed", [0, 2, 7])
@pytest.mark.parametrize("kind", KINDS)
def test_random_bytes_are_refused(admin, kind, seed):
    # given 2,000 random bytes (a fixed seed), and the same after a zip header
    noise = np.random.default_rng(seed).bytes(2000)
    for artifact in (noise, b"PK\x03\x04" + noise):
        # when they are registered as a model file of this kind
        r = admin.post(MODELS, body(kind, artifact), format="json")
        # then they are refused and nothing is stored
        assert_refused(r)


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_with_another_feature_count_is_refused(admin, kind):
    # given a model trained on 4 features
    artifact = ARTIFACTS[kind](4, 2)
    # when it is registered with 5 features, or 3
    for n_features in (5, 3):
        r = admin.post(MODELS, body(kind, artifact, n_features=n_features), format="json")
        # then it is refused, the counts named
        assert_refused(r)
        assert "features" in r.json()["error"]["details"]["artifact"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_with_another_class_count_is_refused(admin, kind):
    # when a 3-class model is registered as binary
    r = admin.post(MODELS, body(kind, ARTIFACTS[kind](4, 3), labels=BINARY), format="json")
    # then it is refused
    assert_refused(r)
    assert "classes" in r.json()["error"]["details"]["artifact"]
    # and so is a binary model registered with 3 labels
    r = admin.post(MODELS, body(kind, ARTIFACTS[kind](4, 2), labels=THREE), format="json")
    assert_refused(r)
    assert "classes" in r.json()["error"]["details"]["artifact"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_models_register_when_they_match_the_spec(admin, kind):
    # given the models refused above for their counts
    # when each is registered with the spec it was trained for
    binary = admin.post(MODELS, body(kind, ARTIFACTS[kind](4, 2)), format="json")
    three = admin.post(
        MODELS,
        {**body(kind, ARTIFACTS[kind](4, 3), labels=THREE), "version": "2"},
        format="json",
    )
    # then both are stored (the refusals were about the file, not the kind)
    assert binary.status_code == 201, binary.content
    assert three.status_code == 201, three.content
    assert ModelArtifact.objects.count() == 2
