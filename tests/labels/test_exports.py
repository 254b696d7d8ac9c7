"""Export jobs: built by a worker into a file with progress and a row count, fetched
through a signed, expiring link that only the pipeline account that asked can use."""

import io
import json
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import time_machine
from django.utils import timezone

from apps.labels.models import ExportJob, ExportStatus
from apps.labels.services import export_build, exports_sweep
from reviewqueue.celery import app as celery_app
from tests.factories import decide_items, explain, make_client, make_items
from tests.helpers import read_page
from tests.workers import wait_until, worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def export_root(settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    return settings.EXPORT_ROOT


@pytest.fixture
def decided(model_version, reviewer):
    item_ids = make_items(model_version=model_version, n=9)
    explain(item_ids[:5])
    decide_items(reviewer, 9, override_every=4)


def download(client, job: dict) -> bytes:
    response = client.get(job["download_url"])
    assert response.status_code == 200, response.content[:300]
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_export_holds_what_the_feed_serves(fmt, decided, pipeline_client):
    response = pipeline_client.post("/api/v1/exports/", {"format": fmt}, format="json")

    assert response.status_code == 202, response.json()
    job = pipeline_client.get(f"/api/v1/exports/{response.json()['id']}/").json()
    assert (job["status"], job["progress"], job["rows"], job["total"]) == ("done", 1.0, 9, 9)
    feed = pipeline_client.get("/api/v1/labels/", {"format": fmt})
    assert job["next_cursor"] == feed["X-Next-Cursor"]
    body = download(pipeline_client, job)
    expected = b"".join(feed.streaming_content)
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(body)).equals(pq.read_table(io.BytesIO(expected)))
    else:
        assert body == expected


def test_an_export_takes_the_filters_and_starts_after_a_cursor(decided, pipeline_client):
    _, labels, _ = read_page(pipeline_client)
    after = labels[2]["cursor"]

    response = pipeline_client.post(
        "/api/v1/exports/",
        {"format": "jsonl", "after": after, "overridden": False, "model": "credit-default:3"},
        format="json",
    )

    job = response.json()
    assert (job["status"], job["model"], job["after"]) == ("done", "credit-default:3", after)
    rows = [json.loads(line) for line in download(pipeline_client, job).splitlines()]
    assert rows == [label for label in labels[3:] if not label["overridden"]]


def test_only_the_account_that_asked_may_see_or_download_it(decided, pipeline_client):
    job = pipeline_client.post("/api/v1/exports/", {"format": "csv"}, format="json").json()
    other_pipeline = make_client("pipeline-2", "pipeline")
    reviewer = make_client("rev-client", "reviewer")

    assert other_pipeline.get(f"/api/v1/exports/{job['id']}/").status_code == 404
    assert other_pipeline.get(job["download_url"]).status_code == 404
    assert reviewer.get(job["download_url"]).status_code == 403
    assert make_client("anon-ish", "producer").post("/api/v1/exports/", {}).status_code == 403
    listed = other_pipeline.get("/api/v1/exports/").json()
    assert listed == {"results": [], "next": None}
    assert [j["id"] for j in pipeline_client.get("/api/v1/exports/").json()["results"]] == [
        job["id"]
    ]


def test_the_link_expires_and_cannot_be_forged(decided, pipeline_client, settings):
    job = pipeline_client.post("/api/v1/exports/", {"format": "jsonl"}, format="json").json()
    url = job["download_url"]

    assert pipeline_client.get(url[:-3] + "abc").status_code == 404
    other = pipeline_client.post("/api/v1/exports/", {"format": "csv"}, format="json").json()
    token = url.split("token=")[1]
    swapped = other["download_url"].split("?")[0] + "?token=" + token
    assert pipeline_client.get(swapped).status_code == 404
    later = timezone.now() + timedelta(seconds=settings.EXPORT_LINK_SECONDS + 1)
    with time_machine.travel(later):
        response = pipeline_client.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "link_expired"
    # A fresh link from the job works again.
    fresh = pipeline_client.get(f"/api/v1/exports/{job['id']}/").json()["download_url"]
    assert download(pipeline_client, {"download_url": fresh})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "format"),
        ({"format": "xlsx"}, "format"),
        ({"format": "csv", "after": "x"}, "after"),
        ({"format": "csv", "model": "nope:9"}, "model"),
        ({"format": "csv", "source": "model"}, "source"),
    ],
)
def test_bad_export_requests_are_400_and_create_nothing(body, field, pipeline_client):
    response = pipeline_client.post("/api/v1/exports/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not ExportJob.objects.exists()


def test_building_is_idempotent_and_a_dead_builder_is_taken_over(decided, pipeline_client):
    celery_app.conf.task_always_eager = False  # record the job without building it
    try:
        response = pipeline_client.post("/api/v1/exports/", {"format": "jsonl"}, format="json")
    finally:
        celery_app.conf.task_always_eager = True
    job_id = response.json()["id"]
    ExportJob.objects.filter(id=job_id).update(status=ExportStatus.RUNNING, attempts=1)

    export_build(job_id=job_id)  # a builder is alive (recent progress): left alone
    assert ExportJob.objects.get(id=job_id).status == ExportStatus.RUNNING

    ExportJob.objects.filter(id=job_id).update(updated_at=timezone.now() - timedelta(hours=1))
    export_build(job_id=job_id)  # silent for an hour: taken over and built
    job = ExportJob.objects.get(id=job_id)
    assert (job.status, job.rows, job.attempts) == (ExportStatus.DONE, 9, 2)

    export_build(job_id=job_id)  # done: nothing more
    assert ExportJob.objects.get(id=job_id).attempts == 2


def test_a_worker_process_builds_the_export(decided, pipeline_client, private_redis, export_root):
    with worker(private_redis.url, EXPORT_ROOT=str(export_root)):
        job = pipeline_client.post("/api/v1/exports/", {"format": "parquet"}, format="json")
        assert job.json()["status"] == "queued"
        job_url = f"/api/v1/exports/{job.json()['id']}/"
        assert wait_until(lambda: pipeline_client.get(job_url).json()["status"] == "done", 60)

    job = pipeline_client.get(job_url).json()
    assert job["rows"] == 9
    assert pq.read_table(io.BytesIO(download(pipeline_client, job))).num_rows == 9


def test_the_sweeper_resends_a_job_whose_message_was_lost(
    decided, pipeline_client, private_redis, caplog
):
    private_redis.stop()  # the broker is down: the job is recorded, its message is not
    with caplog.at_level("WARNING", logger="apps.core.enqueue"):
        job = pipeline_client.post("/api/v1/exports/", {"format": "csv"}, format="json")
    assert job.status_code == 202
    # one warning line says so, and nothing fails
    [warning] = [r for r in caplog.records if r.name == "apps.core.enqueue"]
    assert warning.getMessage().startswith("export jobs: 1 messages not sent")
    job_id = job.json()["id"]
    assert exports_sweep() == []  # too recent to be called lost

    celery_app.conf.task_always_eager = True
    later = timezone.now() + timedelta(hours=1)
    with time_machine.travel(later):
        assert [str(i) for i in exports_sweep()] == [job_id]

    assert ExportJob.objects.get(id=job_id).status == ExportStatus.DONE
