"""The labels feed and exports of a reviewqueue server, for training pipelines.

Every request goes through ``_send``: 429, 5xx, dropped connections and truncated
bodies are retried under the ``RetryPolicy`` (GET is idempotent; a retried export
``POST`` can at worst start a second, identical export); any other 4xx raises an
``ApiError`` carrying the server's error body. A page is read whole and checked for
completeness before any label is handed over, so a retry never hands a label twice.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin

import requests

from . import __version__
from .cursor import CursorStore
from .errors import (
    IncompleteResponse,
    ProtocolError,
    RetriesExhausted,
    ReviewQueueError,
    TransientError,
    api_error,
)
from .retry import RetryPolicy, parse_retry_after, retryable_status

if TYPE_CHECKING:
    import pandas
    import pyarrow

T = TypeVar("T")

LABELS_PATH = "/api/v1/labels/"
EXPORTS_PATH = "/api/v1/exports/"
NEXT_CURSOR = "X-Next-Cursor"
FORMATS = ("jsonl", "csv", "parquet")
# Label fields that hold objects or lists; csv and parquet carry them as JSON text.
NESTED_FIELDS = ("features", "context", "model_probabilities", "reasons", "explanation")
EXPORT_DONE = "done"
EXPORT_FAILED = "failed"
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class LabelPage:
    """One page of labels: what was asked (``after``) and where to go next."""

    labels: list[dict[str, Any]]
    after: str | None
    next_cursor: str

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.labels)


@dataclass(frozen=True)
class RawPage:
    """One page as the server sent it (``jsonl``, ``csv`` or ``parquet`` bytes)."""

    content: bytes
    format: str
    content_type: str
    after: str | None
    next_cursor: str


@dataclass(frozen=True)
class ArrowLabels:
    table: pyarrow.Table
    next_cursor: str
    pages: int


@dataclass(frozen=True)
class PandasLabels:
    frame: pandas.DataFrame
    next_cursor: str
    pages: int


@dataclass
class ConsumeResult:
    pages: int = 0
    labels: int = 0
    cursor: str | None = None
    page_sizes: list[int] = field(default_factory=list)


class ReviewQueueClient:
    """A pipeline's connection to one server, authenticated with a ``pipeline`` token.

    ``base_url`` is the server's root (``https://reviews.example.com``). ``sleep`` and
    ``rng`` are the clock and the dice of the retry loop, replaceable in tests.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | tuple[float, float] = (10.0, 300.0),
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers.setdefault("User-Agent", f"reviewqueue-client/{__version__}")
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ReviewQueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The labels feed -------------------------------------------------------------

    def labels_page(
        self,
        *,
        after: str | None = None,
        limit: int = 1000,
        model: str | int | None = None,
        source: str | None = None,
        overridden: bool | None = None,
    ) -> LabelPage:
        """One page of labels after ``after`` (from the first label when None)."""
        raw = self.labels_raw(
            format="jsonl",
            after=after,
            limit=limit,
            model=model,
            source=source,
            overridden=overridden,
        )
        labels = [json.loads(line) for line in raw.content.splitlines() if line.strip()]
        if labels and raw.next_cursor == after:
            raise ProtocolError(f"a page of {len(labels)} labels did not move the cursor")
        return LabelPage(labels=labels, after=after, next_cursor=raw.next_cursor)

    def labels_raw(
        self,
        *,
        format: str = "jsonl",
        after: str | None = None,
        limit: int = 1000,
        model: str | int | None = None,
        source: str | None = None,
        overridden: bool | None = None,
    ) -> RawPage:
        """One page in ``format`` as bytes, checked to be complete."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        params = _label_params(
            after=after,
            limit=limit,
            model=model,
            source=source,
            overridden=overridden,
            format=format,
        )

        def read(response: requests.Response) -> RawPage:
            cursor = response.headers.get(NEXT_CURSOR)
            if cursor is None:
                raise ProtocolError(f"the answer has no {NEXT_CURSOR} header")
            content = response.content
            _check_complete(content, format)
            return RawPage(
                content=content,
                format=format,
                content_type=response.headers.get("Content-Type", ""),
                after=after,
                next_cursor=cursor,
            )

        return self._send("GET", LABELS_PATH, params=params, read=read)

    def label_pages(
        self,
        *,
        after: str | None = None,
        store: CursorStore | None = None,
        limit: int = 1000,
        model: str | int | None = None,
        source: str | None = None,
        overridden: bool | None = None,
        max_pages: int | None = None,
    ) -> Iterator[LabelPage]:
        """Pages from ``after`` (or the store's cursor) until an empty one: caught up.

        With a ``store``, a page's ``next_cursor`` is saved when the consumer comes back
        for the next page, that is once it has finished with the whole page; a consumer
        that stops early (``break``, an exception) leaves the cursor before that page.
        """
        cursor = after if after is not None else (store.load() if store else None)
        pages = 0
        while max_pages is None or pages < max_pages:
            page = self.labels_page(
                after=cursor, limit=limit, model=model, source=source, overridden=overridden
            )
            if not page.labels:
                return
            pages += 1
            yield page
            if store is not None:
                store.save(page.next_cursor)
            cursor = page.next_cursor

    def iter_labels(self, **options: Any) -> Iterator[dict[str, Any]]:
        """Every label from the cursor on, one at a time (options as ``label_pages``)."""
        for page in self.label_pages(**options):
            yield from page.labels

    def consume(
        self,
        handler: Callable[[LabelPage], object],
        *,
        store: CursorStore,
        limit: int = 1000,
        model: str | int | None = None,
        source: str | None = None,
        overridden: bool | None = None,
        max_pages: int | None = None,
    ) -> ConsumeResult:
        """Hand each new page to ``handler`` and save its cursor once ``handler`` returns.

        If ``handler`` raises, the cursor stays before that page and the error
        propagates: the next run starts with that page again.
        """
        result = ConsumeResult(cursor=store.load())
        pages = self.label_pages(
            store=None,
            after=result.cursor,
            limit=limit,
            model=model,
            source=source,
            overridden=overridden,
            max_pages=max_pages,
        )
        for page in pages:
            handler(page)
            store.save(page.next_cursor)
            result.pages += 1
            result.labels += len(page)
            result.page_sizes.append(len(page))
            result.cursor = page.next_cursor
        return result

    # Columnar reads ----------------------------------------------------------------

    def labels_arrow(
        self,
        *,
        after: str | None = None,
        limit: int = 10000,
        model: str | int | None = None,
        source: str | None = None,
        overridden: bool | None = None,
        max_pages: int | None = None,
    ) -> ArrowLabels:
        """Every label after ``after`` as one Arrow table (pages of parquet, concatenated).

        Nested fields are JSON strings, as the server sends them. Persist
        ``next_cursor`` only once the table has been used.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables: list[pyarrow.Table] = []
        cursor = after
        while max_pages is None or len(tables) < max_pages:
            raw = self.labels_raw(
                format="parquet",
                after=cursor,
                limit=limit,
                model=model,
                source=source,
                overridden=overridden,
            )
            table = pq.read_table(io.BytesIO(raw.content)) if raw.content else pa.table({})
            if table.num_rows == 0:
                if not tables:
                    tables.append(table)
                    cursor = raw.next_cursor
                break
            if raw.next_cursor == cursor:
                raise ProtocolError(f"a page of {table.num_rows} labels did not move the cursor")
            tables.append(table)
            cursor = raw.next_cursor
        pages = sum(1 for t in tables if t.num_rows)
        if len(tables) == 1:
            return ArrowLabels(table=tables[0], next_cursor=cursor or "", pages=pages)
        combined = pa.concat_tables(tables, promote_options="default")
        return ArrowLabels(table=combined, next_cursor=cursor or "", pages=pages)

    def labels_pandas(self, *, decode_json: bool = True, **options: Any) -> PandasLabels:
        """Every label after ``after`` as a DataFrame (options as ``labels_arrow``).

        With ``decode_json`` the nested fields (``features``, ``context``,
        ``model_probabilities``, ``reasons``, ``explanation``) hold Python objects again.
        """
        arrow = self.labels_arrow(**options)
        frame = arrow.table.to_pandas()
        if decode_json:
            frame = decode_nested(frame)
        return PandasLabels(frame=frame, next_cursor=arrow.next_cursor, pages=arrow.pages)

    # Exports -----------------------------------------------------------------------

    def export_create(
        self,
        *,
        format: str = "parquet",
        model: str | int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """Start an export file built by a worker; the answer has its ``id`` and ``status``."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        body: dict[str, Any] = {"format": format}
        if model is not None:
            body["model"] = str(model)
        if after is not None:
            body["after"] = after
        return self._send("POST", EXPORTS_PATH, json_body=body, read=_json)

    def export_get(self, export_id: str | int) -> dict[str, Any]:
        return self._send("GET", f"{EXPORTS_PATH}{export_id}/", read=_json)

    def export_wait(
        self,
        export_id: str | int,
        *,
        poll_interval: float = 1.0,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """Poll until the export is ``done``; raise if it ``failed`` or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            export = self.export_get(export_id)
            if export.get("status") == EXPORT_DONE:
                return export
            if export.get("status") == EXPORT_FAILED:
                raise ReviewQueueError(f"export {export_id} failed: {export}")
            if time.monotonic() >= deadline:
                raise ReviewQueueError(f"export {export_id} not done after {timeout:g}s: {export}")
            self._sleep(poll_interval)

    def export_download(self, export: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
        """Download a finished export to ``path`` (written whole, then renamed into place)."""
        url = export.get("download_url")
        if not url:
            raise ReviewQueueError(f"export {export.get('id')} has no download_url yet")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)

        def read(response: requests.Response) -> Path:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        handle.write(chunk)
                expected = response.headers.get("Content-Length")
                if expected is not None and Path(tmp).stat().st_size != int(expected):
                    raise IncompleteResponse("the download ended early")
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return target

        return self._send("GET", url, read=read)

    # Transport -----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/")) if "://" not in path else path

    def _send(
        self,
        method: str,
        path: str,
        *,
        read: Callable[[requests.Response], T],
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> T:
        """One request under the retry policy; ``read`` turns a 2xx answer into the result.

        ``read`` may raise ``TransientError`` (a truncated body) to have the request
        tried again.
        """
        url = self._url(path)
        policy = self.retry
        last: BaseException | None = None
        for attempt in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self.session.request(
                    method, url, params=params, json=json_body, timeout=self.timeout, stream=True
                )
                try:
                    if retryable_status(response.status_code):
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        raise TransientError(
                            f"HTTP {response.status_code}: {_snippet(response)}",
                            status=response.status_code,
                            retry_after=retry_after,
                        )
                    if response.status_code >= 400:
                        raise api_error(
                            status=response.status_code,
                            body=response.content,
                            method=method,
                            url=url,
                        )
                    return read(response)
                finally:
                    response.close()
            except (
                TransientError,
                requests.ConnectionError,
                requests.Timeout,
                # A body cut short mid-stream.
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                last = exc
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise RetriesExhausted(
                    f"{method} {url}: the server asked to wait {retry_after:g}s, more than "
                    f"max_retry_after={policy.max_retry_after:g}s",
                    attempts=attempt,
                    last=last,
                ) from last
            if attempt < policy.max_attempts:
                self._sleep(policy.delay(attempt, retry_after=retry_after, rng=self._rng))
        raise RetriesExhausted(
            f"{method} {url}: gave up after {policy.max_attempts} attempts: {last}",
            attempts=policy.max_attempts,
            last=last,
        ) from last


def _label_params(
    *,
    after: str | None,
    limit: int,
    model: str | int | None,
    source: str | None,
    overridden: bool | None,
    format: str,
) -> dict[str, str]:
    params = {"limit": str(limit), "format": format}
    if after is not None:
        params["after"] = after
    if model is not None:
        params["model"] = str(model)
    if source is not None:
        params["source"] = source
    if overridden is not None:
        params["overridden"] = "true" if overridden else "false"
    return params


def _check_complete(content: bytes, format: str) -> None:
    """Raise IncompleteResponse when a body cut mid-stream would otherwise parse."""
    if not content:
        return
    if format in ("jsonl", "csv") and not content.endswith(b"\n"):
        raise IncompleteResponse(f"the {format} page does not end with a full line")
    if format == "parquet" and not (
        content.startswith(PARQUET_MAGIC) and content.endswith(PARQUET_MAGIC)
    ):
        raise IncompleteResponse("the parquet page has no footer")


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise IncompleteResponse(f"the answer is not complete JSON: {exc}") from exc


def _snippet(response: requests.Response) -> str:
    try:
        return response.content[:300].decode("utf-8", errors="replace")
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return ""


def decode_nested(frame: pandas.DataFrame) -> pandas.DataFrame:
    """The nested label fields, JSON text in csv and parquet, as Python objects again."""
    frame = frame.copy()
    for column in NESTED_FIELDS:
        if column in frame.columns:
            frame[column] = [
                json.loads(value) if isinstance(value, str) else value for value in frame[column]
            ]
    return frame


def features_frame(
    frame: pandas.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    column: str = "features",
) -> pandas.DataFrame:
    """One column per feature, from a frame whose ``column`` holds feature dicts.

    Pass the model's feature names as ``columns`` to get them in the model's order
    (the server stores features as JSON objects, whose key order is not kept).
    """
    import pandas as pd

    values = [json.loads(v) if isinstance(v, str) else v for v in frame[column]]
    return pd.DataFrame.from_records(values, index=frame.index, columns=columns)
