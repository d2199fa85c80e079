"""The dead-letter record: what every stage sends to `sensors.dlq` instead of dropping input.

Headers name the stage, the error and the source, so an operator can find the input again
(db/table/rowid for the producer, topic/partition/offset for the router and sink) without
decoding the value. The value is the input as it was: the raw message bytes when there were
some, or a JSON rendering of the source row (bytes as base64) when the input was a SQLite row.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

HEADER_STAGE = "dlq.stage"
HEADER_ERROR = "dlq.error"
HEADER_FAILED_AT = "dlq.failed_at"
MAX_ERROR_BYTES = 2048
MAX_ROW_JSON_BYTES = 900_000
"""Largest dead-letter value made from a row: with headers it stays under Kafka's default
1 MB message limit, so a row too large for a record is not too large for its dead letter."""
TRUNCATED_HEAD_CHARS = 256


def _clip(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_ERROR_BYTES:
        return data
    # Cut on a character boundary: a header value must stay valid UTF-8.
    head = data[: MAX_ERROR_BYTES - 3].decode("utf-8", "ignore").encode("utf-8")
    return head + b"..."


@dataclass(frozen=True)
class DeadLetter:
    stage: str
    error: str
    source: dict[str, str]  # e.g. {"db": ..., "table": ..., "rowid": ...}
    value: bytes
    key: bytes | None = None

    def headers(self, failed_at: str) -> list[tuple[str, bytes]]:
        headers = [
            (HEADER_STAGE, self.stage.encode()),
            (HEADER_ERROR, _clip(self.error)),
            (HEADER_FAILED_AT, failed_at.encode()),
        ]
        headers.extend((f"dlq.source.{k}", str(v).encode()) for k, v in self.source.items())
        return headers


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def row_as_json(columns: list[str], row: tuple, max_bytes: int = MAX_ROW_JSON_BYTES) -> bytes:
    """A source row as JSON bytes that survive any content: invalid UTF-8, NaN, infinities.

    A row whose JSON would exceed `max_bytes` (an oversized row) has its largest values
    replaced, largest first, by `{"truncated": true, "bytes": N, "head": ...}` (the value's
    size and its first characters) until it fits; the dead letter's source headers say where
    the whole row is.
    """
    values = {name: _jsonable(value) for name, value in zip(columns, row, strict=False)}
    data = _dumps(values)
    if len(data) <= max_bytes:
        return data
    full_size = size = len(data)
    originals = dict(zip(columns, row, strict=False))
    sizes = {name: len(_dumps(value)) for name, value in values.items()}
    for name in sorted(sizes, key=sizes.__getitem__, reverse=True):
        values[name] = _truncated(originals[name])
        size += len(_dumps(values[name])) - sizes[name]  # exact: compact JSON adds no spaces
        if size <= max_bytes:
            return _dumps(values)
    return _dumps({"truncated": True, "bytes": full_size})  # too many columns even truncated


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _truncated(value: Any) -> dict[str, Any]:
    """What stands in for a value too large for the dead letter: its size and its start."""
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            head = base64.b64encode(value[:TRUNCATED_HEAD_CHARS]).decode("ascii")
            return {"truncated": True, "bytes": len(value), "head_base64": head}
        return {"truncated": True, "bytes": len(value), "head": text[:TRUNCATED_HEAD_CHARS]}
    text = value if isinstance(value, str) else str(value)
    size = len(text.encode("utf-8", "surrogatepass"))
    return {"truncated": True, "bytes": size, "head": text[:TRUNCATED_HEAD_CHARS]}
