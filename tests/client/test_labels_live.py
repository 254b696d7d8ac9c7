"""The client against the live server: every label once by following cursors, a
cursor persisted so that a crash mid-page loses nothing, the same labels as pandas,
Arrow and CSV, filters, exports, and the server's refusals raised as they were said."""

import csv
import io
import json

import pytest
from reviewqueue_client import (
    AuthenticationError,
    BadRequestError,
    FileCursorStore,
    MemoryCursorStore,
    PermissionDeniedError,
    features_frame,
)

from apps.reviews.models import Decision
from tests.factories import make_client

pytestmark = pytest.mark.django_db(transaction=True)


class Crash(Exception):
    pass


def test_following_cursors_from_nothing_gives_every_label_once_in_order(feed):
    # given seven decided items
    feed.decide(7, override_every=3)
    store = MemoryCursorStore()
    with feed.client() as client:
        # when a pipeline with no cursor reads pages of three until caught up
        pages = list(client.label_pages(store=store, limit=3))
    # then it got every label exactly once, in decision order, in pages of 3, 3 and 1
    labels = [label for page in pages for label in page]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [label["prediction_id"] for label in labels] == feed.decided
    # and each carries the decision: overrides as overrides, with their reason code
    for label in labels:
        overridden = label["prediction_id"] in feed.overridden
        assert label["overridden"] is overridden
        assert label["label"] == ("deny" if overridden else "approve")
        assert label["reason_code"] == ("policy" if overridden else None)
        assert label["source"] == "reviewer"
        assert label["model"] == "credit-default:3"
    # and the cursor was saved after each page, ending at the last label
    assert store.saves == [page.next_cursor for page in pages]
    assert store.cursor == labels[-1]["cursor"]
    assert Decision.objects.count() == 7


def test_a_crash_mid_page_loses_nothing_and_repeats_only_that_page(feed, tmp_path):
    # given seven decided labels and a pipeline whose sink is a list
    feed.decide(7)
    path = tmp_path / "labels.cursor"
    sink: list[dict] = []

    def crashing(page):
        # the sink takes the first label of the second page, then the process dies
        sink.extend(page.labels[:1] if crashing.calls == 1 else page.labels)
        crashing.calls += 1
        if crashing.calls == 2:
            raise Crash

    crashing.calls = 0
    with feed.client() as client, pytest.raises(Crash):
        client.consume(crashing, store=FileCursorStore(path), limit=3)
    # then the stored cursor is the end of the first page: never ahead of the sink
    first_page = [label["cursor"] for label in sink[:3]]
    assert FileCursorStore(path).load() == first_page[-1]

    # when the pipeline restarts (a new process: a new store on the same file)
    with feed.client() as client:
        result = client.consume(lambda page: sink.extend(page.labels), store=FileCursorStore(path))
    # then it resumed at the crashed page: every label arrived, only that label twice
    delivered = [label["prediction_id"] for label in sink]
    assert sorted(set(delivered)) == sorted(feed.decided)
    assert len(delivered) == 7 + 1
    assert result.labels == 4
    # and a sink that keeps the last copy per cursor holds each label exactly once
    by_cursor = {label["cursor"]: label["prediction_id"] for label in sink}
    assert sorted(by_cursor.values()) == sorted(feed.decided)


def test_iterating_label_by_label_saves_the_cursor_only_after_a_whole_page(feed):
    # given five labels, read two per page, one label at a time
    feed.decide(5)
    store = MemoryCursorStore()
    with feed.client() as client:
        labels = client.iter_labels(store=store, limit=2)
        first, second, third = next(labels), next(labels), next(labels)
        # then taking the first label of page two committed page one, not more
        assert store.saves == [second["cursor"]]
        # and when the consumer stops there, page two is not committed
        labels.close()
    assert store.cursor == second["cursor"]
    assert third["prediction_id"] == feed.decided[2]
    assert first["prediction_id"] == feed.decided[0]


def test_a_caught_up_pipeline_gets_only_what_was_decided_since(feed):
    # given a pipeline that has read everything there is
    feed.decide(4)
    store = MemoryCursorStore()
    with feed.client() as client:
        seen = [label["prediction_id"] for label in client.iter_labels(store=store)]
        # when it looks again with nothing new: an empty page, the cursor unchanged
        caught_up = store.cursor
        assert list(client.iter_labels(store=store)) == []
        assert store.cursor == caught_up
        # when three more are decided
        new = feed.decide(3, override_every=1)
        again = [label for label in client.iter_labels(store=store)]
    # then it gets exactly the three new ones
    assert seen == feed.decided[:4]
    assert [label["prediction_id"] for label in again] == new
    assert all(label["overridden"] for label in again)


def test_pandas_arrow_and_csv_carry_the_same_labels(feed):
    # given six decided labels
    feed.decide(6, override_every=2)
    with feed.client() as client:
        jsonl = list(client.iter_labels())
        # when the same feed is read as Arrow (pages of four) and as pandas
        arrow = client.labels_arrow(limit=4)
        pandas = client.labels_pandas(limit=4)
        csv_page = client.labels_raw(format="csv", limit=100)
    # then Arrow has every label in order, over two pages, nested values as JSON text
    assert arrow.pages == 2
    assert arrow.table.column("cursor").to_pylist() == [label["cursor"] for label in jsonl]
    assert arrow.next_cursor == jsonl[-1]["cursor"]
    features = arrow.table.column("features").to_pylist()
    assert [json.loads(f) for f in features] == [label["features"] for label in jsonl]
    # and pandas has them decoded back into objects
    frame = pandas.frame
    assert list(frame["prediction_id"]) == feed.decided
    assert list(frame["features"]) == [label["features"] for label in jsonl]
    assert list(frame["reasons"]) == [label["reasons"] for label in jsonl]
    assert list(frame["overridden"]) == [label["overridden"] for label in jsonl]
    assert set(features_frame(frame).columns) == {"income", "region", "age", "homeowner"}
    wide = features_frame(frame, columns=["income", "region", "age", "homeowner"])
    assert list(wide.columns) == ["income", "region", "age", "homeowner"]
    assert list(wide["income"]) == [label["features"]["income"] for label in jsonl]
    # and CSV has a header and one row per label
    assert csv_page.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_page.content.decode())))
    assert [row["cursor"] for row in rows] == [label["cursor"] for label in jsonl]
    assert csv_page.next_cursor == jsonl[-1]["cursor"]


def test_an_empty_feed_is_an_empty_frame_and_the_start_cursor(feed):
    # given nothing decided
    with feed.client() as client:
        pandas = client.labels_pandas()
        page = client.labels_page()
    # then both are empty, and both say where to start
    assert len(pandas.frame) == 0
    assert pandas.pages == 0
    assert page.labels == []
    assert page.next_cursor == pandas.next_cursor


def test_filters_reach_the_server(feed):
    # given six labels, every other one an override
    feed.decide(6, override_every=2)
    with feed.client() as client:
        overridden = list(client.iter_labels(overridden=True))
        accepted = list(client.iter_labels(overridden=False, model="credit-default:3"))
        by_escalation = list(client.iter_labels(source="escalation"))
    assert {label["prediction_id"] for label in overridden} == feed.overridden
    assert len(accepted) == 3
    assert not {label["prediction_id"] for label in accepted} & feed.overridden
    assert by_escalation == []


def test_an_export_is_built_waited_for_and_downloaded(feed, tmp_path):
    # given five decided labels
    feed.decide(5)
    with feed.client() as client:
        # when an export is started, waited for and downloaded with the pipeline token
        started = client.export_create(format="jsonl", model="credit-default:3")
        done = client.export_wait(started["id"], poll_interval=0.2, timeout=60)
        path = client.export_download(done, tmp_path / "out" / "labels.jsonl")
    # then the file holds the five labels, and the export says where to go on from
    assert started["status"] in ("queued", "running", "done")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [label["prediction_id"] for label in lines] == feed.decided
    assert done["rows"] == 5
    assert done["next_cursor"] == lines[-1]["cursor"]
    assert [p.name for p in path.parent.iterdir()] == ["labels.jsonl"]


def test_refusals_are_raised_with_the_servers_error(feed):
    reviewer_token = make_client("just-a-reviewer", "reviewer").token
    # a reviewer's token: 403, the role named
    with feed.client(reviewer_token) as client, pytest.raises(PermissionDeniedError) as denied:
        client.labels_page()
    assert denied.value.status == 403
    assert denied.value.code == "permission_denied"
    assert "pipeline" in denied.value.message
    # an unknown token: 401
    with feed.client("not-a-token") as client, pytest.raises(AuthenticationError) as unknown:
        client.labels_page()
    assert unknown.value.status == 401
    # a cursor the feed never gave: 400, the field named
    with feed.client() as client, pytest.raises(BadRequestError) as bad:
        client.labels_page(after="not-a-cursor")
    assert bad.value.code == "invalid_cursor"
    assert "after" in bad.value.details
    # an unknown model and a limit past the maximum: 400, each named
    with feed.client() as client, pytest.raises(BadRequestError) as bad:
        client.labels_page(model="nope:1", limit=100_001)
    assert {"model", "limit"} <= set(bad.value.details)
