"""Row → record conversion on rows read from real SQLite databases, good and bad."""

from __future__ import annotations

import io
import math
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas.coercions import MAX_ROW_BYTES, BadRow, RowConverter, safe_identifier
from schemas.sqlite_columns import detect_timestamp_column, introspect, quote_identifier
from schemas.value_schema import parsed_schema, required_columns, value_schema_for
from sensorstream.errors import ConfigError
from tests.unit.schemas.test_schemas_columns import DESIGN_DDL

GOOD = {
    "timestamp": "2024-05-01T12:34:56.789012Z",
    "sensor_id": "SENSOR_0001",
    "temperature": 21.5,
    "humidity": 45.25,
    "pressure": 1013.2,
    "vibration": 0.12,
    "voltage": 12.1,
    "status_code": 0,
    "anomaly_flag": 0,
    "anomaly_type": None,
    "firmware_version": "1.4.2",
    "model": "TempVibe-3000",
    "manufacturer": "SensorTech",
    "location": "Fabrik Süd, Halle 3",
    "latitude": 52.52,
    "longitude": 13.405,
    "original_timezone": "Europe/Berlin",
    "serial_number": "SN-123456",
    "manufacture_date": "2021-03-01",
    "deployment_type": "fixed",
    "installation_date": "2022-06-15",
    "height_meters": 2.5,
    "orientation_degrees": 180.0,
    "instance_id": "node-a-1",
    "sensor_type": "temperature",
}
PROVENANCE = {"node_id": "edge-7", "region": "eu-west", "source_table": "sensor_readings"}


class Table:
    """A real SQLite table plus the converter for it, reading with text_factory = bytes."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        timestamp_column: str | None = None,
        **converter_args: Any,
    ) -> None:
        self.conn, self.name = conn, name
        self.columns = introspect(conn, name)
        ts = detect_timestamp_column(self.columns, timestamp_column, table=name)
        self.schema = value_schema_for(name, self.columns, ts)
        args = PROVENANCE | {"source_table": name} | converter_args
        self.converter = RowConverter(self.schema, self.columns, **args)

    def insert(self, **values: Any) -> int:
        names = ", ".join(quote_identifier(n) for n in values)
        marks = ", ".join("?" * len(values))
        table = quote_identifier(self.name)
        cursor = self.conn.execute(
            f"INSERT INTO {table}({names}) VALUES ({marks})", tuple(values.values())
        )
        return cursor.lastrowid

    def row(self, rowid: int) -> tuple[Any, ...]:
        self.conn.text_factory = bytes
        try:
            columns = ", ".join(quote_identifier(c.name) for c in self.columns)
            table = quote_identifier(self.name)
            return self.conn.execute(
                f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)
            ).fetchone()
        finally:
            self.conn.text_factory = str

    def convert(self, rowid: int) -> dict[str, Any]:
        return self.converter.convert(self.row(rowid), rowid)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "edge.db")
    yield connection
    connection.close()


@pytest.fixture
def readings(conn: sqlite3.Connection) -> Table:
    conn.execute(DESIGN_DDL)
    return Table(conn, "sensor_readings")


def _roundtrip(schema: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(schema), record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, parsed_schema(schema), parsed_schema(schema))


def _bad(table: Table, rowid: int) -> BadRow:
    with pytest.raises(BadRow) as caught:
        table.convert(rowid)
    assert caught.value.reason.isascii()
    return caught.value


def test_good_row_round_trips_through_avro(readings: Table) -> None:
    rowid = readings.insert(**GOOD)

    record = readings.convert(rowid)

    expected = GOOD | {
        "id": rowid,
        "timestamp": datetime(2024, 5, 1, 12, 34, 56, 789012, tzinfo=UTC),
        "_node_id": "edge-7",
        "_region": "eu-west",
        "_source_table": "sensor_readings",
        "_source_rowid": rowid,
    }
    assert record["timestamp"] == 1_714_566_896_789_012
    assert _roundtrip(readings.schema, record) == expected


def test_minimal_row_with_nulls_and_epoch_timestamp(readings: Table) -> None:
    rowid = readings.insert(timestamp=1_714_566_896_789, sensor_id="s1")
    record = readings.convert(rowid)
    assert record["timestamp"] == 1_714_566_896_789_000
    assert record["anomaly_flag"] == 0  # the column DEFAULT
    assert record["temperature"] is None and record["location"] is None
    assert _roundtrip(readings.schema, record)["sensor_id"] == "s1"


def test_exact_conversions_are_kept(readings: Table) -> None:
    # 2.0 in an INTEGER column is stored as 2; an integer in a REAL column as 21.0.
    rowid = readings.insert(**GOOD | {"status_code": 2.0, "temperature": 21})
    record = readings.convert(rowid)
    assert record["status_code"] == 2 and type(record["status_code"]) is int
    assert record["temperature"] == 21.0 and type(record["temperature"]) is float


def test_null_where_the_schema_requires_a_value(conn: sqlite3.Connection) -> None:
    conn.execute(DESIGN_DDL.replace("sensor_id TEXT NOT NULL", "sensor_id TEXT"))
    table = Table(conn, "sensor_readings")
    bad = _bad(table, table.insert(**GOOD | {"sensor_id": None}))
    assert (bad.column, bad.reason) == ("sensor_id", "NULL, but the value schema requires a value")


def test_null_in_a_not_null_column(tmp_path: Path) -> None:
    # SQLite enforces NOT NULL on write, but a database whose schema was edited afterwards
    # (writable_schema, old tools) can still hold NULLs there.
    path = tmp_path / "edited.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, ts TEXT NOT NULL, v REAL)")
    conn.execute("INSERT INTO t VALUES (1, '2024-05-01T00:00:00Z', NULL)")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = "
        "'CREATE TABLE t(id INTEGER PRIMARY KEY, ts TEXT NOT NULL, v REAL NOT NULL)' "
        "WHERE name = 't'"
    )
    conn.commit()
    conn.close()
    with closing(sqlite3.connect(path)) as reopened:
        table = Table(reopened, "t")
        assert table.columns[2].not_null
        bad = _bad(table, 1)
    assert (bad.column, bad.reason) == ("v", "NULL in a NOT NULL column")


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("status_code", "abc", r"text b'abc' in a numeric column \(field is long\)"),
        ("status_code", "", r"text b'' in a numeric column"),
        ("anomaly_flag", "yes", r"text b'yes' in a numeric column"),
        ("temperature", "hot", r"text b'hot' in a numeric column \(field is double\)"),
        ("temperature", "NaN", r"text b'NaN' in a numeric column"),
        ("status_code", 1.5, r"REAL 1.5 has a fractional part \(field is long\)"),
        ("status_code", 1e300, r"outside the 64-bit range"),
        ("status_code", math.inf, r"inf is not a finite number \(field is long\)"),
        ("temperature", math.inf, r"^inf is not a finite number"),
        ("humidity", -math.inf, r"^-inf is not a finite number"),
        ("timestamp", "yesterday", r"'yesterday' is neither ISO-8601 nor an epoch number"),
        ("timestamp", "1999-12-31T23:59:59Z", r"before 2000-01-01"),
        ("timestamp", "2999-01-01T00:00:00Z", r"after now"),
        ("timestamp", 1e300, r"too large"),
    ],
)
def test_bad_values(readings: Table, column: str, value: Any, reason: str) -> None:
    rowid = readings.insert(**GOOD | {column: value})
    bad = _bad(readings, rowid)
    assert bad.column == column
    assert re.search(reason, bad.reason), bad.reason
    assert str(bad) == f"column {column!r}: {bad.reason}"


def test_nan_never_reaches_the_converter_from_sqlite_but_is_rejected(readings: Table) -> None:
    # SQLite stores a NaN parameter as NULL; a NaN can only come from elsewhere.
    rowid = readings.insert(**GOOD | {"temperature": math.nan})
    assert readings.convert(rowid)["temperature"] is None
    row = list(readings.row(rowid))
    row[3] = math.nan
    with pytest.raises(BadRow, match=r"'temperature': nan is not a finite number"):
        readings.converter.convert(tuple(row), rowid)


def test_non_utf8_text_is_a_bad_row_not_a_failed_fetch(readings: Table) -> None:
    rowid = readings.insert(**GOOD)
    readings.conn.execute(
        "UPDATE sensor_readings SET location = CAST(X'46C3FF28' AS TEXT) WHERE rowid = ?",
        (rowid,),
    )
    with pytest.raises(sqlite3.OperationalError, match="Could not decode to UTF-8"):
        readings.conn.execute("SELECT location FROM sensor_readings").fetchall()

    bad = _bad(readings, rowid)
    assert bad.column == "location"
    assert bad.reason.startswith("text is not valid UTF-8 (invalid continuation byte at byte 1)")
    assert "b'F\\xc3\\xff('" in bad.reason


@pytest.mark.parametrize(
    ("sensor_id", "problem"),
    [
        ("a/b", r"contains '/'"),
        ("..", r"contains '\.\.'"),
        ("x..y", r"contains '\.\.'"),
        ("a\\b", r"contains '\\\\'"),
        ("a b", r"contains whitespace ' '"),
        ("a\tb", r"contains whitespace '\\t'"),
        ("a\u3000b", r"contains whitespace '\\u3000'"),
        ("a\x1bb", r"contains control character U\+001B"),
        ("a\x00b", r"contains control character U\+0000"),
        ("a\u200bb", r"contains control character U\+200B"),  # zero-width space (Cf)
        ("", r"empty"),
    ],
)
def test_unsafe_sensor_ids(readings: Table, sensor_id: str, problem: str) -> None:
    bad = _bad(readings, readings.insert(**GOOD | {"sensor_id": sensor_id}))
    assert bad.column == "sensor_id"
    assert re.search(problem, bad.reason), bad.reason


@pytest.mark.parametrize("sensor_id", ["SENSOR-01", "s.1_a", "ñandú-7", "42"])
def test_safe_sensor_ids(readings: Table, sensor_id: str) -> None:
    assert readings.convert(readings.insert(**GOOD | {"sensor_id": sensor_id}))["sensor_id"] == (
        sensor_id
    )
    assert safe_identifier(sensor_id, "sensor_id") == sensor_id


def test_region_column_of_a_derived_table_is_checked(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE obs(ts TEXT NOT NULL, region TEXT, v REAL)")
    table = Table(conn, "obs")
    ok = table.insert(ts="2024-05-01T00:00:00Z", region="eu-west", v=1.0)
    assert table.convert(ok)["region"] == "eu-west"
    assert table.convert(table.insert(ts="2024-05-01T00:00:00Z", region=None))["region"] is None
    bad = _bad(table, table.insert(ts="2024-05-01T00:00:00Z", region="../etc", v=1.0))
    assert bad.column == "region" and "'/'" in bad.reason


@pytest.mark.parametrize(
    ("arg", "value"), [("node_id", "a/b"), ("region", "eu west"), ("region", "")]
)
def test_unsafe_provenance_arguments_are_config_errors(
    readings: Table, arg: str, value: str
) -> None:
    with pytest.raises(ConfigError, match="is not usable"):
        RowConverter(readings.schema, readings.columns, **PROVENANCE | {arg: value})


def test_oversized_row(readings: Table) -> None:
    big = readings.insert(**GOOD | {"location": "x" * MAX_ROW_BYTES})
    bad = _bad(readings, big)
    assert bad.column == "location"
    assert f"above the limit of {MAX_ROW_BYTES} bytes" in bad.reason
    fits = readings.insert(**GOOD | {"location": "x" * (MAX_ROW_BYTES - 2000)})
    assert len(readings.convert(fits)["location"]) == MAX_ROW_BYTES - 2000


def test_row_limit_is_a_parameter_and_counts_encoded_bytes(conn: sqlite3.Connection) -> None:
    conn.execute(DESIGN_DDL)
    table = Table(conn, "sensor_readings", max_row_bytes=2000)
    assert table.convert(table.insert(**GOOD | {"model": "m" * 1000}))["model"] == "m" * 1000
    bad = _bad(table, table.insert(**GOOD | {"model": "m" * 1700}))
    assert bad.column == "model" and "above the limit of 2000 bytes" in bad.reason

    # str rows (default text_factory) are measured in UTF-8 bytes, not characters.
    rowid = table.insert(**GOOD | {"model": "é" * 900})
    row = conn.execute("SELECT * FROM sensor_readings WHERE rowid = ?", (rowid,)).fetchone()
    with pytest.raises(BadRow, match="above the limit"):
        table.converter.convert(row, rowid)


def test_blob_columns(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t(ts INTEGER NOT NULL, data BLOB, note)")
    table = Table(conn, "t")
    rowid = table.insert(ts=1_714_566_896, data=b"\x00\xff", note="text is fine")
    record = table.convert(rowid)
    assert (record["data"], record["note"]) == (b"\x00\xff", b"text is fine")
    assert _roundtrip(table.schema, record)["data"] == b"\x00\xff"
    bad = _bad(table, table.insert(ts=1_714_566_896, note=42))
    assert bad.column == "note" and "int 42 in a BLOB column" in bad.reason


def test_null_and_large_integers_in_derived_columns(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, created_at TEXT, amount NUMERIC)")
    table = Table(conn, "t")
    bad = _bad(table, table.insert(created_at=None, amount=1))
    assert (bad.column, bad.reason) == ("created_at", "NULL timestamp (event time is required)")
    ok = table.insert(created_at="2024-05-01T00:00:00Z", amount=2**53)
    assert table.convert(ok)["amount"] == float(2**53)
    bad = _bad(table, table.insert(created_at="2024-05-01T00:00:00Z", amount=2**53 + 1))
    assert bad.column == "amount" and "does not fit a double exactly" in bad.reason


def test_sanitised_names_round_trip(conn: sqlite3.Connection) -> None:
    conn.execute(
        'CREATE TABLE "machine-events"("event time" TEXT NOT NULL, "flow-rate" REAL, "temp C" TEXT)'
    )
    table = Table(conn, "machine-events", "event time")
    rowid = table.insert(**{"event time": "2024-05-01 12:34:56", "flow-rate": 3.5, "temp C": "hi"})

    record = table.convert(rowid)

    assert (record["flow_rate"], record["temp_C"]) == (3.5, "hi")
    back = _roundtrip(table.schema, record)
    assert back["event_time"] == datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
    assert back["flow_rate"] == 3.5 and back["_source_rowid"] == rowid


def test_added_column_flows_through(readings: Table) -> None:
    readings.conn.execute("ALTER TABLE sensor_readings ADD COLUMN battery REAL")
    table = Table(readings.conn, "sensor_readings")
    rowid = table.insert(**GOOD | {"battery": 3.7})
    record = table.convert(rowid)
    assert _roundtrip(table.schema, record)["battery"] == 3.7


def test_schema_and_columns_must_match(readings: Table) -> None:
    readings.conn.execute("ALTER TABLE sensor_readings ADD COLUMN battery REAL")
    columns = introspect(readings.conn, "sensor_readings")
    with pytest.raises(ConfigError, match=r"columns without a field: \['battery'\]"):
        RowConverter(readings.schema, columns, **PROVENANCE)


def test_wrong_row_width_is_a_caller_error(readings: Table) -> None:
    with pytest.raises(ValueError, match="row has 3 values, the table has 26 columns"):
        readings.converter.convert((1, b"x", b"y"), 1)


def test_required_columns_are_checked_where_the_optional_schema_takes_null() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE sensor_readings(id INTEGER PRIMARY KEY, timestamp TEXT, sensor_id TEXT)"
    )
    columns = introspect(conn, "sensor_readings")
    schema = value_schema_for("sensor_readings", columns, "timestamp", optional=True)
    converter = RowConverter(
        schema,
        columns,
        **PROVENANCE,
        required=required_columns("sensor_readings", columns, "timestamp"),
    )
    assert converter.convert((1, "2024-05-01T00:00:00Z", "s1"), 1)["sensor_id"] == "s1"
    with pytest.raises(BadRow, match="requires a value") as missing:
        converter.convert((1, "2024-05-01T00:00:00Z", None), 1)
    assert missing.value.column == "sensor_id"
    with pytest.raises(BadRow, match="event time is required"):
        converter.convert((1, None, "s1"), 1)
    free = RowConverter(schema, columns, **PROVENANCE)
    assert free.convert((1, "2024-05-01T00:00:00Z", None), 1)["sensor_id"] is None


def test_retyped_column_keeps_its_field_type_and_says_why_a_value_does_not_fit() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t(ts INTEGER, level INTEGER, note TEXT)")
    before = value_schema_for("t", introspect(conn, "t"), "ts")
    conn.execute("CREATE TABLE t2(ts INTEGER, level REAL, note INTEGER)")
    columns = [c for c in introspect(conn, "t2")]
    schema = value_schema_for("t", columns, "ts", previous=before)
    converter = RowConverter(schema, columns, **(PROVENANCE | {"source_table": "t"}))
    record = converter.convert((1_714_566_896, 3.0, 42), 1)
    assert (record["level"], record["note"]) == (3, "42")  # exact: streamed in the old type
    with pytest.raises(BadRow) as fractional:
        converter.convert((1_714_566_896, 3.5, 42), 2)
    assert "fractional part" in fractional.value.reason
    assert "declared REAL (Avro double) but its field in the topic's schema is long" in (
        fractional.value.reason
    )
    assert "new name" in fractional.value.reason
