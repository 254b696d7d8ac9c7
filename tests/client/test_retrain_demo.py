"""The retrain demo end to end against a live server, on a small set: the pipeline
runs in its own process (no Django), reviews the routed predictions through the API,
pulls the labels through the client, retrains and registers the next version."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.accounts.services import account_token, account_upsert
from apps.predictions.models import Prediction
from apps.registry.models import ModelVersion
from apps.reviews.models import Decision, DecisionSource

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "retrain_demo.py"
TRAFFIC_ROWS = 80
ROLES = ("admin", "producer", "reviewer", "escalation_manager", "pipeline")


def load_pipeline():
    from apps.operations.management.commands.retrain_demo import pipeline_module

    return pipeline_module()


def run_script(url: str, tokens: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    env.update({f"RQ_{role.upper()}_TOKEN": token for role, token in tokens.items()})
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--traffic-rows", str(TRAFFIC_ROWS), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def accuracies(output: str) -> tuple[float, float]:
    before = re.search(r"before\s+\S+\s+([0-9.]+)", output)
    after = re.search(r"after\s+\S+\s+([0-9.]+)", output)
    assert before and after, output
    return float(before[1]), float(after[1])


def test_the_pipeline_imports_nothing_of_the_server():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['m'] = m\n"
        "spec.loader.exec_module(m)\n"
        "import reviewqueue_client\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & "
        "{'django', 'rest_framework', 'apps', 'reviewqueue'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_held_out_rows_are_disjoint_from_training_and_traffic():
    data = load_pipeline().dataset_split()
    held, initial, traffic = (
        set(part.tolist()) for part in (data.held_out, data.initial, data.traffic)
    )
    assert not held & initial and not held & traffic and not initial & traffic
    assert len(held | initial | traffic) == len(data.rows)
    # and a smaller run holds out the very same rows
    assert set(load_pipeline().dataset_split(traffic_rows=10).held_out.tolist()) == held


def test_retrain_demo_closes_the_loop_on_a_live_server(live_server):
    # given the five roles' accounts
    tokens = {
        role: account_token(user=account_upsert(username=f"loop-{role}", roles=[role]))
        for role in ROLES
    }
    # when the pipeline runs against the live server, in its own process
    done = run_script(live_server.url, tokens)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    output = done.stdout

    # then version 1 was trained on the initial rows and received the traffic rows
    v1 = ModelVersion.objects.get(name="breast-cancer-retrain", version="1")
    predictions = Prediction.objects.filter(model_version=v1)
    assert predictions.count() == TRAFFIC_ROWS
    # and no held-out row was ever sent, so none can have become a label
    held_out = {f"bcr-{row:04d}" for row in load_pipeline().dataset_split().held_out}
    assert not held_out & set(predictions.values_list("external_id", flat=True))
    # and every routed prediction was decided: accepted by the reviewer when the model was
    # right, resolved by the escalation manager with the true label when it was wrong
    routed = predictions.filter(routed=True)
    decisions = Decision.objects.filter(item__prediction__model_version=v1)
    assert 0 < routed.count() == decisions.count()
    escalated = decisions.filter(source=DecisionSource.ESCALATION)
    assert all(
        d.label != d.item.prediction.label for d in escalated.select_related("item__prediction")
    )
    assert not decisions.filter(source=DecisionSource.REVIEWER, overridden=True).exists()
    assert f"sent {TRAFFIC_ROWS} predictions, {routed.count()} routed to review" in output
    assert (
        f"pulled {decisions.count()} labels of breast-cancer-retrain:1 through the client" in output
    )
    # and version 2 was registered with the retrained model, the same spec otherwise
    v2 = ModelVersion.objects.get(name="breast-cancer-retrain", version="2")
    assert v2.artifact_sha256 != v1.artifact_sha256
    assert (v2.features, v2.labels, v2.routing) == (v1.features, v1.labels, v1.routing)
    assert "registered breast-cancer-retrain:2" in output
    # and both accuracies were measured on the held-out rows
    before, after = accuracies(output)
    assert 0.8 < before <= 1.0 and 0.8 < after <= 1.0
    assert f"held-out accuracy ({len(held_out)} rows" in output

    # when it runs again: nothing new to review, the same labels, the next version
    again = run_script(live_server.url, tokens)
    assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
    assert "already registered, reused" in again.stdout
    assert "registered breast-cancer-retrain:3" in again.stdout
    assert Prediction.objects.filter(model_version=v1).count() == TRAFFIC_ROWS
    assert accuracies(again.stdout) == (before, after)


def test_the_management_command_runs_the_demo_against_a_given_server(live_server):
    # given nothing but the database: the command makes the demo accounts itself
    out = io.StringIO()
    # when it runs against the live server on a handful of rows
    call_command("retrain_demo", url=live_server.url, traffic_rows=40, stdout=out)
    # then it reported the loop, and version 2 exists
    assert "registered breast-cancer-retrain:2" in out.getvalue()
    assert "held-out accuracy" in out.getvalue()
    assert ModelVersion.objects.filter(name="breast-cancer-retrain").count() == 2
