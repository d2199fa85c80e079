"""The plan of a flat Avro record schema: per field, its kind and its union branches.

Shared by `avro_writer` and `avro_reader`, which walk the plan instead of interpreting the
schema per value as fastavro does. A flat record is one whose fields are primitives (boolean,
int, long, double, string, bytes), `timestamp-micros`/`timestamp-millis` longs, arrays of
strings, or a two-branch union of one of those with null: the shape of every reading and
route output. Any other schema raises `Unsupported`, and fastavro handles it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

BOOLEAN, INT, LONG, DOUBLE, STRING, BYTES, TS_MICROS, TS_MILLIS, STRING_ARRAY = range(9)
"""Field kinds of a plan."""

_PRIMITIVE_KINDS = {
    "boolean": BOOLEAN,
    "int": INT,
    "long": LONG,
    "double": DOUBLE,
    "string": STRING,
    "bytes": BYTES,
}
_LOGICAL_KINDS = {("long", "timestamp-micros"): TS_MICROS, ("long", "timestamp-millis"): TS_MILLIS}
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


class Unsupported(Exception):
    """A schema construct, a value or a body outside the plan's fast path: fastavro decides."""


class FieldPlan(NamedTuple):
    name: str
    kind: int
    null_index: int | None
    """The union branch index of null; None when the field is not nullable."""
    value_index: int | None
    """The union branch index of the value; None when the field is not a union."""


def varint(n: int) -> bytes:
    """Avro's zig-zag varint of a 64-bit signed integer."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x4000:  # one or two bytes: counts, lengths, codes, row ids
        return bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7))
    groups = []
    while n > 0x7F:
        groups.append((n & 0x7F) | 0x80)
        n >>= 7
    groups.append(n)
    return bytes(groups)


def _is_null(branch: Any) -> bool:
    return branch == "null" or (isinstance(branch, dict) and branch.get("type") == "null")


def _kind(kind: Any) -> int:
    if isinstance(kind, str):
        if kind in _PRIMITIVE_KINDS:
            return _PRIMITIVE_KINDS[kind]
    elif isinstance(kind, dict):
        base, logical = kind.get("type"), kind.get("logicalType")
        if logical is not None:
            if (base, logical) in _LOGICAL_KINDS:
                return _LOGICAL_KINDS[(base, logical)]
        elif base == "array" and kind.get("items") == "string":
            return STRING_ARRAY
        elif isinstance(base, str) and base in _PRIMITIVE_KINDS:
            return _PRIMITIVE_KINDS[base]
    raise Unsupported(f"type {kind!r}")


def compile_plan(schema: dict[str, Any]) -> tuple[FieldPlan, ...]:
    """One FieldPlan per field, in order; `Unsupported` for a schema that is not flat."""
    if schema.get("type") != "record":
        raise Unsupported("not a record")
    plan = []
    for field in schema["fields"]:
        kind = field["type"]
        null_index = value_index = None
        if isinstance(kind, list):
            nulls = [i for i, b in enumerate(kind) if _is_null(b)]
            if len(kind) != 2 or len(nulls) != 1:
                raise Unsupported(f"union {kind!r}")
            null_index, value_index = nulls[0], 1 - nulls[0]
            kind = kind[value_index]
        plan.append(FieldPlan(field["name"], _kind(kind), null_index, value_index))
    return tuple(plan)
