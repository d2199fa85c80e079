"""The curated schema against the DESIGN table, derived schemas, evolution and name handling."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.read import SchemaResolutionError

from schemas.sqlite_columns import detect_timestamp_column, introspect
from schemas.value_schema import (
    DERIVED_NAMESPACE,
    PROVENANCE_FIELDS,
    PROVENANCE_NAMES,
    SQLITE_COLUMN_ATTR,
    avro_name,
    curated_schema,
    parsed_schema,
    required_columns,
    schema_fingerprint,
    value_schema_for,
)
from sensorstream.errors import ConfigError
from tests.unit.schemas.test_schemas_columns import DESIGN_DDL

AVSC = Path(__file__).resolve().parents[3] / "schemas" / "sensor_reading.avsc"
AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SQLITE_TO_AVRO = {"INTEGER": "long", "REAL": "double", "TEXT": "string"}


def _db(*statements: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    return conn


def _schema_for(conn: sqlite3.Connection, table: str, **kwargs: Any) -> dict[str, Any]:
    columns = introspect(conn, table)
    return value_schema_for(table, columns, detect_timestamp_column(columns), **kwargs)


def _write(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(schema), record)
    return buffer.getvalue()


def _read(data: bytes, writer: dict[str, Any], reader: dict[str, Any]) -> dict[str, Any]:
    return fastavro.schemaless_reader(
        io.BytesIO(data), parsed_schema(writer), parsed_schema(reader)
    )


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_curated_avsc_parses_and_matches_the_design_table() -> None:
    schema = json.loads(AVSC.read_text())
    fastavro.parse_schema(schema)
    assert (schema["type"], schema["name"], schema["namespace"]) == (
        "record",
        "SensorReading",
        "sensorstream",
    )
    columns = introspect(_db(DESIGN_DDL), "sensor_readings")
    source_fields = schema["fields"][: len(columns)]
    assert [f["name"] for f in source_fields] == [c.name for c in columns]

    for column, field in zip(columns, source_fields, strict=True):
        assert field["doc"], field["name"]
        if column.name == "timestamp":
            assert field["type"] == {"type": "long", "logicalType": "timestamp-micros"}
        elif column.not_null:
            assert field["type"] == SQLITE_TO_AVRO[column.declared_type], column.name
            assert "default" not in field
        else:
            assert field["type"] == ["null", SQLITE_TO_AVRO[column.declared_type]], column.name
            assert "default" in field and field["default"] is None
    assert _field(schema, "id")["type"] == "long"
    assert _field(schema, "anomaly_flag")["type"] == ["null", "long"]

    provenance = schema["fields"][len(columns) :]
    assert provenance == list(PROVENANCE_FIELDS)
    assert [(f["name"], f["type"]) for f in provenance] == [
        ("_node_id", "string"),
        ("_region", "string"),
        ("_source_table", "string"),
        ("_source_rowid", "long"),
    ]


def test_design_table_gets_exactly_the_curated_schema() -> None:
    schema = _schema_for(_db(DESIGN_DDL), "sensor_readings")
    assert schema == curated_schema()


def test_added_column_is_appended_nullable_and_backward_compatible() -> None:
    conn = _db(DESIGN_DDL)
    old = _schema_for(conn, "sensor_readings")
    conn.execute("ALTER TABLE sensor_readings ADD COLUMN battery_level REAL")
    conn.execute("ALTER TABLE sensor_readings ADD COLUMN site TEXT NOT NULL DEFAULT 'x'")
    new = _schema_for(conn, "sensor_readings")

    names = [f["name"] for f in new["fields"]]
    assert names[-6:] == ["battery_level", "site", *PROVENANCE_NAMES]
    assert _field(new, "battery_level")["type"] == ["null", "double"]
    assert _field(new, "site") | {"doc": ""} == {
        "name": "site",
        "type": ["null", "string"],
        "default": None,
        "doc": "",
    }
    assert new["fields"][:-6] == old["fields"][:-4]

    old_record = {f["name"]: None for f in old["fields"]} | {
        "id": 7,
        "timestamp": 1_714_566_896_789_012,
        "sensor_id": "s-1",
        "temperature": 21.5,
        "_node_id": "n1",
        "_region": "eu",
        "_source_table": "sensor_readings",
        "_source_rowid": 7,
    }
    read = _read(_write(old, old_record), writer=old, reader=new)
    assert read["battery_level"] is None and read["site"] is None
    assert read["temperature"] == 21.5 and read["id"] == 7
    fastavro.parse_schema(old)  # the old version is still a valid schema


def test_sensor_readings_with_fewer_columns_gets_the_curated_fields_it_has() -> None:
    conn = _db(DESIGN_DDL.replace("vibration REAL,", "").replace("model TEXT,", ""))
    schema = _schema_for(conn, "sensor_readings")
    curated = curated_schema()
    assert schema["name"] == curated["name"]
    assert schema["fields"] == [
        f for f in curated["fields"] if f["name"] not in ("vibration", "model")
    ]


def test_optional_form_makes_every_column_field_nullable_with_default_null() -> None:
    conn = _db(DESIGN_DDL)
    columns = introspect(conn, "sensor_readings")
    schema = value_schema_for("sensor_readings", columns, "timestamp", optional=True)
    fastavro.parse_schema(schema)
    for field in schema["fields"]:
        if field["name"] in PROVENANCE_NAMES:
            assert not isinstance(field["type"], list)
        else:
            assert field["type"][0] == "null" and field["default"] is None, field["name"]
    assert _field(schema, "timestamp")["type"] == [
        "null",
        {"type": "long", "logicalType": "timestamp-micros"},
    ]
    assert required_columns("sensor_readings", columns, "timestamp") == {
        "id",
        "timestamp",
        "sensor_id",
    }


def test_another_nodes_latest_version_gives_name_and_types() -> None:
    """A node whose table has another name and shape evolves from the subject's latest."""
    latest = _schema_for(_db(DESIGN_DDL), "sensor_readings")
    conn = _db(
        "CREATE TABLE readings(rid INTEGER PRIMARY KEY, ts TEXT NOT NULL, sensor_id TEXT, "
        "temperature INTEGER, battery REAL)"
    )
    columns = introspect(conn, "readings")
    schema = value_schema_for("readings", columns, "ts", previous=latest, optional=True)
    assert (schema["name"], schema["namespace"]) == ("SensorReading", "sensorstream")
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["temperature"] == ["null", "double"]  # the fleet's type, not INTEGER's long
    assert types["ts"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert types["battery"] == ["null", "double"]
    assert "timestamp" not in types and "humidity" not in types
    assert required_columns("readings", columns, "ts") == {"rid", "ts"}
    # Records of either shape read with the other's schema: BACKWARD both ways.
    record = {"rid": 3, "ts": 1_714_566_896_000_000, "sensor_id": "s", "temperature": 20.0}
    record |= {"battery": 3.5, "_node_id": "n", "_region": "r", "_source_table": "readings"}
    record |= {"_source_rowid": 3}
    optional_latest = value_schema_for(
        "sensor_readings",
        introspect(_db(DESIGN_DDL), "sensor_readings"),
        "timestamp",
        optional=True,
    )
    read = _read(_write(schema, record), writer=schema, reader=optional_latest)
    assert read["timestamp"] is None and read["temperature"] == 20.0


def test_curated_table_takes_event_time_from_timestamp_only() -> None:
    conn = _db(DESIGN_DDL)
    columns = introspect(conn, "sensor_readings")
    with pytest.raises(ConfigError, match=r"'model' as a plain value, not as event time"):
        value_schema_for("sensor_readings", columns, "model")
    with pytest.raises(ConfigError, match=r"'nope' is not a column"):
        value_schema_for("sensor_readings", columns, "nope")


def test_derived_schema_for_another_table() -> None:
    conn = _db(
        "CREATE TABLE machine_events(id INTEGER PRIMARY KEY, created_at TEXT, "
        "machine TEXT NOT NULL, rpm INTEGER, load NUMERIC, payload BLOB, note)"
    )
    schema = _schema_for(conn, "machine_events")
    fastavro.parse_schema(schema)

    assert (schema["name"], schema["namespace"]) == ("machine_events", DERIVED_NAMESPACE)
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types == {
        "id": "long",
        "created_at": {"type": "long", "logicalType": "timestamp-micros"},
        "machine": "string",
        "rpm": ["null", "long"],
        "load": ["null", "double"],
        "payload": ["null", "bytes"],
        "note": ["null", "bytes"],
        "_node_id": "string",
        "_region": "string",
        "_source_table": "string",
        "_source_rowid": "long",
    }
    assert all(f.get("doc") for f in schema["fields"])
    assert all(f["default"] is None for f in schema["fields"] if isinstance(f["type"], list))


def test_derived_schema_evolves_backward_compatibly_with_previous_version() -> None:
    conn = _db("CREATE TABLE t(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, v REAL NOT NULL)")
    v1 = _schema_for(conn, "t")
    conn.execute("ALTER TABLE t ADD COLUMN unit TEXT NOT NULL DEFAULT 'C'")

    v2 = _schema_for(conn, "t", previous=v1)
    assert v2["fields"][:3] == v1["fields"][:3]
    assert _field(v2, "unit")["type"] == ["null", "string"]
    record = {"id": 1, "ts": 1_714_566_896_000_000, "v": 2.5, "_node_id": "n", "_region": "r"}
    record |= {"_source_table": "t", "_source_rowid": 1}
    read = _read(_write(v1, record), writer=v1, reader=v2)
    assert read == record | {"ts": datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC), "unit": None}

    # Without the previous version the NOT NULL column would have no default: not BACKWARD.
    fresh = _schema_for(conn, "t")
    assert _field(fresh, "unit")["type"] == "string"
    with pytest.raises(SchemaResolutionError):
        _read(_write(v1, record), writer=v1, reader=fresh)


def test_dropped_or_renamed_column_leaves_the_schema_and_types_stay() -> None:
    v1 = _schema_for(_db("CREATE TABLE t(ts INTEGER, a REAL, b REAL NOT NULL, c TEXT)"), "t")
    conn = _db("CREATE TABLE t(ts INTEGER, a INTEGER, c TEXT, b2 REAL)")  # a retyped, b renamed
    v2 = _schema_for(conn, "t", previous=v1)
    assert [f["name"] for f in v2["fields"][:-4]] == ["ts", "a", "c", "b2"]
    assert _field(v2, "a")["type"] == ["null", "double"]  # the lake's column keeps its type
    assert _field(v2, "b2")["type"] == ["null", "double"]
    record = {"ts": 1_714_566_896_000_000, "a": 1.5, "b": 2.0, "c": "x", "_node_id": "n"}
    record |= {"_region": "r", "_source_table": "t", "_source_rowid": 1}
    read = _read(_write(v1, record), writer=v1, reader=v2)  # BACKWARD: v2 reads v1's records
    assert "b" not in read and read["b2"] is None and read["a"] == 1.5


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("flow-rate", "flow_rate"),
        ("temp C", "temp_C"),
        ("1st reading", "_1st_reading"),
        ("température", "temp_rature"),
        ("", "_"),
        ("ok_name", "ok_name"),
    ],
)
def test_avro_name_sanitises_deterministically(column: str, field: str) -> None:
    assert avro_name(column) == field
    assert AVRO_NAME.fullmatch(avro_name(column))


def test_invalid_names_are_sanitised_and_the_original_kept() -> None:
    conn = _db('CREATE TABLE "my-table 2"(ts TEXT, "flow-rate" REAL, "temp C" TEXT, ok TEXT)')
    schema = _schema_for(conn, "my-table 2")
    fastavro.parse_schema(schema)

    assert schema["name"] == "my_table_2" and schema["sqlite_table"] == "my-table 2"
    assert all(AVRO_NAME.fullmatch(f["name"]) for f in schema["fields"])
    assert _field(schema, "flow_rate")[SQLITE_COLUMN_ATTR] == "flow-rate"
    assert _field(schema, "temp_C")[SQLITE_COLUMN_ATTR] == "temp C"
    assert SQLITE_COLUMN_ATTR not in _field(schema, "ok")
    assert _schema_for(conn, "my-table 2") == schema  # deterministic


def test_names_that_collide_after_sanitising_are_an_error() -> None:
    conn = _db('CREATE TABLE t(ts TEXT, "a-b" REAL, "A b" REAL)')
    with pytest.raises(ConfigError, match=r"column 'a-b' and column 'A b' both map"):
        _schema_for(conn, "t")


def test_column_named_like_a_provenance_field_is_an_error() -> None:
    conn = _db("CREATE TABLE t(ts TEXT, _Region TEXT)")
    with pytest.raises(ConfigError, match=r"'_Region' and the provenance field '_region'"):
        _schema_for(conn, "t")


def test_table_named_like_an_avro_primitive_gets_a_valid_record_name() -> None:
    schema = _schema_for(_db("CREATE TABLE long(ts INTEGER)"), "long")
    assert schema["name"] == "long_"


def test_parsed_schema_is_cached_by_fingerprint() -> None:
    schema = curated_schema()
    reordered = {key: schema[key] for key in reversed(list(schema))}
    assert schema_fingerprint(schema) == schema_fingerprint(reordered)
    assert parsed_schema(schema) is parsed_schema(reordered)

    changed = curated_schema()
    _field(changed, "temperature")["default"] = None
    _field(changed, "temperature")["type"] = ["null", "float"]
    assert parsed_schema(changed) is not parsed_schema(schema)
    assert parsed_schema(schema)["name"] == "sensorstream.SensorReading"
