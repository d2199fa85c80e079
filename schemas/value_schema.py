"""The Avro value schema for one SQLite table: the contract of topic `sensors.readings` values.

`sensor_readings` starts from the curated `sensor_reading.avsc`; any other table gets a record
derived from its columns (DESIGN section 4). Either way a column the starting schema lacks (one
added to SQLite later) is appended as `["null", T]` with default null, so the new version is
BACKWARD compatible: a consumer on the new version still reads records written with the old one.
A field whose column is gone (dropped or renamed at the source, or a node whose table has fewer
columns) is left out: removing a field is BACKWARD compatible too. A field keeps the type it
was registered with, whatever the column's declared type becomes: the lake's column has that
type, and a Delta table cannot change a column's type in place (see `coercions` for the values).

Nodes of one fleet may have tables of different shapes that all produce into one subject, which
the registry checks against its latest version only. `optional=True` builds the form that fits
any neighbour: every column field `["null", T]` with default null, the record name and the types
of the latest version. Which values must be present is then the producer's check
(`required_columns`), not the schema's.

Column names that are not valid Avro names (Avro allows `[A-Za-z_][A-Za-z0-9_]*`; the schema
registry and Java consumers reject anything else, fastavro does not check) are SANITISED, not
refused: every other character becomes '_', a leading digit gets a '_' prefix, and the original
name is kept in the field's custom attribute `sqlite_column` (not in "aliases": aliases must be
valid Avro names too). The mapping is deterministic, so the same table always gives the same
schema. Two columns that sanitise to the same name (case-insensitively, as Delta and Spark
compare column names), or a column named like a provenance field, are a ConfigError.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import fastavro

from schemas.sqlite_columns import Column, fold_name
from sensorstream.errors import ConfigError

CURATED_TABLE = "sensor_readings"
CURATED_SCHEMA_FILE = "sensor_reading.avsc"
DERIVED_NAMESPACE = "sensorstream.derived"
SQLITE_COLUMN_ATTR = "sqlite_column"
"""Custom field attribute holding the SQLite column name when it differs from the field name."""
SQLITE_TABLE_ATTR = "sqlite_table"
"""Custom record attribute of derived schemas: the SQLite table the record was derived from."""
TIMESTAMP_MICROS: dict[str, str] = {"type": "long", "logicalType": "timestamp-micros"}

PROVENANCE_FIELDS: tuple[dict[str, Any], ...] = (
    {
        "name": "_node_id",
        "type": "string",
        "doc": "Provenance: edge node that produced the record.",
    },
    {"name": "_region", "type": "string", "doc": "Provenance: region of the edge node."},
    {
        "name": "_source_table",
        "type": "string",
        "doc": "Provenance: SQLite table the row came from.",
    },
    {
        "name": "_source_rowid",
        "type": "long",
        "doc": "Provenance: rowid of the row in the source table.",
    },
)
PROVENANCE_NAMES: tuple[str, ...] = tuple(f["name"] for f in PROVENANCE_FIELDS)


def missing_provenance(schema: Any) -> list[str]:
    """The provenance fields `schema` lacks: a record without them is not a reading (it did not
    come from a producer), whatever else it holds. A schema that is not a record lacks all."""
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        return list(PROVENANCE_NAMES)
    names = {field.get("name") for field in fields if isinstance(field, dict)}
    return [name for name in PROVENANCE_NAMES if name not in names]


_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AVRO_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
_PARSED_CACHE_LIMIT = 256
_parsed: dict[str, dict[str, Any]] = {}


def value_schema_for(
    table: str,
    columns: Sequence[Column],
    timestamp_column: str,
    *,
    previous: dict[str, Any] | None = None,
    optional: bool = False,
) -> dict[str, Any]:
    """The Avro record schema (a new dict) for rows of `table` with these `columns`.

    The starting schema is `previous` when given (this node's previous version, or the
    subject's latest: its fields keep their order and types), else the curated schema for
    `sensor_readings`, else none, and every field is derived from `columns`. Fields of the
    starting schema whose column the table lacks are left out; columns the starting schema
    lacks are appended nullable. `previous` matters for derived tables: without it, a NOT NULL
    column added later would come out non-null without a default, which BACKWARD
    compatibility forbids. `optional` makes every column field nullable with default null.

    `timestamp_column` becomes a `timestamp-micros` field (non-null unless `optional`): event
    time is required (the lake partitions by it), so a NULL there is a bad row, whatever SQLite
    allows. Provenance fields always come last. Raises ConfigError when the starting schema has
    the event-time column as another type, or when names collide.
    """
    by_name = {fold_name(c.name): c for c in columns}
    ts_column = by_name.get(fold_name(timestamp_column))
    if ts_column is None:
        raise ConfigError(
            f"timestamp column {timestamp_column!r} is not a column of table {table!r} "
            f"(columns: {', '.join(c.name for c in columns)})"
        )
    if previous is not None:
        start, origin = copy.deepcopy(previous), "the previous schema version"
    elif fold_name(table) == CURATED_TABLE:
        start, origin = curated_schema(), f"the curated schema schemas/{CURATED_SCHEMA_FILE}"
    else:
        start, origin = None, ""

    if start is None:
        schema = {
            "type": "record",
            "name": _record_name(table),
            "namespace": DERIVED_NAMESPACE,
            "doc": f"Rows of SQLite table {table!r}, derived from its columns, plus provenance.",
            SQLITE_TABLE_ATTR: table,
        }
        fields = [_derived_field(c, c is ts_column) for c in columns]
    else:
        schema = {key: value for key, value in start.items() if key != "fields"}
        fields = _kept_fields(start, by_name, ts_column, table, origin)
        kept = {fold_name(f.get(SQLITE_COLUMN_ATTR, f["name"])) for f in fields}
        fields += [
            _derived_field(c, True) if c is ts_column else _added_field(c)
            for c in columns
            if fold_name(c.name) not in kept
        ]
    if optional:
        fields = [optional_field(f) for f in fields]
    fields += copy.deepcopy(list(PROVENANCE_FIELDS))
    _check_unique(fields, table)
    schema["fields"] = fields
    return schema


@cache
def _curated_text() -> str:
    return (resources.files("schemas") / CURATED_SCHEMA_FILE).read_text(encoding="utf-8")


def curated_schema() -> dict[str, Any]:
    """A fresh copy of the curated `sensor_readings` schema (callers may change it)."""
    return json.loads(_curated_text())


def avro_name(name: str) -> str:
    """`name` as a valid Avro name: itself when valid, else deterministically sanitised."""
    if _AVRO_NAME.fullmatch(name):
        return name
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """SHA-256 of the schema's JSON with sorted keys: equal for equal dicts, whatever the order.

    Not the Avro "parsing canonical form" fingerprint: that drops defaults, and two schemas
    that differ only in defaults read old data differently, so they must not share a cache slot.
    """
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parsed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`fastavro.parse_schema(schema)`, parsed once per fingerprint and shared: do not mutate.

    Parsing costs milliseconds and a producer asks again for every batch; the fingerprint costs
    microseconds. Hold on to the result in a per-row loop rather than calling this per row.
    """
    key = schema_fingerprint(schema)
    parsed = _parsed.get(key)
    if parsed is None:
        parsed = fastavro.parse_schema(copy.deepcopy(schema))
        if len(_parsed) >= _PARSED_CACHE_LIMIT:
            _parsed.clear()
        _parsed[key] = parsed
    return parsed


def is_timestamp_field(field: dict[str, Any]) -> bool:
    """True for a field whose type is long `timestamp-micros`, nullable or not."""
    kind = field_type(field)
    return isinstance(kind, dict) and kind.get("logicalType") == "timestamp-micros"


def required_columns(
    table: str, columns: Sequence[Column], timestamp_column: str
) -> frozenset[str]:
    """The columns (folded names) whose values must not be NULL, whatever the schema allows.

    The event-time column, the columns SQLite guarantees non-null, and for `sensor_readings`
    the curated schema's non-null fields. The producer checks these row by row (a NULL is a
    dead letter), so the topic's schema may leave them nullable (`optional`).
    """
    required = {fold_name(timestamp_column)}
    required |= {fold_name(c.name) for c in columns if c.not_null}
    if fold_name(table) == CURATED_TABLE:
        required |= {
            fold_name(f.get(SQLITE_COLUMN_ATTR, f["name"]))
            for f in curated_schema()["fields"]
            if f["name"] not in PROVENANCE_NAMES and not isinstance(f["type"], list)
        }
    present = {fold_name(c.name) for c in columns}
    return frozenset(required & present)


def field_type(field: dict[str, Any]) -> Any:
    """The field's type without its null branch (`["null", T]` -> T; other unions as they are)."""
    kind = field["type"]
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        return others[0] if len(others) == 1 else kind
    return kind


def column_of(field: dict[str, Any]) -> str:
    """The SQLite column a field holds (its `sqlite_column` attribute, else its name)."""
    return field.get(SQLITE_COLUMN_ATTR, field["name"])


def optional_field(field: dict[str, Any]) -> dict[str, Any]:
    """`field` as `["null", T]` with default null: readable whether a writer has it or not,
    and able to read it whether the writer's is nullable or not."""
    kind = field["type"]
    if isinstance(kind, list) and "null" in kind:
        branches = ["null", *(k for k in kind if k != "null")]
    else:
        branches = ["null", *(kind if isinstance(kind, list) else [kind])]
    return {**field, "type": branches, "default": None}


def _kept_fields(
    start: dict[str, Any],
    by_name: dict[str, Column],
    ts_column: Column,
    table: str,
    origin: str,
) -> list[dict[str, Any]]:
    """The starting schema's fields whose column the table still has.

    A field without a column (dropped, renamed, or a table with fewer columns) is left out.
    The event-time column may be new, but a field the starting schema has for it must be a
    timestamp: the same column cannot be event time here and a plain value in the lake.
    """
    fields = [
        f
        for f in start["fields"]
        if f["name"] not in PROVENANCE_NAMES and fold_name(column_of(f)) in by_name
    ]
    for field in fields:
        if fold_name(column_of(field)) == fold_name(ts_column.name) and not is_timestamp_field(
            field
        ):
            found = [column_of(f) for f in start["fields"] if is_timestamp_field(f)]
            raise ConfigError(
                f"{origin} has column {ts_column.name!r} as a plain value, not as event time "
                f"(its event time is {', '.join(found) or 'no column'}; table {table!r}); "
                "drop --timestamp-col or use that column"
            )
    return fields


def _derived_field(column: Column, is_timestamp: bool) -> dict[str, Any]:
    declared = column.declared_type or "no declared type"
    field: dict[str, Any] = {"name": avro_name(column.name)}
    if is_timestamp:
        field["type"] = dict(TIMESTAMP_MICROS)
        field["doc"] = f"Event time from SQLite column {column.name!r} ({declared}), UTC."
    elif column.not_null:
        field["type"] = column.avro_type
        field["doc"] = f"SQLite column {column.name!r} ({declared}, NOT NULL)."
    else:
        field["type"] = ["null", column.avro_type]
        field["doc"] = f"SQLite column {column.name!r} ({declared})."
        field["default"] = None
    if field["name"] != column.name:
        field[SQLITE_COLUMN_ATTR] = column.name
    return field


def _added_field(column: Column) -> dict[str, Any]:
    declared = column.declared_type or "no declared type"
    field: dict[str, Any] = {
        "name": avro_name(column.name),
        "type": ["null", column.avro_type],
        "doc": f"SQLite column {column.name!r} ({declared}), added to the table later; "
        "null in records written before.",
        "default": None,
    }
    if field["name"] != column.name:
        field[SQLITE_COLUMN_ATTR] = column.name
    return field


def _record_name(table: str) -> str:
    name = avro_name(table)
    return name + "_" if name in _AVRO_PRIMITIVES else name


def _check_unique(fields: list[dict[str, Any]], table: str) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for field in fields:
        key = field["name"].lower()
        other = seen.get(key)
        if other is not None:
            first = other.get(SQLITE_COLUMN_ATTR, other["name"])
            second = field.get(SQLITE_COLUMN_ATTR, field["name"])
            what = (
                f"the provenance field {field['name']!r}"
                if field["name"] in PROVENANCE_NAMES
                else f"column {second!r}"
            )
            raise ConfigError(
                f"table {table!r}: column {first!r} and {what} both map to Avro field "
                f"{field['name']!r} (names compare case-insensitively in the lake); "
                "rename one of the columns"
            )
        seen[key] = field
