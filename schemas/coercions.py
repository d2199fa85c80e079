"""One SQLite row to one Avro record dict, validated, or a BadRow that says why not.

SQLite stores any value in any column (type affinity is a preference, not a constraint), so a
row that fits its table can still break the value schema: text in an INTEGER column, NaN in a
REAL one, bytes that are not UTF-8 in a TEXT one. Each such row becomes a BadRow for the
dead-letter topic (DESIGN section 7) instead of a crash or a silently altered value.

Rows must come from a connection with `conn.text_factory = bytes`: the default text factory
raises on invalid UTF-8 while fetching, which would fail the whole batch rather than the one
row, and the raw bytes also give the exact size of each value for the size limit. `str` values
are accepted too.

For speed the work is split: `RowConverter(...)` looks at the schema once and builds one small
function per column; `convert(row, rowid)` only runs them. Values are never re-typed unless
the result is exact: an integral REAL into a long, an integer into a double when the double
holds it exactly, a number into a string as its text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from operator import itemgetter
from typing import Any

from schemas.sqlite_columns import Column, fold_name
from schemas.timestamps import MAX_FUTURE_MICROS, BadTimestamp, parse_epoch_micros
from schemas.value_schema import PROVENANCE_NAMES, SQLITE_COLUMN_ATTR, field_type
from sensorstream.errors import ConfigError

MAX_ROW_BYTES = 1 << 20
"""Default limit on a record's encoded size: 1 MiB, about Kafka's default message.max.bytes."""
IDENTIFIER_FIELDS: tuple[str, ...] = ("sensor_id", "region")
"""Columns whose values name topics, keys and lake paths, so they must be safe identifiers."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EXACT_DOUBLE_INT = 2**53
_VALUE_OVERHEAD = 11  # worst case per field: a 10-byte varint (value or length) + union index
_PREVIEW_CHARS = 40

Step = Callable[[Any], Any]


class BadRow(ValueError):
    """A row that cannot become a record of the value schema.

    `column` names the offending column and `reason` says what is wrong, in one line of
    ASCII-only text (values appear as their ascii() repr), meant for a dead-letter header.
    """

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"column {column!r}: {reason}")
        self.column = column
        self.reason = reason


def safe_identifier(value: str, field: str) -> str:
    """`value` if it can safely name a topic, a message key or a lake path; else BadRow.

    Rejected: empty, '/', '\\', '..' (path traversal), any whitespace and any control or
    format character (str.isprintable is False for Unicode categories C* and Z* except the
    ASCII space, which is checked separately).
    """
    if (
        value
        and value.isprintable()
        and " " not in value
        and "/" not in value
        and "\\" not in value
        and ".." not in value
    ):
        return value
    raise BadRow(field, _identifier_problem(value))


class RowConverter:
    """Converts rows of one table (tuples in `columns` order) to records of one value schema.

    Build one per (schema, columns) and reuse it for every row: the per-column functions are
    chosen here, once. node_id, region and source_table fill the provenance fields and are
    checked here (ConfigError), not per row. `required` names columns (folded) whose NULL is a
    bad row even where the schema's field is nullable (`value_schema.required_columns`).

    A column whose declared type no longer matches its field (retyped at the source, or
    another node's type for the same column) is converted into the field's type when the
    value fits exactly; a value that does not is a BadRow whose reason says so.
    """

    def __init__(
        self,
        schema: dict[str, Any],
        columns: Sequence[Column],
        *,
        node_id: str,
        region: str,
        source_table: str,
        max_row_bytes: int = MAX_ROW_BYTES,
        identifier_fields: Sequence[str] = IDENTIFIER_FIELDS,
        required: Collection[str] = (),
    ) -> None:
        for value, name in ((node_id, "node id"), (region, "region")):
            try:
                safe_identifier(value, name)
            except BadRow as exc:
                raise ConfigError(f"{name} {value!r} is not usable: {exc.reason}") from None
        self.schema = schema
        self.columns = list(columns)
        self.max_row_bytes = max_row_bytes
        self._provenance = {"_node_id": node_id, "_region": region, "_source_table": source_table}
        fields = _fields_by_column(schema, self.columns)
        identifiers = {fold_name(name) for name in identifier_fields}
        must = {fold_name(name) for name in required}
        self._names = [fields[fold_name(c.name)]["name"] for c in self.columns]
        self._steps: list[Step] = [
            _step_for(
                c,
                fields[fold_name(c.name)],
                fold_name(c.name) in identifiers,
                fold_name(c.name) in must,
            )
            for c in self.columns
        ]
        self._named_steps = list(zip(self._names, self._steps, strict=True))
        self._width = len(self.columns)
        variable = [
            i for i, c in enumerate(self.columns) if _variable_size(fields[fold_name(c.name)])
        ]
        self._variable = _values_at(variable)
        provenance_bytes = sum(len(v.encode("utf-8")) for v in self._provenance.values())
        self._fixed_bytes = _VALUE_OVERHEAD * (self._width + len(PROVENANCE_NAMES))
        self._fixed_bytes += provenance_bytes

    def convert(self, row: Sequence[Any], rowid: int) -> dict[str, Any]:
        """The record for `row` (values in column order) with SQLite rowid `rowid`.

        Raises BadRow for a value the schema cannot take or a row above `max_row_bytes`;
        ValueError when `row` has the wrong number of values (a caller bug, not bad data).
        """
        if len(row) != self._width:
            raise ValueError(f"row has {len(row)} values, the table has {self._width} columns")
        try:
            size = self._fixed_bytes + sum(map(len, filter(None, self._variable(row))))
        except TypeError:  # a number in a text column: count exactly below
            size = self.max_row_bytes
        # len() of a str counts characters, up to 4x fewer than its UTF-8 bytes: rows that
        # could be near the limit are counted exactly (rare, and cheap next to their size).
        if size > self.max_row_bytes // 4:
            size = self._fixed_bytes + sum(map(_encoded_length, row))
            if size > self.max_row_bytes:
                raise self._oversized(row, size)
        pairs = zip(self._named_steps, row, strict=True)
        record = {name: step(value) for (name, step), value in pairs}
        record.update(self._provenance)
        record["_source_rowid"] = rowid
        return record

    def _oversized(self, row: Sequence[Any], size: int) -> BadRow:
        sizes = {c.name: _encoded_length(v) for c, v in zip(self.columns, row, strict=True)}
        largest = max(sizes, key=sizes.__getitem__)
        return BadRow(
            largest,
            f"row is about {size} bytes encoded, above the limit of {self.max_row_bytes} "
            f"bytes; largest column {largest!r} has {sizes[largest]} bytes",
        )


def _variable_size(field: dict[str, Any]) -> bool:
    """True for string and bytes fields: the only ones whose values can make a row large."""
    kind = field["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    return "string" in kinds or "bytes" in kinds


def _values_at(indexes: list[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A fast getter of row[i] for each i, always returning a sequence."""
    if len(indexes) > 1:
        return itemgetter(*indexes)
    if indexes:
        index = indexes[0]
        return lambda row: (row[index],)
    return lambda row: ()


def _encoded_length(value: Any) -> int:
    """Bytes a text or blob value takes in the Avro body (numbers are in the fixed overhead)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    return len(value) if isinstance(value, bytes) else 0


def _fields_by_column(schema: dict[str, Any], columns: list[Column]) -> dict[str, dict]:
    """The schema's field for each column (keyed by folded column name); ConfigError if the
    schema and the table do not match one to one."""
    fields = {
        fold_name(f.get(SQLITE_COLUMN_ATTR, f["name"])): f
        for f in schema["fields"]
        if f["name"] not in PROVENANCE_NAMES
    }
    unmatched = [c.name for c in columns if fold_name(c.name) not in fields]
    names = {fold_name(c.name) for c in columns}
    extra = [f["name"] for key, f in fields.items() if key not in names]
    if unmatched or extra:
        raise ConfigError(
            f"value schema {schema.get('name')!r} does not match the table's columns: "
            f"columns without a field: {unmatched or 'none'}; fields without a column: "
            f"{extra or 'none'} (build the schema with value_schema_for from the same columns)"
        )
    return fields


def _step_for(
    column: Column, field: dict[str, Any], identifier: bool, required: bool = False
) -> Step:
    """The function converting one value of `column` into `field`'s type."""
    step = _plain_step_for(column, field, identifier, required)
    kind = field_type(field)
    if kind == column.avro_type or isinstance(kind, dict | list):
        return step  # event time (parsed from any type), or a type of the schema's own
    return _retyped(step, column, kind)


def _retyped(step: Step, column: Column, kind: Any) -> Step:
    """`step`, whose BadRows also say that the column's declared type and its field differ."""
    declared = column.declared_type or "no declared type"
    note = (
        f"; column {column.name!r} is declared {declared} (Avro {column.avro_type}) but its "
        f"field in the topic's schema is {kind}, the type the lake's column has: to stream "
        "the new type, give the column a new name at the source"
    )

    def retyped(value: Any) -> Any:
        try:
            return step(value)
        except BadRow as exc:
            if value is None:
                raise
            raise BadRow(exc.column, exc.reason + note) from None

    return retyped


def _plain_step_for(
    column: Column, field: dict[str, Any], identifier: bool, required: bool
) -> Step:
    kind = field["type"]
    nullable = False
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        if len(kind) != 2 or len(others) != 1:
            raise ConfigError(f"field {field['name']!r}: unsupported union {kind!r}")
        nullable, kind = True, others[0]
    name = column.name
    if column.not_null:
        null_reason = "NULL in a NOT NULL column"
    else:
        null_reason = "NULL, but the value schema requires a value"
    if nullable and (column.not_null or required):
        nullable = False  # the schema would take NULL, but the column must have a value
    if isinstance(kind, dict):
        if kind.get("logicalType") == "timestamp-micros" and kind.get("type") == "long":
            return _timestamp_step(name, nullable, null_reason)
        kind = kind.get("type")
    if kind == "long":
        return _long_step(name, nullable, null_reason)
    if kind == "double":
        return _double_step(name, nullable, null_reason)
    if kind == "string":
        return _string_step(name, nullable, null_reason, identifier)
    if kind == "bytes":
        return _bytes_step(name, nullable, null_reason)
    raise ConfigError(f"field {field['name']!r}: Avro type {kind!r} is not supported")


def _long_step(column: str, nullable: bool, null_reason: str) -> Step:
    def step(value: Any) -> int | None:
        if value.__class__ is int:
            return value
        if value is None:
            if nullable:
                return None
            raise BadRow(column, null_reason)
        if value.__class__ is float:
            if value - value != 0.0:  # NaN or +-inf
                raise BadRow(column, f"{value!r} is not a finite number (field is long)")
            if not value.is_integer():
                raise BadRow(column, f"REAL {value!r} has a fractional part (field is long)")
            if not _LONG_MIN <= value <= _LONG_MAX:
                raise BadRow(column, f"{value!r} is outside the 64-bit range of a long")
            return int(value)
        raise _not_a_number(column, value, "long")

    return step


def _double_step(column: str, nullable: bool, null_reason: str) -> Step:
    isfinite = math.isfinite

    def step(value: Any) -> float | None:
        if value.__class__ is float:
            if isfinite(value):
                return value
            raise BadRow(column, f"{value!r} is not a finite number")
        if value is None:
            if nullable:
                return None
            raise BadRow(column, null_reason)
        if value.__class__ is int:
            converted = float(value)
            if -_EXACT_DOUBLE_INT <= value <= _EXACT_DOUBLE_INT or int(converted) == value:
                return converted
            raise BadRow(column, f"integer {value} does not fit a double exactly")
        raise _not_a_number(column, value, "double")

    return step


def _string_step(column: str, nullable: bool, null_reason: str, identifier: bool) -> Step:
    def step(value: Any) -> str | None:
        if value.__class__ is bytes:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRow(
                    column,
                    f"text is not valid UTF-8 ({exc.reason} at byte {exc.start}): "
                    f"{_preview(value)}",
                ) from None
        elif value is None:
            if nullable:
                return None
            raise BadRow(column, null_reason)
        elif value.__class__ is str:
            text = value
        elif value.__class__ is int:
            text = str(value)
        elif value.__class__ is float:
            text = repr(value)
        else:
            raise BadRow(column, f"unsupported value type {value.__class__.__name__}")
        if identifier:
            safe_identifier(text, column)
        return text

    return step


def _bytes_step(column: str, nullable: bool, null_reason: str) -> Step:
    def step(value: Any) -> bytes | None:
        if value.__class__ is bytes:
            return value
        if value is None:
            if nullable:
                return None
            raise BadRow(column, null_reason)
        if value.__class__ is str:
            return value.encode("utf-8")
        raise BadRow(
            column,
            f"{value.__class__.__name__} {_preview(value)} in a BLOB column (field is bytes); "
            "declare the column's type in SQLite to have it mapped to a number",
        )

    return step


def _timestamp_step(column: str, nullable: bool, null_reason: str) -> Step:
    clock = time.time_ns

    def step(value: Any) -> int | None:
        if value is None:
            if nullable:
                return None
            raise BadRow(column, "NULL timestamp (event time is required)")
        try:
            return parse_epoch_micros(value, clock() // 1000 + MAX_FUTURE_MICROS)
        except BadTimestamp as exc:
            raise BadRow(column, str(exc)) from None

    return step


def _not_a_number(column: str, value: Any, kind: str) -> BadRow:
    if isinstance(value, bytes | str):
        return BadRow(column, f"text {_preview(value)} in a numeric column (field is {kind})")
    return BadRow(column, f"unsupported value type {value.__class__.__name__} (field is {kind})")


def _identifier_problem(value: str) -> str:
    if not value:
        return "empty; an identifier needs at least one character"
    for bad in ("/", "\\", ".."):
        if bad in value:
            return f"{_preview(value)} contains {bad!r}"
    for ch in value:
        if ch.isspace():
            return f"{_preview(value)} contains whitespace {ch!a}"
        if not ch.isprintable():
            return f"{_preview(value)} contains control character U+{ord(ch):04X}"
    return f"{_preview(value)} is not a safe identifier"


def _preview(value: Any) -> str:
    """A short ASCII-only rendering of a value for a reason string (DLQ headers)."""
    text = ascii(value)
    if len(text) <= _PREVIEW_CHARS:
        return text
    return text[: _PREVIEW_CHARS - 3] + "..."
