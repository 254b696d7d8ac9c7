"""Labels as JSONL, CSV and Parquet, encoded as they stream.

Every format carries the same fields in the same order (FIELDS). JSONL nests the JSON
values; CSV and Parquet carry them as JSON text cells (a model's features differ from
another's, so there is no one flat schema). Text cells that a spreadsheet would run as a
formula are prefixed with an apostrophe in CSV. Memory stays flat: rows go out in
chunks of CHUNK_ROWS, Parquet as one row group per chunk.
"""

import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from apps.explanations.documents import explanation_document

from .selectors import ModelInfo, reviewer_pseudonym

CHUNK_ROWS = 2000

CONTENT_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}

_quote: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


class LabelValues:
    """Turns label_rows() rows into FIELDS values: scalars as Python values, nested
    values as JSON text (spliced from the database's own JSON, never re-encoded)."""

    def __init__(self, models: dict[int, ModelInfo]) -> None:
        self.models = models
        self.pseudonyms: dict[int, str] = {}

    def __call__(self, row: tuple) -> tuple:
        (
            txid,
            decision_id,
            prediction_id,
            external_id,
            model_version_id,
            features,
            context,
            model_label,
            probabilities,
            label,
            source,
            overridden,
            reason_code,
            reasons,
            reviewer_id,
            decided_at,
            selection_probability,
            method,
            output,
            base_value,
            model_output,
            additivity_error,
            contributions,
            document,
        ) = row
        model = self.models[model_version_id]
        reviewer = self.pseudonyms.get(reviewer_id)
        if reviewer is None:
            reviewer = self.pseudonyms[reviewer_id] = reviewer_pseudonym(reviewer_id)
        explanation = document or None
        if method is not None and not document:  # stored before documents existed
            explanation = explanation_document(
                method=method,
                output=output,
                base_value=base_value,
                model_output=model_output,
                additivity_error=additivity_error,
                contributions=json.loads(contributions),
                names=model.feature_names,
                values=json.loads(features),
            )
        return (
            f"{txid}.{decision_id}",
            prediction_id,
            external_id,
            model.ref,
            features,
            context,
            model_label,
            probabilities,
            label,
            source,
            bool(overridden),
            reason_code or None,
            reasons,
            reviewer,
            decided_at,
            selection_probability,
            explanation,
        )


def _json_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _jsonl_line(row: tuple) -> str:
    (
        cursor, prediction_id, external_id, model, features, context, model_label,
        probabilities, label, source, overridden, reason_code, reasons, reviewer,
        decided_at, selection_probability, explanation,
    ) = row  # fmt: skip
    return (
        f'{{"cursor":"{cursor}","prediction_id":{prediction_id},'
        f'"external_id":{_quote(external_id)},"model":{_quote(model)},'
        f'"features":{features},"context":{context},"model_label":{_quote(model_label)},'
        f'"model_probabilities":{probabilities},"label":{_quote(label)},'
        f'"source":{_quote(source)},"overridden":{"true" if overridden else "false"},'
        f'"reason_code":{_json_scalar(reason_code)},"reasons":{reasons},'
        f'"reviewer":"{reviewer}","decided_at":"{decided_at}",'
        f'"selection_probability":{_json_scalar(selection_probability)},'
        f'"explanation":{explanation or "null"}}}\n'
    )


def jsonl_chunks(values: Iterable[tuple]) -> Iterator[bytes]:
    """One JSON object per line, fields in FIELDS order."""
    lines: list[str] = []
    for row in values:
        lines.append(_jsonl_line(row))
        if len(lines) >= CHUNK_ROWS:
            yield "".join(lines).encode()
            lines.clear()
    if lines:
        yield "".join(lines).encode()


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell as a spreadsheet may safely open it: text that would start a formula is
    prefixed with an apostrophe (OWASP's advice); numbers pass as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_chunks(values: Iterable[tuple]) -> Iterator[bytes]:
    """A header row, then one row per label; text cells quoted, empty for null."""
    sink = _Drain()
    writer = pa_csv.CSVWriter(sink, CSV_SCHEMA)
    rows: list[tuple] = []
    for row in values:
        rows.append(tuple(map(csv_cell, row)))
        if len(rows) >= CHUNK_ROWS:
            writer.write_batch(_batch(rows, CSV_SCHEMA))
            rows.clear()
            yield sink.take()
    if rows:
        writer.write_batch(_batch(rows, CSV_SCHEMA))
    writer.close()
    yield sink.take()


PARQUET_SCHEMA = pa.schema(
    [
        ("cursor", pa.string()),
        ("prediction_id", pa.int64()),
        ("external_id", pa.string()),
        ("model", pa.string()),
        ("features", pa.string()),
        ("context", pa.string()),
        ("model_label", pa.string()),
        ("model_probabilities", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("overridden", pa.bool_()),
        ("reason_code", pa.string()),
        ("reasons", pa.string()),
        ("reviewer", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),  # from RFC 3339 text
        ("selection_probability", pa.float64()),
        ("explanation", pa.string()),
    ]
)
FIELDS = tuple(PARQUET_SCHEMA.names)
CSV_SCHEMA = PARQUET_SCHEMA.set(
    PARQUET_SCHEMA.get_field_index("decided_at"), pa.field("decided_at", pa.string())
)
_TIMESTAMP = pa.timestamp("us", tz="UTC")


class _Drain(io.RawIOBase):
    """A write-only file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def parquet_chunks(values: Iterable[tuple]) -> Iterator[bytes]:
    sink = _Drain()
    with pq.ParquetWriter(sink, PARQUET_SCHEMA, compression="zstd") as writer:
        rows: list[tuple] = []
        for row in values:
            rows.append(row)
            if len(rows) >= CHUNK_ROWS:
                writer.write_batch(_batch(rows, PARQUET_SCHEMA))
                rows.clear()
                yield sink.take()
        if rows:
            writer.write_batch(_batch(rows, PARQUET_SCHEMA))
    yield sink.take()


def _batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for column, field in zip(zip(*rows, strict=True), schema, strict=True):
        if field.type == _TIMESTAMP:  # RFC 3339 text, parsed by Arrow
            arrays.append(pa.array(column, type=pa.string()).cast(_TIMESTAMP))
        else:
            arrays.append(pa.array(column, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


ENCODERS = {"jsonl": jsonl_chunks, "csv": csv_chunks, "parquet": parquet_chunks}
