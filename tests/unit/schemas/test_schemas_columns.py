"""SQLite introspection, the affinity → Avro mapping and timestamp-column detection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from schemas.sqlite_columns import (
    affinity,
    avro_type_for,
    detect_timestamp_column,
    introspect,
    quote_identifier,
    user_tables,
)
from sensorstream.errors import ConfigError

# The source table exactly as DESIGN section 4 gives it.
DESIGN_DDL = """CREATE TABLE sensor_readings(id INTEGER PRIMARY KEY AUTOINCREMENT,
timestamp TEXT NOT NULL /* ISO-8601 UTC */,
sensor_id TEXT NOT NULL, temperature REAL, humidity REAL, pressure REAL, vibration REAL,
voltage REAL, status_code INTEGER, anomaly_flag INTEGER DEFAULT 0, anomaly_type TEXT,
firmware_version TEXT, model TEXT, manufacturer TEXT, location TEXT, latitude REAL,
longitude REAL, original_timezone TEXT, serial_number TEXT, manufacture_date TEXT,
deployment_type TEXT, installation_date TEXT, height_meters REAL, orientation_degrees REAL,
instance_id TEXT, sensor_type TEXT)"""


def _db(*statements: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    return conn


def test_introspect_design_table() -> None:
    columns = introspect(_db(DESIGN_DDL), "sensor_readings")

    assert len(columns) == 26
    assert [c.name for c in columns[:4]] == ["id", "timestamp", "sensor_id", "temperature"]
    by_name = {c.name: c for c in columns}
    assert by_name["id"].primary_key and by_name["id"].not_null  # rowid alias: never NULL
    assert by_name["timestamp"].not_null and by_name["sensor_id"].not_null
    assert not by_name["temperature"].not_null and not by_name["anomaly_flag"].not_null
    assert by_name["id"].avro_type == "long"
    assert by_name["timestamp"].avro_type == "string"
    assert by_name["temperature"].avro_type == "double"
    assert by_name["anomaly_flag"].declared_type == "INTEGER"
    assert by_name["anomaly_flag"].avro_type == "long"


# (declared type, affinity) from https://www.sqlite.org/datatype3.html section 3.1, incl. its
# own examples and the order-dependent traps ("FLOATING POINT" contains "INT").
AFFINITY_CASES = [
    ("INT", "INTEGER"),
    ("INTEGER", "INTEGER"),
    ("TINYINT", "INTEGER"),
    ("BIGINT", "INTEGER"),
    ("UNSIGNED BIG INT", "INTEGER"),
    ("INT8", "INTEGER"),
    ("integer", "INTEGER"),
    ("CHARINT", "INTEGER"),
    ("FLOATING POINT", "INTEGER"),
    ("CHARACTER(20)", "TEXT"),
    ("VARCHAR(255)", "TEXT"),
    ("VARYING CHARACTER(255)", "TEXT"),
    ("NCHAR(55)", "TEXT"),
    ("NVARCHAR(100)", "TEXT"),
    ("TEXT", "TEXT"),
    ("clob", "TEXT"),
    ("BLOB", "BLOB"),
    ("", "BLOB"),
    ("REAL", "REAL"),
    ("DOUBLE", "REAL"),
    ("DOUBLE PRECISION", "REAL"),
    ("FLOAT", "REAL"),
    ("NUMERIC", "NUMERIC"),
    ("DECIMAL(10,5)", "NUMERIC"),
    ("BOOLEAN", "NUMERIC"),
    ("DATE", "NUMERIC"),
    ("DATETIME", "NUMERIC"),
    ("STRING", "NUMERIC"),  # the documented surprise: no rule matches "STRING"
]
AVRO_FOR_AFFINITY = {
    "INTEGER": "long",
    "TEXT": "string",
    "BLOB": "bytes",
    "REAL": "double",
    "NUMERIC": "double",
}


DATE_LIKE = {"DATE", "DATETIME", "TIMESTAMP"}


@pytest.mark.parametrize(("declared", "expected"), AFFINITY_CASES)
def test_affinity_and_avro_type(declared: str, expected: str) -> None:
    assert affinity(declared) == expected
    if declared.upper() not in DATE_LIKE:
        assert avro_type_for(declared) == AVRO_FOR_AFFINITY[expected]


@pytest.mark.parametrize("declared", sorted(DATE_LIKE))
def test_date_like_numeric_columns_are_strings(declared: str) -> None:
    """ISO text stays text in them; as doubles every row would be a dead letter."""
    assert affinity(declared) == "NUMERIC"
    assert avro_type_for(declared) == "string"


# What SQLite's CAST does with '1.5' and '1.0' tells the five affinities apart.
CAST_SIGNATURE = {
    "INTEGER": ("integer", "integer"),
    "TEXT": ("text", "text"),
    "BLOB": ("blob", "blob"),
    "REAL": ("real", "real"),
    "NUMERIC": ("real", "integer"),
}


@pytest.mark.parametrize(("declared", "expected"), [c for c in AFFINITY_CASES if c[0]])
def test_affinity_agrees_with_sqlite_itself(declared: str, expected: str) -> None:
    conn = _db()
    signature = conn.execute(
        f"SELECT typeof(CAST('1.5' AS {declared})), typeof(CAST('1.0' AS {declared}))"
    ).fetchone()
    assert signature == CAST_SIGNATURE[expected]


def test_column_without_type_has_blob_affinity_in_sqlite() -> None:
    conn = _db("CREATE TABLE t(x)", "INSERT INTO t VALUES ('1.5')")
    [column] = introspect(conn, "t")
    assert column.declared_type == "" and column.affinity == "BLOB"
    assert column.avro_type == "bytes"
    assert conn.execute("SELECT typeof(x) FROM t").fetchone() == ("text",)  # kept as given


def test_only_integer_primary_key_is_the_non_null_rowid_alias() -> None:
    conn = _db(
        "CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE b(id INT PRIMARY KEY, v TEXT)",  # INT: not a rowid alias, may hold NULL
        "CREATE TABLE c(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
        "CREATE TABLE d(x INTEGER, y INTEGER, PRIMARY KEY (x, y))",
        "INSERT INTO b VALUES (NULL, 'null primary key')",
    )
    assert introspect(conn, "a")[0].not_null
    assert introspect(conn, "b")[0].primary_key and not introspect(conn, "b")[0].not_null
    assert introspect(conn, "c")[0].not_null
    assert [c.not_null for c in introspect(conn, "d")] == [False, False]
    assert conn.execute("SELECT id FROM b").fetchone() == (None,)


def test_introspect_lists_generated_columns_in_select_star_order() -> None:
    conn = _db(
        "CREATE TABLE t(a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL, c TEXT)",
        "INSERT INTO t(a, c) VALUES (1, 'x')",
    )
    cursor = conn.execute("SELECT * FROM t")
    assert [c.name for c in introspect(conn, "t")] == [d[0] for d in cursor.description]


def test_introspect_odd_names_are_quoted_not_pasted(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "odd.db")
    table = "we\"ird'); DROP TABLE keep; --"
    conn.execute("CREATE TABLE keep(x)")
    conn.execute(f'CREATE TABLE {quote_identifier(table)}("flow-rate" REAL, "temp C" TEXT)')
    conn.text_factory = bytes  # names still come back as str

    columns = introspect(conn, table)

    assert [c.name for c in columns] == ["flow-rate", "temp C"]
    assert user_tables(conn) == ["keep", table]
    select = f"SELECT {', '.join(quote_identifier(c.name) for c in columns)} "
    assert conn.execute(select + f"FROM {quote_identifier(table)}").fetchall() == []


def test_introspect_missing_table_names_the_tables_there_are() -> None:
    conn = _db("CREATE TABLE readings(x)", "CREATE TABLE other(y)")
    with pytest.raises(ConfigError, match=r"'sensor_readings' not found.*other, readings"):
        introspect(conn, "sensor_readings")


def test_user_tables_skip_sqlite_internal_tables_only() -> None:
    conn = _db(
        DESIGN_DDL,  # AUTOINCREMENT creates sqlite_sequence
        "INSERT INTO sensor_readings(timestamp, sensor_id) VALUES ('2024-01-01', 's1')",
        "CREATE TABLE sqliteish(x)",  # '_' in LIKE is a wildcard: must be escaped
        "CREATE VIEW v AS SELECT 1",
        "ANALYZE",  # creates sqlite_stat1
    )
    assert conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('sqlite_sequence', 'sqlite_stat1')"
    ).fetchone() == (2,)
    assert user_tables(conn) == ["sensor_readings", "sqliteish"]


def _columns(ddl: str) -> list:
    return introspect(_db(ddl), "t")


def test_detect_prefers_the_column_named_timestamp() -> None:
    assert detect_timestamp_column(introspect(_db(DESIGN_DDL), "sensor_readings")) == "timestamp"
    columns = _columns("CREATE TABLE t(created_at TEXT, Timestamp INTEGER)")
    assert detect_timestamp_column(columns) == "Timestamp"


def test_detect_explicit_name_wins_and_matches_case_insensitively() -> None:
    columns = _columns("CREATE TABLE t(timestamp TEXT, Logged_On TEXT)")
    assert detect_timestamp_column(columns, "logged_on", table="t") == "Logged_On"


def test_detect_explicit_name_must_exist() -> None:
    columns = _columns("CREATE TABLE t(a TEXT, b TEXT)")
    with pytest.raises(ConfigError, match=r"--timestamp-col 'when' .*'t' \(columns: a, b\)"):
        detect_timestamp_column(columns, "when", table="t")


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        ("CREATE TABLE t(id INTEGER PRIMARY KEY, ts INTEGER, v REAL)", "ts"),
        ("CREATE TABLE t(id INTEGER PRIMARY KEY, time REAL, v REAL)", "time"),
        ("CREATE TABLE t(event_time TEXT, v REAL)", "event_time"),
        ("CREATE TABLE t(recorded_at TEXT, v REAL)", "recorded_at"),
        ("CREATE TABLE t(Created_At DATETIME, v REAL)", "Created_At"),
        ("CREATE TABLE t(reading_timestamp TEXT, v REAL)", "reading_timestamp"),
        ("CREATE TABLE t(sample_ts INTEGER, v REAL)", "sample_ts"),
        ("CREATE TABLE t(sampled_at TEXT, payload_at BLOB)", "sampled_at"),  # BLOB: no
    ],
)
def test_detect_single_candidate(ddl: str, expected: str) -> None:
    assert detect_timestamp_column(_columns(ddl), None, table="t") == expected


def test_detect_several_candidates_is_an_error_naming_them() -> None:
    columns = _columns("CREATE TABLE t(id INTEGER, created_at TEXT, updated_at TEXT, v REAL)")
    with pytest.raises(ConfigError) as caught:
        detect_timestamp_column(columns, None, table="events")
    message = str(caught.value)
    assert "table 'events'" in message
    assert "created_at, updated_at" in message
    assert "--timestamp-col" in message


def test_detect_no_candidate_is_an_error_listing_the_columns() -> None:
    columns = _columns("CREATE TABLE t(id INTEGER, value REAL, payload_at BLOB)")
    with pytest.raises(ConfigError) as caught:
        detect_timestamp_column(columns, None, table="t")
    message = str(caught.value)
    assert "table 't'" in message and "id, value, payload_at" in message
    assert "--timestamp-col" in message


def test_quote_identifier_rejects_nul() -> None:
    assert quote_identifier('a"b') == '"a""b"'
    with pytest.raises(ConfigError, match="NUL"):
        quote_identifier("a\x00b")
