"""The label feed: labels/s streamed as JSONL and as Parquet over 1,000,000 labels, and
the server's peak memory while it streams.

One million decided items, each with a 30-feature prediction and a stored explanation,
are made directly in SQL (the setup is not what is measured). A pipeline account then
reads the whole feed through HTTP, pages of ``limit=100000`` following
``X-Next-Cursor``, once per format; the client reads the bytes as they come and counts
rows (JSONL lines; Parquet rows from the file's footer). The peak RSS is the largest
resident size any gunicorn process reached, sampled every 50 ms during the reads.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq

from apps.explanations.documents import explanation_document

from .harness import BenchFailure, Context, Http, Row, account_create, linear_model_spec

LABELS = 1_000_000
PAGE = 100_000
N_FEATURES = 30
MODEL = linear_model_spec("bench-labels", n_features=N_FEATURES, queue="bench-labels")


def make_decided_items(database_url: str, model_id: int, queue_id: int, user_id: int) -> None:
    """LABELS predictions with a decided item, an explanation and a decision each."""
    values = {f"f{i}": round(0.5 + i / 7, 3) for i in range(N_FEATURES)}
    contributions = [round((i - 15) / 100, 3) for i in range(N_FEATURES)]
    document = explanation_document(
        method="linear_shap",
        output="log_odds",
        base_value=-0.2,
        model_output=-0.2 + sum(contributions),
        additivity_error=0.0,
        contributions=contributions,
        names=list(values),
        values=values,
    )
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO predictions_prediction
                (model_version_id, external_id, content_hash, features, context, label,
                 probabilities, routed, reasons, selection_probability, created_at)
            SELECT %s, 'label-' || g, md5(g::text), %s::jsonb, '{"channel": "web"}'::jsonb,
                   'approve', '{"approve": 0.6, "deny": 0.4}'::jsonb, true,
                   '["low_confidence"]'::jsonb, 1.0, now()
            FROM generate_series(1, %s) AS g
            """,
            [model_id, json.dumps(values), LABELS],
        )
        conn.execute(
            """
            INSERT INTO reviews_reviewitem
                (prediction_id, queue_id, status, reasons, priority, due_at,
                 explanation_status, explanation_error, lease_expiries, created_at,
                 updated_at)
            SELECT p.id, %s, 'decided', p.reasons, 0, now() + interval '4 hours',
                   'ready', '', 0, now(), now()
            FROM predictions_prediction p WHERE p.model_version_id = %s
            """,
            [queue_id, model_id],
        )
        conn.execute(
            """
            INSERT INTO explanations_explanation
                (prediction_id, method, output, base_value, model_output, contributions,
                 additivity_error, seconds, created_at, document)
            SELECT p.id, 'linear_shap', 'log_odds', -0.2, %s, %s::jsonb, 0, 0.0001,
                   now(), %s
            FROM predictions_prediction p WHERE p.model_version_id = %s
            """,
            [-0.2 + sum(contributions), json.dumps(contributions), document, model_id],
        )
        conn.execute(
            """
            INSERT INTO reviews_decision
                (item_id, label, source, decided_by_id, overridden, reason_code, comment,
                 decided_at, txid)
            SELECT i.id, CASE WHEN i.id %% 5 = 0 THEN 'deny' ELSE 'approve' END, 'reviewer',
                   %s, i.id %% 5 = 0, CASE WHEN i.id %% 5 = 0 THEN 'policy' ELSE '' END, '',
                   now(), pg_current_xact_id()::text::bigint
            FROM reviews_reviewitem i WHERE i.queue_id = %s
            """,
            [user_id, queue_id],
        )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


class RssSampler:
    """The largest resident size of the server's processes, sampled in a thread."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peak_kib = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        pids = [self.root_pid]
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if f"\nPPid:\t{self.root_pid}\n" in text:
                pids.append(int(status.parent.name))
        return pids

    def _run(self) -> None:
        pids = self._pids()
        while not self.stopping.wait(0.05):
            for pid in pids:
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:
                    continue

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()


def _read_feed(ctx: Context, token: str, fmt: str, model: int) -> tuple[int, int, float]:
    """Read the whole feed of one model (the benchmarks before this one decide items of
    their own); (rows, bytes, seconds)."""
    http = Http(ctx.server.base_url, token, timeout=600)
    http.headers["Accept"] = "*/*"
    rows = size = 0
    cursor = ""
    began = time.perf_counter()
    try:
        while True:
            http.conn.request(
                "GET",
                f"/api/v1/labels/?format={fmt}&model={model}&limit={PAGE}&after={cursor}",
                headers=http.headers,
            )
            response = http.conn.getresponse()
            if response.status != 200:
                raise BenchFailure(f"labels answered {response.status}: {response.read()[:300]}")
            cursor = response.headers["X-Next-Cursor"]
            page_rows, buffer = 0, []
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if fmt == "jsonl":
                    page_rows += chunk.count(b"\n")
                else:
                    buffer.append(chunk)
            if fmt == "parquet":
                page_rows = pq.read_metadata(io.BytesIO(b"".join(buffer))).num_rows
            if page_rows == 0:
                break
            rows += page_rows
    finally:
        http.close()
    return rows, size, time.perf_counter() - began


def bench_label_feed(ctx: Context) -> list[Row]:
    admin = Http(ctx.server.base_url, ctx.admin_token)
    status, model = admin.json("POST", "/api/v1/models/", MODEL)
    admin.close()
    if status != 201:
        raise BenchFailure(f"model registration answered {status}: {model}")
    account_create(ctx.env, "bench-labeler", "reviewer")
    token = account_create(ctx.env, "bench-pipeline", "pipeline")
    with psycopg.connect(ctx.database_url) as conn:
        (queue_id,) = conn.execute(
            "SELECT id FROM queues_queue WHERE name = 'bench-labels'"
        ).fetchone()
        (user_id,) = conn.execute(
            "SELECT id FROM auth_user WHERE username = 'bench-labeler'"
        ).fetchone()
    began = time.monotonic()
    make_decided_items(ctx.database_url, model["id"], queue_id, user_id)
    setup = time.monotonic() - began

    rows = []
    for fmt in ("jsonl", "parquet"):
        with RssSampler(ctx.server.process.pid) as sampler:
            count, size, seconds = _read_feed(ctx, token, fmt, model["id"])
        if count != LABELS:
            raise BenchFailure(f"{fmt}: the feed gave {count} labels, not {LABELS}")
        rows.append(
            Row(
                f"labels streamed as {fmt.upper() if fmt == 'jsonl' else 'Parquet'}",
                round(count / seconds),
                "labels/s",
                ">= 50,000 labels/s",
                f"{count:,} labels, {size / 1e6:.0f} MB in {seconds:.1f} s, pages of {PAGE:,}; "
                f"setup {setup:.0f} s",
            )
        )
        rows.append(
            Row(
                f"server peak RSS, {fmt}",
                round(sampler.peak_kib / 1024),
                "MB",
                "<= 200 MB",
                "largest gunicorn process",
            )
        )
    return rows
