"""A body reader for flat Avro schemas (`avro_plan`): the decoding half of `avro_writer`.

fastavro's `schemaless_reader` dispatches on the schema for every value and goes through a
file-like object; for a reading (about thirty flat fields) that is most of the decode cost.
`FlatRecordReader` walks the schema's plan over the bytes directly. It returns what fastavro
returns (ints, floats, str, bytes, aware UTC datetimes, lists; a dict in field order) and the
offset where the record ended. Whatever the plan does not cover, and any body it cannot read
(a bad branch index, truncated bytes, invalid UTF-8, a timestamp out of range ...), is read
again by fastavro, so a body is accepted, and refused with the error, exactly as before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from struct import Struct
from typing import Any

from fastavro import schemaless_reader

from schemas.avro_plan import (
    BYTES,
    DOUBLE,
    INT,
    LONG,
    STRING,
    STRING_ARRAY,
    TS_MICROS,
    TS_MILLIS,
    FieldPlan,
    Unsupported,
    compile_plan,
)

_DOUBLE = Struct("<d").unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_READ_KINDS = frozenset((INT, LONG, DOUBLE, STRING, BYTES, TS_MICROS, TS_MILLIS, STRING_ARRAY))
"""Kinds the reader walks itself (booleans, rare in readings, are left to fastavro)."""


class FlatRecordReader:
    """Reads bodies of one writer schema; `parsed` is fastavro's parsed schema."""

    def __init__(self, schema: dict[str, Any], parsed: dict[str, Any]) -> None:
        self._parsed = parsed
        self._plan: tuple[FieldPlan, ...] | None
        try:
            self._plan = compile_plan(schema)
            if any(f.kind not in _READ_KINDS for f in self._plan):
                self._plan = None
        except Unsupported:
            self._plan = None

    @property
    def fast(self) -> bool:
        return self._plan is not None

    def read(self, data: bytes, start: int) -> tuple[dict[str, Any], int]:
        """(record, end offset) of the body at `data[start:]`; fastavro's exceptions for a
        body that does not match the schema."""
        if self._plan is not None:
            try:
                return _read_plan(self._plan, data, start)
            except Exception:  # any doubt: fastavro reads it, and raises its own error
                pass
        body = BytesIO(data)
        body.seek(start)
        record = schemaless_reader(body, self._parsed, None)
        return record, body.tell()


def _read_plan(plan: tuple[FieldPlan, ...], data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    record: dict[str, Any] = {}
    end = len(data)
    double, string, long_, int_ = DOUBLE, STRING, LONG, INT  # locals: read once per field
    unpack_double = _DOUBLE
    for name, kind, null_index, value_index in plan:
        if null_index is not None:
            index = data[pos]
            pos += 1
            if index == null_index << 1:  # zig-zag: branch i is the byte 2*i
                record[name] = None
                continue
            if index != value_index << 1:
                raise Unsupported(f"{name}: branch byte {index}")
        if kind == double:
            record[name] = unpack_double(data, pos)[0]  # struct.error when truncated
            pos += 8
            continue
        # Every other kind starts with a zig-zag varint (a length, a count or the value);
        # one byte, the usual case, is read inline.
        byte = data[pos]
        if byte < 0x80:
            n = (byte >> 1) ^ -(byte & 1)
            pos += 1
        else:
            n, pos = _read_long(data, pos)
        if kind == string:
            stop = pos + n
            if n < 0 or stop > end:
                raise Unsupported(f"{name}: bad length")
            record[name] = data[pos:stop].decode()
            pos = stop
        elif kind in (long_, int_):
            record[name] = n
        elif kind == TS_MICROS:
            record[name] = _EPOCH + timedelta(0, 0, n)
        elif kind == TS_MILLIS:
            record[name] = _EPOCH + timedelta(milliseconds=n)
        elif kind == BYTES:
            stop = pos + n
            if n < 0 or stop > end:
                raise Unsupported(f"{name}: bad length")
            record[name] = data[pos:stop]
            pos = stop
        else:  # STRING_ARRAY: blocks of items, a negative count (with a size) goes to fastavro
            items: list[str] = []
            while n:
                if n < 0:
                    raise Unsupported(f"{name}: sized block")
                for _ in range(n):
                    item, pos = _read_string(data, pos, end)
                    items.append(item)
                n, pos = _read_long(data, pos)
            record[name] = items
    return record, pos


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise Unsupported("varint too long")
    return (n >> 1) ^ -(n & 1), pos


def _read_string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    n, pos = _read_long(data, pos)
    stop = pos + n
    if n < 0 or stop > end:
        raise Unsupported("bad length")
    return data[pos:stop].decode("utf-8"), stop
