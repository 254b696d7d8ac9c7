"""Reads of the label feed: every final human decision, once, in a stable order.

The order is (deciding transaction id, decision id). A page only reaches up to the
*horizon*: the oldest transaction still running when the page was asked for
(``pg_snapshot_xmin``). Every decision written by a transaction below the horizon has
committed (or never will), so nothing can later appear behind a cursor the feed has
handed out; a decision whose transaction is still open is simply not served yet.
Why a sequence or a timestamp is not enough: docs/labels.md.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.utils.crypto import salted_hmac

from apps.core.db import on_postgresql, sql_in
from apps.explanations.models import Explanation
from apps.predictions.models import Prediction
from apps.registry.models import ModelVersion
from apps.reviews.models import Decision, ReviewItem

from .cursor import Cursor

# A page is read in chunks of CHUNK_ROWS by key (each walks the feed index in order,
# no sort of wide rows), each chunk streamed FETCH_ROWS at a time.
CHUNK_ROWS = 20_000
FETCH_ROWS = 1000
_NO_HORIZON = 2**63 - 1


@dataclass(frozen=True)
class LabelFilter:
    """Which labels a caller asked for and may see."""

    model_version_id: int | None = None
    source: str | None = None
    overridden: bool | None = None
    queue_ids: frozenset[int] | None = None  # None: every queue


@dataclass(frozen=True)
class LabelPage:
    after: Cursor
    last: Cursor | None  # the page's last label; None when the page is empty
    filters: LabelFilter

    @property
    def next_cursor(self) -> Cursor:
        return self.last or self.after


# The oldest transaction of *this* database still running. Transaction ids are
# cluster-wide, so a long transaction in another database on the same server would
# otherwise hold the feed back. A transaction whose database cannot be told (it ended
# between the snapshot and the read of pg_stat_activity, or that view hides it from
# this role) counts: that only delays a page. (Asking pg_xact_status instead would not
# be safe: a transaction is marked committed a moment before new snapshots see it.)
_HORIZON_SQL = """
    WITH s AS (SELECT pg_current_snapshot() AS snap)
    SELECT LEAST(
        pg_snapshot_xmax(snap)::text::bigint,
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap) AS x
         WHERE NOT EXISTS (
            SELECT 1 FROM pg_stat_activity a
            WHERE a.backend_xid::text = (x::text::bigint %% 4294967296)::text
              AND a.datname IS DISTINCT FROM current_database())))
    FROM s
"""


def label_horizon() -> int:
    """Transaction ids below this have all finished: their decisions are final."""
    if not on_postgresql():
        return _NO_HORIZON  # SQLite: one writer at a time, commit order is id order
    with connection.cursor() as cursor:
        cursor.execute(_HORIZON_SQL, [])
        return cursor.fetchone()[0]


def _where(after: Cursor, filters: LabelFilter, horizon: int | None) -> tuple[str, list[Any]]:
    clauses = ["(d.txid, d.id) > (%s, %s)"]
    params: list[Any] = [after.txid, after.id]
    if horizon is not None:
        clauses.append("d.txid < %s")
        params.append(horizon)
    if filters.model_version_id is not None:
        clauses.append("p.model_version_id = %s")
        params.append(filters.model_version_id)
    if filters.source is not None:
        clauses.append("d.source = %s")
        params.append(filters.source)
    if filters.overridden is not None:
        clauses.append("d.overridden = %s")
        params.append(filters.overridden)
    if filters.queue_ids is not None:
        condition, queue_ids = sql_in("i.queue_id", filters.queue_ids)
        clauses.append(condition)
        params.extend(queue_ids)
    return " AND ".join(clauses), params


def _tables() -> dict[str, str]:
    return {
        "decision": Decision._meta.db_table,
        "item": ReviewItem._meta.db_table,
        "prediction": Prediction._meta.db_table,
        "explanation": Explanation._meta.db_table,
    }


def label_page(
    *, after: Cursor, limit: int, filters: LabelFilter, horizon: int | None = None
) -> LabelPage:
    """Fix a page: the labels after ``after``, at most ``limit``, below the horizon
    (now, unless given).

    Found before a byte is streamed, so the answer can name its next cursor in a header;
    the rows it bounds can no longer change (their transactions have finished).
    """
    where, params = _where(after, filters, label_horizon() if horizon is None else horizon)
    t = _tables()
    sql = f"""
        SELECT txid, id FROM (
            SELECT d.txid, d.id FROM {t["decision"]} d
            JOIN {t["item"]} i ON i.id = d.item_id
            JOIN {t["prediction"]} p ON p.id = i.prediction_id
            WHERE {where} ORDER BY d.txid, d.id LIMIT %s
        ) page ORDER BY txid DESC, id DESC LIMIT 1
    """  # noqa: S608 (table names from the models, values bound)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        row = cursor.fetchone()
    return LabelPage(after=after, last=Cursor(*row) if row else None, filters=filters)


def label_count(*, after: Cursor, filters: LabelFilter, horizon: int) -> int:
    """How many labels follow ``after`` below ``horizon``."""
    where, params = _where(after, filters, horizon)
    t = _tables()
    sql = f"""
        SELECT count(*) FROM {t["decision"]} d
        JOIN {t["item"]} i ON i.id = d.item_id
        JOIN {t["prediction"]} p ON p.id = i.prediction_id
        WHERE {where}
    """  # noqa: S608 (table names from the models, values bound)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


# Columns of one label row, in the order label_rows yields them.
COLUMNS = (
    "txid",
    "decision_id",
    "prediction_id",
    "external_id",
    "model_version_id",
    "features",
    "context",
    "model_label",
    "model_probabilities",
    "label",
    "source",
    "overridden",
    "reason_code",
    "reasons",
    "reviewer_id",
    "decided_at",
    "selection_probability",
    "method",
    "output",
    "base_value",
    "model_output",
    "additivity_error",
    "contributions",  # only when there is no document
    "document",
)


def label_rows(*, page: LabelPage) -> Iterator[tuple]:
    """The page's rows (see COLUMNS), JSON columns as JSON text and ``decided_at`` as
    RFC 3339 text, streamed: memory stays flat whatever the page's size."""
    if page.last is None:
        return
    t = _tables()
    postgres = on_postgresql()
    as_text = "::text" if postgres else ""
    decided_at = (
        """to_char(d.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
        if postgres
        else "replace(d.decided_at, ' ', 'T') || 'Z'"
    )
    after = page.after
    while True:
        # Every row up to the page's last one is below the horizon the page was fixed at.
        where, params = _where(after, page.filters, None)
        sql = f"""
            SELECT d.txid, d.id, p.id, p.external_id, p.model_version_id,
                   p.features{as_text}, p.context{as_text}, p.label,
                   p.probabilities{as_text}, d.label, d.source, d.overridden, d.reason_code,
                   p.reasons{as_text}, d.decided_by_id, {decided_at},
                   p.selection_probability, e.method, e.output, e.base_value,
                   e.model_output, e.additivity_error,
                   CASE WHEN e.document = '' THEN e.contributions{as_text} END, e.document
            FROM {t["decision"]} d
            JOIN {t["item"]} i ON i.id = d.item_id
            JOIN {t["prediction"]} p ON p.id = i.prediction_id
            LEFT JOIN {t["explanation"]} e ON e.prediction_id = p.id
            WHERE {where} AND (d.txid, d.id) <= (%s, %s)
            ORDER BY d.txid, d.id LIMIT %s
        """  # noqa: S608 (table names from the models, values bound)
        params += [page.last.txid, page.last.id, CHUNK_ROWS]
        count, row = 0, None
        with connection.cursor() as cursor:
            if postgres:  # rows arrive while PostgreSQL is still producing the next ones
                rows = cursor.cursor.stream(sql, params, size=FETCH_ROWS)
            else:
                cursor.execute(sql, params)
                rows = iter(lambda: cursor.fetchmany(FETCH_ROWS), [])
                rows = (row for batch in rows for row in batch)
            for row in rows:
                count += 1
                yield row
        if count < CHUNK_ROWS or row is None:
            return
        after = Cursor(row[0], row[1])


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    feature_names: tuple[str, ...]


def label_models() -> dict[int, ModelInfo]:
    """Every model version's ``name:version`` and feature order, by id (one query; read
    before streaming, since the streaming connection cannot run a second query)."""
    return {
        mv_id: ModelInfo(f"{name}:{version}", tuple(f["name"] for f in features))
        for mv_id, name, version, features in ModelVersion.objects.values_list(
            "id", "name", "version", "features"
        )
    }


def reviewer_pseudonym(user_id: int) -> str:
    """A stable pseudonym for a reviewer: the same account always gets the same one,
    and it cannot be turned back into the account without the server's secret."""
    return "rv_" + salted_hmac("reviewqueue.labels.reviewer", str(user_id)).hexdigest()[:16]
