"""A record writer for flat Avro schemas that resolves each field's union branch once, per schema.

fastavro's `schemaless_writer` is general: for every `["null", T]` field of every record it
works out at run time which branch the value belongs to, and it dispatches on the schema
per value. For the flat records this project writes (a reading: longs, doubles, strings,
`timestamp-micros`, each possibly nullable; routes add a string array) that dominates the
cost. `FlatRecordWriter` follows the schema's plan (`avro_plan`) with the bytes of each
field's branch indexes computed once, and writes a nullable field's branch index as the one
byte it is.

Only values whose encoding is beyond doubt take the fast path: exactly `float` for double,
`int` (not bool) within range for int/long, `str`, `bytes`, `bool`, aware `datetime` for the
timestamp types, lists for arrays, None for a union's null branch. Anything else (an int in
a double field, a missing key, a naive datetime, a string that is not valid UTF-8 ...) makes
the whole record go through fastavro, so every case outside the fast path is written, or
refused with fastavro's own error, exactly as before. A schema with any type the plan does not
cover (nested records, maps, enums, fixed, other unions) is written by fastavro throughout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from struct import Struct
from typing import Any

from fastavro import schemaless_writer

from schemas.avro_plan import (
    BOOLEAN,
    BYTES,
    DOUBLE,
    INT,
    INT32,
    INT64,
    LONG,
    STRING,
    STRING_ARRAY,
    TS_MICROS,
    TS_MILLIS,
    Unsupported,
    compile_plan,
    varint,
)

_DOUBLE = Struct("<d").pack
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STRING_CACHE_LIMIT = 4096
"""Encoded strings kept for reuse: readings repeat most of their text fields."""
_SMALL_LONGS = {n: varint(n) for n in range(-64, 1024)}
"""Zig-zag varint bytes of the small numbers flags, codes and lengths mostly are."""
_TRUE, _FALSE = b"\x01", b"\x00"
_EMPTY_ARRAY = b"\x00"
_Step = tuple[str, int, bytes | None, bytes]
"""(field, kind, bytes of the null branch or None when not nullable, bytes before a value)"""


def _steps(schema: dict[str, Any]) -> tuple[_Step, ...]:
    return tuple(
        (
            f.name,
            f.kind,
            None if f.null_index is None else _SMALL_LONGS[f.null_index],
            b"" if f.value_index is None else _SMALL_LONGS[f.value_index],
        )
        for f in compile_plan(schema)
    )


class FlatRecordWriter:
    """Writes records of one schema as Avro bodies; `parsed` is fastavro's parsed schema."""

    def __init__(self, schema: dict[str, Any], parsed: dict[str, Any]) -> None:
        self._parsed = parsed
        self._plan: tuple[_Step, ...] | None
        try:
            self._plan = _steps(schema)
        except Unsupported:
            self._plan = None
        self._strings: dict[str, bytes] = {}

    @property
    def fast(self) -> bool:
        """Whether the schema is one the plan covers (else fastavro writes every record)."""
        return self._plan is not None

    def write(self, record: dict[str, Any], prefix: bytes = b"") -> bytes:
        """`prefix` + the body; ValueError/TypeError/OverflowError when a value does not fit."""
        if self._plan is not None:
            try:
                return self._write_plan(self._plan, record, prefix)
            except (Unsupported, KeyError, UnicodeError, AttributeError):
                pass
        buffer = BytesIO()
        buffer.write(prefix)
        schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()

    def _write_plan(
        self,
        plan: tuple[_Step, ...],
        record: dict[str, Any],
        prefix: bytes,
    ) -> bytes:
        parts = [prefix]
        append = parts.append
        strings = self._strings
        small = _SMALL_LONGS
        for name, kind, null, branch in plan:
            value = record[name]
            if value is None:
                if null is None:
                    raise Unsupported(name)
                append(null)
                continue
            if branch:
                append(branch)
            cls = value.__class__
            if kind == STRING:
                if cls is not str:
                    raise Unsupported(name)
                encoded = strings.get(value)
                if encoded is None:
                    encoded = _string(value, strings)
                append(encoded)
            elif kind == DOUBLE:
                if cls is not float:
                    raise Unsupported(name)
                append(_DOUBLE(value))
            elif kind in (LONG, INT):
                if cls is not int:
                    raise Unsupported(name)
                encoded = small.get(value)
                if encoded is None:
                    low, high = INT32 if kind == INT else INT64
                    if not low <= value <= high:
                        raise Unsupported(name)
                    encoded = varint(value)
                append(encoded)
            elif kind in (TS_MICROS, TS_MILLIS):
                if cls is not datetime or value.tzinfo is None:
                    raise Unsupported(name)
                delta = value - _EPOCH
                micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
                append(varint(micros if kind == TS_MICROS else micros // 1000))
            elif kind == BOOLEAN:
                if cls is not bool:
                    raise Unsupported(name)
                append(_TRUE if value else _FALSE)
            elif kind == BYTES:
                if cls is not bytes:
                    raise Unsupported(name)
                append(small.get(len(value)) or varint(len(value)))
                append(value)
            elif kind == STRING_ARRAY:
                if cls is not list:
                    raise Unsupported(name)
                if value:
                    append(small.get(len(value)) or varint(len(value)))
                    for item in value:
                        if item.__class__ is not str:
                            raise Unsupported(name)
                        append(strings.get(item) or _string(item, strings))
                append(_EMPTY_ARRAY)
            else:  # pragma: no cover - compile_plan only makes the kinds above
                raise Unsupported(name)
        return b"".join(parts)


def _string(value: str, cache: dict[str, bytes]) -> bytes:
    data = value.encode("utf-8")  # UnicodeEncodeError (lone surrogates): fastavro decides
    encoded = (_SMALL_LONGS.get(len(data)) or varint(len(data))) + data
    if len(cache) >= _STRING_CACHE_LIMIT:
        cache.clear()
    cache[value] = encoded
    return encoded
