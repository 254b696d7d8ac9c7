"""Model files that would run code when loaded, sent over HTTP as an attacker would:
as multipart uploads and as base64 in JSON, named like a model of every kind.

A pickle (any protocol), a joblib file and a skops file holding a type outside the
allowlist each carry an object that creates a sentinel file when it is loaded; a
control proves it does. Registration answers 400 naming ``artifact``, the sentinel is
never created and nothing is stored. (tests/explanations/test_artifact_refusals.py
covers the loader's rules and JSON pickles; this replays the HTTP paths.)
"""

import base64
import io
import json
import pathlib
import pickle

import joblib
import pytest
import skops.io

from tests.helpers import database_state

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models/"
KINDS = ("lightgbm", "xgboost", "sklearn")


class TouchOnUnpickle:
    """Unpickling this creates the file at ``path``."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


class TouchOnSetState:
    """Loading this with skops (when its type is trusted) creates the file at ``path``:
    skops restores an object's state through ``__setstate__``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        pathlib.Path(state["path"]).touch()
        self.__dict__.update(state)


def spec(kind: str) -> dict:
    return {
        "name": f"evil-{kind}",
        "version": "1",
        "task": "binary_classification",
        "labels": ["no", "yes"],
        "features": [{"name": f"f{i}", "type": "numeric"} for i in range(4)],
        "explainer": {"kind": kind},
        "routing": {"min_confidence": 0.8, "queue": "evil-queue"},
    }


def pickled(sentinel: pathlib.Path, protocol: int) -> bytes:
    return pickle.dumps(TouchOnUnpickle(sentinel), protocol=protocol)


def joblibbed(sentinel: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"model": TouchOnUnpickle(sentinel)}, buffer)
    return buffer.getvalue()


def skopsed(sentinel: pathlib.Path) -> bytes:
    return skops.io.dumps({"model": TouchOnSetState(str(sentinel))})


MAKERS = {
    "pickle-0": lambda s: pickled(s, 0),
    "pickle-2": lambda s: pickled(s, 2),
    "pickle-5": lambda s: pickled(s, 5),
    "joblib": joblibbed,
    "joblib-compressed": lambda s: _compressed_joblib(s),
    "skops-untrusted": skopsed,
}


def _compressed_joblib(sentinel: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(TouchOnUnpickle(sentinel), buffer, compress=("zlib", 3))
    return buffer.getvalue()


def test_the_controls_do_run_code_when_loaded(tmp_path):
    # each file, loaded the unsafe way, creates its sentinel: the refusals below matter
    for name, make in MAKERS.items():
        sentinel = tmp_path / name
        data = make(sentinel)
        if name.startswith("pickle"):
            pickle.loads(data)  # noqa: S301
        elif name.startswith("joblib"):
            joblib.load(io.BytesIO(data))
        else:
            untrusted = skops.io.get_untrusted_types(data=data)
            assert any("TouchOnSetState" in t for t in untrusted), untrusted
            skops.io.loads(data, trusted=untrusted)
        assert sentinel.exists(), name


def assert_refused(response, before: dict, sentinel: pathlib.Path) -> None:
    assert response.status_code == 400, (response.status_code, response.content[:500])
    error = response.json()["error"]
    assert "artifact" in error["details"], error
    assert not sentinel.exists()
    assert database_state() == before


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_code_carrying_file_is_refused_as_multipart(world, tmp_path, kind, maker):
    admin = world.members["admin"]
    sentinel = tmp_path / "sentinel"
    artifact = MAKERS[maker](sentinel)
    upload = io.BytesIO(artifact)
    # the name is the uploader's to choose; the server never goes by it
    upload.name = {"lightgbm": "model.txt", "xgboost": "model.json"}.get(kind, "model.skops")
    before = database_state()
    r = admin.post(MODELS, {"spec": json.dumps(spec(kind)), "artifact": upload}, format="multipart")
    assert_refused(r, before, sentinel)


@pytest.mark.parametrize(
    "kind, maker",
    [("sklearn", "joblib"), ("lightgbm", "joblib-compressed"), ("sklearn", "skops-untrusted")],
)
def test_a_code_carrying_file_is_refused_as_base64_json(world, tmp_path, kind, maker):
    admin = world.members["admin"]
    sentinel = tmp_path / "sentinel"
    body = {**spec(kind), "artifact": base64.b64encode(MAKERS[maker](sentinel)).decode()}
    before = database_state()
    assert_refused(admin.post(MODELS, body, format="json"), before, sentinel)


def test_a_pickle_as_the_spec_part_is_not_loaded(world, tmp_path):
    # the spec part is parsed as JSON only; a pickle there is a 400 on `spec`
    admin = world.members["admin"]
    sentinel = tmp_path / "sentinel"
    upload = io.BytesIO(pickled(sentinel, 2))
    upload.name = "spec.json"
    before = database_state()
    r = admin.post(MODELS, {"spec": upload}, format="multipart")
    assert r.status_code == 400 and "spec" in r.json()["error"]["details"], r.content
    assert not sentinel.exists()
    assert database_state() == before


@pytest.mark.parametrize(
    "spec_part",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"name": "a", "name": "b"}',
        '{"name": NaN}',
        "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
    ],
)
def test_a_hostile_spec_part_is_400(world, spec_part):
    admin = world.members["admin"]
    before = database_state()
    r = admin.post(MODELS, {"spec": spec_part}, format="multipart")
    assert r.status_code == 400, r.content[:300]
    assert database_state() == before


def test_a_multipart_body_over_the_limit_is_413(world, settings):
    admin = world.members["admin"]
    upload = io.BytesIO(b"0" * (settings.MAX_BODY_BYTES + 1))
    upload.name = "model.txt"
    before = database_state()
    r = admin.post(
        MODELS, {"spec": json.dumps(spec("lightgbm")), "artifact": upload}, format="multipart"
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert database_state() == before
