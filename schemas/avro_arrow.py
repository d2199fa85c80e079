"""Many Avro bodies of one writer schema to one Arrow table, in bulk.

Decoding Kafka values one by one with fastavro costs 30-40 µs each, too slow for the sink. The
bodies of one writer schema, concatenated, are exactly the data of one block of an Avro object
container file (OCF), which polars reads straight into Arrow more than ten times faster. This
module builds that block, reads it, and makes the result safe and stable:

* Framing. A container block has no per-record lengths: a body with bytes too many or too few
  shifts every later record, and polars may then return the right number of rows holding
  garbage (a bad union index reads as a value) or ignore bytes left over at the end of the
  block. So every decode appends a `double` field to the writer schema and writes a random
  per-call value after each body; the result is trusted only when every row reads it back. A
  row can only read it back when its body was exactly one record, so a mis-framed body is
  always caught, in one vectorised comparison.
* Corruption. A failed or mis-framed block is split in halves and retried, down to small runs
  checked body by body with fastavro, so a few bad bodies cost a few extra reads, not a record
  by record decode of the whole batch (`decode_bodies_checked`). polars panics on some
  corrupt data (a length past the end, an enum index out of range): those are caught like
  any error, but Rust still prints each panic's message to stderr.
* Types. polars' Arrow types (large_string, large_list, dictionaries for enums, ms timestamps)
  are cast to one form that Delta Lake and Databricks read well, derived from the Avro schema
  alone (`arrow_schema_for`), so the table's schema never depends on the reader that ran.
* Limits. Schemas polars cannot read (maps, unions other than `["null", T]`, nullable enums,
  named types referenced by name, decimals over 38 digits, `null` fields) are found by looking
  at the schema, not by trying (polars panics on some of them), and decoded with fastavro.

Bodies are bare Avro, or all start with the same `prefix` (the 5-byte Confluent wire header of
their schema id), which is then checked and dropped. Passing whole Kafka values with their
header as the prefix spares the caller a slice per message: the header becomes a leading
`fixed` field of the framed schema, so the whole batch is still one `bytes.join`. A body without
the prefix, or a bare body that still has a header, is mis-framed and reported bad, never
decoded as data.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import fastavro
import polars as pl
import pyarrow as pa
from polars.exceptions import PanicException

from schemas.value_schema import parsed_schema

Body = bytes | bytearray | memoryview
"""A bare Avro body (no Confluent header); memoryviews must be of unsigned bytes."""

OCF_MAGIC = b"Obj\x01"
SYNC_SIZE = 16
FRAME_FIELD = "__sensorstream_frame"
"""Name of the framing field added to the writer schema (made unique when a field has it)."""
PREFIX_FIELD = "__sensorstream_prefix"
"""Name of the leading `fixed` field that reads the bodies' common prefix (made unique too)."""
FASTAVRO_RUN = 64
"""Runs of at most this many bodies are checked with fastavro instead of being split again."""
CHUNK_BODIES = 65_536
"""Bodies per polars read: the container block, polars' frame and the cast copy exist for one
chunk at a time, so decoding a large batch does not hold three extra copies of all of it."""
MAX_DECIMAL128_PRECISION = 38

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PRIMITIVE_ARROW: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_UTC_MICROS = pa.timestamp("us", tz="UTC")
_LOCAL_MICROS = pa.timestamp("us")
# Logical types whose Arrow type does not depend on parameters; any other logical type
# (or one on the wrong underlying type) is ignored, as the Avro spec requires.
_LOGICAL_ARROW: dict[tuple[str, str], pa.DataType] = {
    ("long", "timestamp-micros"): _UTC_MICROS,
    ("long", "timestamp-millis"): _UTC_MICROS,
    ("long", "local-timestamp-micros"): _LOCAL_MICROS,
    ("long", "local-timestamp-millis"): _LOCAL_MICROS,
    ("int", "date"): pa.date32(),
    ("int", "time-millis"): pa.time64("us"),
    ("long", "time-micros"): pa.time64("us"),
    ("string", "uuid"): pa.string(),
}


class MalformedBodies(ValueError):
    """Some bodies are not records of the writer schema; `bad` lists (index, reason)."""

    def __init__(self, bad: list[tuple[int, str]]) -> None:
        self.bad = bad
        first = f"body {bad[0][0]}: {bad[0][1]}" if bad else "none"
        super().__init__(f"{len(bad)} malformed Avro bodies (first: {first})")


# --- the container block ------------------------------------------------------------------


def zigzag_varint(value: int) -> bytes:
    """An Avro `long`: zigzag, then little-endian base-128 (any int64, any length)."""
    if not -(2**63) <= value < 2**63:
        raise OverflowError(f"{value} does not fit an Avro long")
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(value: bytes) -> bytes:
    return zigzag_varint(len(value)) + value


def _header(schema_json: bytes, sync: bytes) -> bytes:
    """File header: magic, the metadata map (one block of two entries, then 0), sync."""
    return b"".join(
        (
            OCF_MAGIC,
            zigzag_varint(2),
            _avro_bytes(b"avro.schema"),
            _avro_bytes(schema_json),
            _avro_bytes(b"avro.codec"),
            _avro_bytes(b"null"),
            zigzag_varint(0),
            sync,
        )
    )


def _block_prefix(schema: dict[str, Any], count: int, size: int, sync: bytes) -> bytes:
    """Everything before the block's data: file header, record count, data size."""
    if len(sync) != SYNC_SIZE:
        raise ValueError(f"the sync marker must be {SYNC_SIZE} bytes, not {len(sync)}")
    schema_json = json.dumps(schema, separators=(",", ":")).encode("utf-8")
    return _header(schema_json, sync) + zigzag_varint(count) + zigzag_varint(size)


def _byte_size(bodies: Sequence[Body]) -> int:
    return sum(map(len, bodies))  # len of a memoryview of unsigned bytes is its byte size


def container_block(
    schema: dict[str, Any], bodies: Sequence[Body], *, sync: bytes | None = None
) -> bytes:
    """An Avro object container file holding `bodies` as its one uncompressed block.

    `schema` is the writer schema of every body (the JSON dict, not fastavro's parsed form).
    The sync marker is random unless given: readers use the block's byte size, not a search
    for the marker, so a marker that also occurs inside a body is harmless.
    """
    sync = os.urandom(SYNC_SIZE) if sync is None else sync
    prefix = _block_prefix(schema, len(bodies), _byte_size(bodies), sync)
    return b"".join((prefix, *bodies, sync))


# --- Avro schema to Arrow schema ----------------------------------------------------------


def _named_types(parsed: dict[str, Any]) -> dict[str, Any]:
    return parsed.get("__named_schemas", {})


def _resolve(avro_type: Any, named: dict[str, Any]) -> Any:
    """A named type referenced by its (full) name, replaced by its definition."""
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVES:
        return named[avro_type]
    return avro_type


def _non_null_branches(union: list[Any]) -> list[Any]:
    return [b for b in union if b != "null"]


def _decimal_type(avro_type: dict[str, Any]) -> pa.DataType:
    precision = int(avro_type["precision"])
    scale = int(avro_type.get("scale", 0))
    if precision > MAX_DECIMAL128_PRECISION:
        return pa.decimal256(precision, scale)
    return pa.decimal128(precision, scale)


def _is_decimal(avro_type: dict[str, Any]) -> bool:
    return (
        avro_type.get("logicalType") == "decimal"
        and avro_type.get("type") in ("bytes", "fixed")
        and "precision" in avro_type
    )


def _arrow_type(avro_type: Any, named: dict[str, Any], active: frozenset[str]) -> pa.DataType:
    """The Arrow type of one Avro type (see `arrow_schema_for`); `active`: records being mapped."""
    avro_type = _resolve(avro_type, named)
    if isinstance(avro_type, str):
        return _PRIMITIVE_ARROW[avro_type]
    if isinstance(avro_type, list):
        return _union_type(avro_type, named, active)
    kind = avro_type["type"]
    if _is_decimal(avro_type):
        return _decimal_type(avro_type)
    logical = _LOGICAL_ARROW.get((kind, avro_type.get("logicalType", "")))
    if logical is not None:
        return logical
    if kind in ("record", "error"):
        name = avro_type["name"]
        if name in active:
            raise ValueError(f"the Avro record {name} is recursive: Arrow has no such type")
        return pa.struct(_arrow_fields(avro_type, named, active | {name}))
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary()
    if kind == "array":
        return pa.list_(_arrow_type(avro_type["items"], named, active))
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(avro_type["values"], named, active))
    return _arrow_type(kind, named, active)  # {"type": "string", ...} and friends


def _union_type(union: list[Any], named: dict[str, Any], active: frozenset[str]) -> pa.DataType:
    """`["null", T]` is a nullable T; more non-null branches become Spark's member struct."""
    branches = _non_null_branches(union)
    if not branches:
        return pa.null()
    if len(branches) == 1:
        return _arrow_type(branches[0], named, active)
    return pa.struct(
        [pa.field(f"member{i}", _arrow_type(b, named, active)) for i, b in enumerate(branches)]
    )


def _arrow_fields(
    record: dict[str, Any], named: dict[str, Any], active: frozenset[str]
) -> list[pa.Field]:
    return [pa.field(f["name"], _arrow_type(f["type"], named, active)) for f in record["fields"]]


def _record_of(schema: dict[str, Any]) -> dict[str, Any]:
    parsed = parsed_schema(schema)
    if not isinstance(parsed, dict) or parsed.get("type") not in ("record", "error"):
        raise ValueError("the writer schema must be an Avro record")
    return parsed


def arrow_schema_for(avro_schema: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of records of `avro_schema`: one column per field, in field order.

    boolean, int, long, float, double keep their width; string, enum and uuid → string;
    bytes and fixed → binary (never the large_ or _view variants polars may choose);
    timestamp-micros and timestamp-millis → timestamp[us, UTC], the local- variants →
    timestamp[us]; date → date32; time-millis and time-micros → time64[us]; decimal →
    decimal128 (decimal256 above 38 digits); array → list; map → map<string, V>; record →
    struct; `["null", T]` → T; a union of several non-null types → struct<member0, member1, ...>
    as Spark's Avro reader does. Every field is nullable, even non-null Avro fields: a later
    schema version may make a field nullable (a BACKWARD compatible change), and a Delta column
    created NOT NULL could then not take the new rows.
    """
    parsed = _record_of(avro_schema)
    named = _named_types(parsed)
    return pa.schema(_arrow_fields(parsed, named, frozenset({parsed["name"]})))


# --- what polars can read -----------------------------------------------------------------


def _polars_reads_type(avro_type: Any, named: dict[str, Any]) -> bool:
    if isinstance(avro_type, str):
        # polars cannot resolve a named type referenced by name, nor read a `null` column
        return avro_type in _PRIMITIVES and avro_type != "null"
    if isinstance(avro_type, list):
        branches = _non_null_branches(avro_type)
        if len(avro_type) != 2 or len(branches) != 1:
            return False
        branch = branches[0]
        if isinstance(branch, dict) and branch.get("type") == "enum":
            return False  # polars panics on a nullable enum
        return _polars_reads_type(branch, named)
    kind = avro_type["type"]
    if _is_decimal(avro_type) and int(avro_type["precision"]) > MAX_DECIMAL128_PRECISION:
        return False  # polars panics above decimal128
    if kind in ("record", "error"):
        return all(_polars_reads_type(f["type"], named) for f in avro_type["fields"])
    if kind in ("enum", "fixed"):
        return True
    if kind == "array":
        return _polars_reads_type(avro_type["items"], named)
    if kind == "map":
        return False
    return _polars_reads_type(kind, named)


def polars_can_read(avro_schema: dict[str, Any]) -> bool:
    """Whether polars 2.1 reads records of `avro_schema` (checked on the schema, not tried).

    Found by experiment: polars fails on maps (a panic), unions other than `["null", T]` or
    `[T, "null"]` (also single-branch ones), nullable enums (a panic), named types referenced
    by name (so recursive records too), decimals of more than 38 digits (a panic) and fields
    of type `null`. Everything else, nested records and arrays included, reads correctly.
    """
    parsed = _record_of(avro_schema)
    return _polars_reads_type(parsed, _named_types(parsed))


# --- the fast path: polars on a framed block ------------------------------------------------


def _nonce() -> float:
    """A random double that equals only itself bit for bit (finite, not zero)."""
    while True:
        (value,) = struct.unpack("<d", os.urandom(8))
        if math.isfinite(value) and value != 0.0:
            return value


def _unique_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


def _framed_schema(schema: dict[str, Any], prefix: bytes) -> tuple[dict[str, Any], str, str]:
    """The writer schema with the framing `double` last and, given a prefix, a leading `fixed`
    of its size: (schema, frame field, prefix field)."""
    taken = {f["name"] for f in schema["fields"]}
    frame = _unique_name(FRAME_FIELD, taken)
    fields = [*schema["fields"], {"name": frame, "type": "double"}]
    head = _unique_name(PREFIX_FIELD, taken | {frame})
    if prefix:
        named = set(_named_types(parsed_schema(schema)))
        type_name = _unique_name(PREFIX_FIELD, {n.rsplit(".", 1)[-1] for n in named})
        fixed = {"type": "fixed", "name": type_name, "size": len(prefix)}
        fields.insert(0, {"name": head, "type": fixed})
    return {**schema, "fields": fields}, frame, head


def _polars_table(
    schema: dict[str, Any], bodies: Sequence[Body], target: pa.Schema, prefix: bytes = b""
) -> pa.Table:
    """`bodies` via polars, cast to `target`; ValueError when any body is mis-framed or bad.

    A body too short pulls the next body's bytes into its record, one too long leaves bytes
    that become the start of the next record: either way some row reads its frame value from
    the wrong bytes, which a random 64-bit value makes certain to notice. With a `prefix`,
    every row must also read it back from its leading `fixed` field.
    """
    framed, frame, head = _framed_schema(schema, prefix)
    nonce = _nonce()
    marker = struct.pack("<d", nonce)
    sync = os.urandom(SYNC_SIZE)
    start = _block_prefix(framed, len(bodies), _byte_size(bodies) + 8 * len(bodies), sync)
    # one copy of the data: start body0 marker body1 marker ... bodyN marker sync
    blob = marker.join((start + bodies[0], *bodies[1:], sync))
    try:
        df = pl.read_avro(io.BytesIO(blob))
    except (Exception, PanicException) as exc:  # OSError, ComputeError, panics on bad data
        raise ValueError(f"polars: {type(exc).__name__}: {exc}") from None
    del blob  # read: not held beside the frame and its Arrow copies made below
    if df.height != len(bodies) or not (df.get_column(frame) == nonce).all():
        raise ValueError("a body is not exactly one record (the block is mis-framed)")
    if prefix:
        if not df.select((pl.col(head) == pl.lit(prefix, pl.Binary)).all()).item():
            raise ValueError("a body does not start with the expected prefix")
        df = df.drop(head)
    try:
        return df.drop(frame).to_arrow().cast(target)
    except pa.ArrowException as exc:  # e.g. over 2 GiB of text in one column: split the run
        raise ValueError(f"casting polars' Arrow types: {exc}") from None


# --- the slow path: fastavro, body by body ---------------------------------------------------


def _logical_matcher(logical: str) -> Callable[[Any], bool]:
    if logical.startswith(("timestamp-", "local-timestamp-")):
        return lambda v: isinstance(v, datetime)
    if logical == "date":
        return lambda v: isinstance(v, date) and not isinstance(v, datetime)
    if logical.startswith("time-"):
        return lambda v: isinstance(v, dt_time)
    return lambda v: isinstance(v, uuid.UUID | str)  # uuid


_SIMPLE_MATCHERS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "double": lambda v: isinstance(v, float),
    "bytes": lambda v: isinstance(v, bytes),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
}


def _branch_matcher(avro_type: Any, named: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a value fastavro read could have come from this union branch.

    fastavro returns a union's value without saying which branch it was; the first branch
    whose kind fits the value is taken, the rule fastavro itself uses when writing.
    """
    avro_type = _resolve(avro_type, named)
    if isinstance(avro_type, str):
        return _SIMPLE_MATCHERS[avro_type]
    if isinstance(avro_type, list):
        return lambda v: False  # a union directly inside a union is invalid Avro
    kind = avro_type["type"]
    if _is_decimal(avro_type):
        return lambda v: isinstance(v, Decimal)
    if (kind, avro_type.get("logicalType", "")) in _LOGICAL_ARROW:
        return _logical_matcher(avro_type["logicalType"])
    if kind in ("record", "error"):
        keys = {f["name"] for f in avro_type["fields"]}
        return lambda v: isinstance(v, dict) and v.keys() == keys
    if kind == "enum":
        symbols = frozenset(avro_type["symbols"])
        return lambda v: isinstance(v, str) and v in symbols
    if kind == "fixed":
        size = avro_type["size"]
        return lambda v: isinstance(v, bytes) and len(v) == size
    return _SIMPLE_MATCHERS[kind]


Converter = Callable[[Any], Any]


def _converter(avro_type: Any, named: dict[str, Any]) -> Converter | None:
    """Turns a value fastavro read into what `pa.array` takes for its Arrow type; None: as is.

    Only UUIDs (to text) and unions of several types (to member structs) need it; a `None`
    for everything else keeps the slow path from walking values that need no change.
    """
    avro_type = _resolve(avro_type, named)
    if isinstance(avro_type, str):
        return None
    if isinstance(avro_type, list):
        return _union_converter(avro_type, named)
    kind = avro_type["type"]
    if avro_type.get("logicalType") == "uuid" and kind == "string":
        return lambda v: None if v is None else str(v)
    if kind in ("record", "error"):
        return _record_converter(avro_type, named)
    if kind == "array":
        item = _converter(avro_type["items"], named)
        return None if item is None else lambda v: None if v is None else [item(x) for x in v]
    if kind == "map":
        value = _converter(avro_type["values"], named)
        if value is None:
            return None
        return lambda v: None if v is None else {k: value(x) for k, x in v.items()}
    return None


def _union_converter(union: list[Any], named: dict[str, Any]) -> Converter | None:
    branches = _non_null_branches(union)
    if len(branches) == 1:
        inner = _converter(branches[0], named)
        return None if inner is None else lambda v: None if v is None else inner(v)
    if not branches:
        return None
    options = [
        (f"member{i}", _branch_matcher(b, named), _converter(b, named) or (lambda x: x))
        for i, b in enumerate(branches)
    ]

    def to_members(value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        for name, fits, convert in options:
            if fits(value):
                return {name: convert(value)}
        raise ValueError(f"no branch of the union {union} fits {value!r}")

    return to_members


def _record_converter(record: dict[str, Any], named: dict[str, Any]) -> Converter | None:
    fields = [(f["name"], _converter(f["type"], named)) for f in record["fields"]]
    changed = [(name, convert) for name, convert in fields if convert is not None]
    if not changed:
        return None

    def convert_record(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        out = dict(value)
        for name, convert in changed:
            out[name] = convert(out[name])
        return out

    return convert_record


def _read_body(parsed: dict[str, Any], body: Body, prefix: bytes = b"") -> dict[str, Any]:
    """One body with fastavro; ValueError when it is not exactly one record after `prefix`."""
    if prefix:
        if bytes(body[: len(prefix)]) != prefix:
            raise ValueError(f"the body does not start with the expected prefix {prefix.hex()}")
        body = memoryview(body)[len(prefix) :]
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, parsed, None)
    except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    extra = len(stream.getbuffer()) - stream.tell()
    if extra:
        raise ValueError(f"{extra} byte(s) left after the end of the record")
    return record


def _fastavro_table(
    schema: dict[str, Any],
    bodies: Sequence[Body],
    target: pa.Schema,
    first_index: int = 0,
    prefix: bytes = b"",
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The good bodies decoded one by one, and (index + first_index, reason) of the bad ones."""
    parsed = _record_of(schema)
    convert = _record_converter(parsed, _named_types(parsed))
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for index, body in enumerate(bodies, start=first_index):
        try:
            record = _read_body(parsed, body, prefix)
            rows.append(record if convert is None else convert(record))
        except ValueError as exc:
            bad.append((index, str(exc)))
    return pa.Table.from_pylist(rows, schema=target), bad


# --- the API -------------------------------------------------------------------------------


def _decode_run(
    schema: dict[str, Any],
    bodies: Sequence[Body],
    target: pa.Schema,
    first_index: int,
    fast: bool,
    prefix: bytes,
) -> tuple[list[pa.Table], list[tuple[int, str]]]:
    """Decode a run: polars when it can, else split in halves; short runs go to fastavro."""
    if fast:
        try:
            return [_polars_table(schema, bodies, target, prefix)], []
        except ValueError:
            pass
    if not fast or len(bodies) <= FASTAVRO_RUN:
        table, bad = _fastavro_table(schema, bodies, target, first_index, prefix)
        return [table], bad
    middle = len(bodies) // 2
    left, left_bad = _decode_run(schema, bodies[:middle], target, first_index, fast, prefix)
    right, right_bad = _decode_run(
        schema, bodies[middle:], target, first_index + middle, fast, prefix
    )
    return left + right, left_bad + right_bad


def _chunks(bodies: Sequence[Any]) -> Iterator[tuple[int, Sequence[Any]]]:
    """(index of the first, chunk) of at most `CHUNK_BODIES` bodies each; a batch that fits
    is its own one chunk, not a copy."""
    if len(bodies) <= CHUNK_BODIES:
        yield 0, bodies
        return
    for start in range(0, len(bodies), CHUNK_BODIES):
        yield start, bodies[start : start + CHUNK_BODIES]


def decode_bodies_checked(
    schema: dict[str, Any], bodies: Sequence[Body], prefix: bytes = b""
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """(table of the good bodies in order, [(index, reason)] of the bad ones).

    `bodies` are Avro bodies all written with `schema`: bare, or each starting with `prefix`
    (whole Confluent-framed values with their 5-byte wire header), which is checked and not
    decoded. The fast path is one polars read whose framing is checked; when it fails, the run
    is split and retried, and runs of at most `FASTAVRO_RUN` bodies are checked one by one
    with fastavro, which also rejects bytes left after a record. A body that polars accepts
    but fastavro would not (a union branch index out of range, with the right length) decodes.
    """
    target = arrow_schema_for(schema)
    if not bodies:
        return target.empty_table(), []
    fast = polars_can_read(schema)
    tables: list[pa.Table] = []
    bad: list[tuple[int, str]] = []
    for start, chunk in _chunks(bodies):
        chunk_tables, chunk_bad = _decode_run(schema, chunk, target, start, fast, prefix)
        tables += chunk_tables
        bad += chunk_bad
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table, bad


def decode_bodies_at_once(
    schema: dict[str, Any], bodies: Sequence[Body | None], prefix: bytes = b""
) -> pa.Table | None:
    """`bodies` as one table when every one of them is a good record after `prefix`, else None.

    For a caller that does not yet know whether the bodies share one prefix (a batch of
    Kafka values almost always has a single schema id): the prefix is checked by polars for
    every row at no extra cost, where finding the groups first is a slice per body. Nothing
    is split or retried: on None, group the bodies and use `decode_bodies_checked`.
    """
    if not bodies or not polars_can_read(schema):
        return None
    target = arrow_schema_for(schema)
    tables = []
    for _, chunk in _chunks(bodies):
        try:
            tables.append(_polars_table(schema, chunk, target, prefix))
        except (ValueError, TypeError):  # TypeError: a missing body (a tombstone's None)
            return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def decode_bodies(schema: dict[str, Any], bodies: Sequence[Body], prefix: bytes = b"") -> pa.Table:
    """Avro bodies of one writer schema as one Arrow table (`arrow_schema_for` types).

    Raises MalformedBodies, listing every bad body, when any body is not exactly one record
    of `schema` after `prefix`; use `decode_bodies_checked` to keep the good ones.
    """
    table, bad = decode_bodies_checked(schema, bodies, prefix)
    if bad:
        raise MalformedBodies(bad)
    return table


def concat_evolving(tables: list[pa.Table]) -> pa.Table:
    """Tables decoded with different versions of one schema, as one table.

    Columns come in the first table's order, then columns new in later tables; a table
    without a column gets nulls. Types are unified permissively, so Avro's own promotions
    between versions (int → long, float → double) concatenate instead of failing.
    """
    if not tables:
        raise ValueError("no tables to concatenate")
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")
