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


def _clip(text: str) -> bytes:
    data = text.encode("utf-8", "replace")
    return data if len(data) <= MAX_ERROR_BYTES else data[: MAX_ERROR_BYTES - 3] + b"..."


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


def row_as_json(columns: list[str], row: tuple) -> bytes:
    """A source row as JSON bytes that survive any content: invalid UTF-8, NaN, infinities."""
    return json.dumps(
        {name: _jsonable(value) for name, value in zip(columns, row, strict=False)},
        separators=(",", ":"),
    ).encode()
