"""Bad rows in the edge table (DESIGN section 7): each one goes to the dead-letter topic with the
reason and its source, the producer keeps going, and the good rows around it arrive.

What SQLite really stores decides what the producer can meet, so each case inserts the way an
edge writer would and the tests assert what happens, not what one might expect:
- NaN bound from Python (or computed in SQL, 0.0/0.0) is stored as NULL: it never reaches the
  producer; the row is good with a null reading. A NOT NULL REAL column refuses it outright.
- +Inf and -Inf are stored as REAL, and so is the text '1e999' (REAL affinity converts it);
  the text 'NaN' or 'inf' stays TEXT. All of them go to the DLQ.
- Invalid UTF-8 gets into a TEXT column as TEXT (CAST(x'fffe' AS TEXT)) or as a BLOB (a bytes
  parameter): the producer reads both as bytes and dead-letters them; the DLQ value carries the
  bytes as base64.
- NOT NULL is enforced on every INSERT and UPDATE, so a NULL there only exists in a database
  whose schema was edited after the rows were written (PRAGMA writable_schema; integrity_check
  reports it). The text 'NULL' is just text: a valid sensor_id, an unparseable timestamp.
  A timestamp column declared without NOT NULL can hold NULL: event time is required, DLQ.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from producers.settings import ProducerSettings
from producers.simulator import INSERT_COLUMNS, create_readings_table
from producers.tailer import EdgeTailer, TailResult
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

TABLE = "sensor_readings"
GOOD: dict[str, Any] = {
    "timestamp": "2024-05-01T12:00:00Z",
    "sensor_id": "s-1",
    "temperature": 21.5,
    "location": "hall-3",
}
GOOD_TIME = datetime(2024, 5, 1, 12, tzinfo=UTC)
RUN_DEADLINE_S = 180  # a run that has not finished by then is stuck retrying: fail, do not hang


class Sql(str):
    """A value inserted as a literal SQL expression, e.g. CAST(x'fffe' AS TEXT)."""


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode("ascii")}


@dataclass
class Letter:
    headers: dict[str, bytes]
    value: dict[str, Any]
    key: bytes | None


@dataclass
class Outcome:
    db: Path
    node_id: str
    first: TailResult
    second: TailResult
    letters: dict[int, Letter]
    records: dict[int, tuple[bytes | None, dict]]


def insert(conn: sqlite3.Connection, row: dict[str, Any], table: str = TABLE) -> int:
    placeholders = [value if isinstance(value, Sql) else "?" for value in row.values()]
    params = [value for value in row.values() if not isinstance(value, Sql)]
    cursor = conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(placeholders)})", params
    )
    return cursor.lastrowid


def readings_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    create_readings_table(conn)
    return conn


def run_tailer(settings: ProducerSettings, connection) -> TailResult:
    stop = threading.Event()
    timer = threading.Timer(RUN_DEADLINE_S, stop.set)
    timer.start()
    try:
        return EdgeTailer(settings, connection, stop).run()
    finally:
        timer.cancel()


@pytest.fixture
def produce(tmp_path, unique, connection, kafka, schema_registry):
    """Runs the producer over a database twice and reads back both topics."""

    def run(db: Path, **overrides) -> Outcome:
        settings = ProducerSettings(
            sqlite=db,
            topic=f"t.readings.{unique}",
            dead_letter_topic=f"t.dlq.{unique}",
            checkpoint_topic=f"t.ckpt.{unique}",
            node_id=f"n-{unique}",
            once=True,
            **overrides,
        )
        first = run_tailer(settings, connection)
        letters: dict[int, Letter] = {}
        for message in read_topic(kafka.bootstrap_servers, settings.dead_letter_topic):
            headers = dict(message.headers())
            rowid = int(headers["dlq.source.rowid"])
            assert rowid not in letters, f"rowid {rowid} dead-lettered twice"
            letters[rowid] = Letter(headers, json.loads(message.value()), message.key())
        decoder = AvroDecoder(schema_registry.url)
        records: dict[int, tuple[bytes | None, dict]] = {}
        for message in read_topic(kafka.bootstrap_servers, settings.topic):
            _schema_id, record = decoder.decode(message.value())
            rowid = record["_source_rowid"]
            assert rowid not in records, f"rowid {rowid} produced twice"
            records[rowid] = (message.key(), record)
        second = run_tailer(settings, connection)
        return Outcome(db, settings.node_id, first, second, letters, records)

    return run


def assert_sorted_out(
    outcome: Outcome, bad: dict[int, str], good: set[int], table: str = TABLE
) -> None:
    """Exactly the `bad` rowids (rowid -> column named by the error) are in the DLQ with their
    source; exactly the `good` ones are records; the checkpoint covers every row."""
    assert set(outcome.letters) == set(bad)
    for rowid, column in bad.items():
        letter = outcome.letters[rowid]
        headers = letter.headers
        assert headers["dlq.stage"] == b"producer"
        assert headers["dlq.error"].decode().startswith(f"{column}: "), headers["dlq.error"]
        assert headers["dlq.source.db"] == str(outcome.db).encode()
        assert headers["dlq.source.table"] == table.encode()
        assert headers["dlq.source.rowid"] == str(rowid).encode()
        assert headers["dlq.source.node_id"] == outcome.node_id.encode()
        failed_at = datetime.fromisoformat(headers["dlq.failed_at"].decode())
        assert abs((datetime.now(UTC) - failed_at).total_seconds()) < 300
        assert letter.value["id"] == rowid
        assert letter.key is None
    assert set(outcome.records) == good
    last = max(bad.keys() | good)
    first, second = outcome.first, outcome.second
    assert (first.rows, first.dead_letters, first.transactions, first.last_rowid) == (
        len(bad) + len(good),
        len(bad),
        1,
        last,
    )
    # The checkpoint moved past the bad rows too: nothing is sent again.
    assert (second.rows, second.dead_letters, second.transactions, second.last_rowid) == (
        0,
        0,
        0,
        last,
    )


def assert_good_records(outcome: Outcome, good: set[int]) -> None:
    for rowid in good:
        key, record = outcome.records[rowid]
        assert key == b"s-1"
        assert record["sensor_id"] == "s-1"
        assert record["timestamp"] == GOOD_TIME
        assert record["temperature"] == 21.5
        assert record["location"] == "hall-3"
        assert record["id"] == rowid


def expected_row_json(rowid: int, row: dict[str, Any], column: str, value: Any) -> dict:
    """The DLQ value of a sensor_readings row: every column, the bad one as JSON renders it."""
    expected: dict[str, Any] = {"id": rowid, **dict.fromkeys(INSERT_COLUMNS)}
    expected["anomaly_flag"] = 0  # the column's DEFAULT
    expected.update({k: v for k, v in row.items() if k != column})
    expected[column] = value
    return expected


# Each case: (columns changed from GOOD, column the error names, text in the error, the bad
# column's value in the DLQ JSON).
BadCase = tuple[dict[str, Any], str, str, Any]
CASES: dict[str, list[BadCase]] = {
    "text in numeric columns": [
        ({"temperature": "hot"}, "temperature", "text b'hot' in a numeric column", "hot"),
        ({"humidity": "12,5"}, "humidity", "text b'12,5' in a numeric column", "12,5"),
        ({"temperature": "NaN"}, "temperature", "text b'NaN' in a numeric column", "NaN"),
        ({"pressure": "inf"}, "pressure", "text b'inf' in a numeric column", "inf"),
        (
            {"status_code": "ok"},
            "status_code",
            "text b'ok' in a numeric column (field is long)",
            "ok",
        ),
    ],
    "infinities": [
        ({"temperature": float("inf")}, "temperature", "inf is not a finite number", "inf"),
        ({"pressure": float("-inf")}, "pressure", "-inf is not a finite number", "-inf"),
        ({"voltage": Sql("9e999")}, "voltage", "inf is not a finite number", "inf"),
        ({"humidity": "1e999"}, "humidity", "inf is not a finite number", "inf"),
    ],
    "invalid UTF-8 text": [
        (
            {"location": Sql("CAST(x'fffe' AS TEXT)")},
            "location",
            "text is not valid UTF-8 (invalid start byte at byte 0)",
            b64(b"\xff\xfe"),
        ),
        ({"model": b"caf\xe9"}, "model", "text is not valid UTF-8", b64(b"caf\xe9")),
        (
            {"sensor_id": Sql("CAST(x'73ff31' AS TEXT)")},
            "sensor_id",
            "text is not valid UTF-8 (invalid start byte at byte 1)",
            b64(b"s\xff1"),
        ),
        (
            {"timestamp": Sql("CAST(x'323032342dff' AS TEXT)")},
            "timestamp",
            "is not ASCII text",
            b64(b"2024-\xff"),
        ),
    ],
    "unparseable timestamps": [
        (
            {"timestamp": "yesterday"},
            "timestamp",
            "timestamp 'yesterday' is neither ISO-8601 nor an epoch number",
            "yesterday",
        ),
        ({"timestamp": "2024-13-45T25:61:00Z"}, "timestamp", "neither ISO-8601", None),
        ({"timestamp": ""}, "timestamp", "timestamp '' is neither ISO-8601", ""),
        ({"timestamp": "NULL"}, "timestamp", "timestamp 'NULL' is neither ISO-8601", "NULL"),
    ],
    "absurd timestamps": [
        (
            {"timestamp": "1970-01-01T00:00:00Z"},
            "timestamp",
            "before 2000-01-01T00:00:00Z (the earliest accepted)",
            "1970-01-01T00:00:00Z",
        ),
        # An INTEGER into the TEXT column is stored as the text '0'.
        ({"timestamp": 0}, "timestamp", "'0' read as epoch seconds is 1970-01-01", "0"),
        (
            {"timestamp": "2999-01-01T00:00:00Z"},
            "timestamp",
            "is 2999-01-01T00:00:00Z, more than 24 hours after now",
            "2999-01-01T00:00:00Z",
        ),
        (
            {"timestamp": 32503680000},
            "timestamp",
            "read as epoch seconds is 3000-01-01T00:00:00Z, more than 24 hours after now",
            "32503680000",
        ),
    ],
    "unsafe sensor ids": [
        ({"sensor_id": "eu/s-1"}, "sensor_id", "'eu/s-1' contains '/'", "eu/s-1"),
        ({"sensor_id": "../etc"}, "sensor_id", "'../etc' contains '/'", "../etc"),
        ({"sensor_id": "s..1"}, "sensor_id", "'s..1' contains '..'", "s..1"),
        ({"sensor_id": "s 1"}, "sensor_id", "'s 1' contains whitespace ' '", "s 1"),
        ({"sensor_id": "s\t1"}, "sensor_id", "contains whitespace '\\t'", "s\t1"),
        ({"sensor_id": "s\x011"}, "sensor_id", "contains control character U+0001", "s\x011"),
        ({"sensor_id": "s\x7f1"}, "sensor_id", "contains control character U+007F", "s\x7f1"),
        ({"sensor_id": "s\u200b1"}, "sensor_id", "contains control character U+200B", "s\u200b1"),
        ({"sensor_id": ""}, "sensor_id", "empty; an identifier needs at least one", ""),
    ],
    "oversized rows": [
        (
            {"location": "x" * 5000},
            "location",
            "above the limit of 2048 bytes; largest column 'location' has 5000 bytes",
            "x" * 5000,
        ),
        # No single value is large; together they are over the limit.
        (
            {"model": "m" * 900, "manufacturer": "n" * 800, "location": "l" * 700},
            "model",
            "above the limit of 2048 bytes; largest column 'model' has 900 bytes",
            "m" * 900,
        ),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_rows_go_to_the_dead_letter_topic_and_the_rest_arrives(
    case: str, tmp_path, produce
) -> None:
    db = tmp_path / "edge.db"
    conn = readings_db(db)
    good = {insert(conn, GOOD)}
    bad: dict[int, BadCase] = {}
    for bad_case in CASES[case]:
        overrides = bad_case[0]
        bad[insert(conn, {**GOOD, **overrides})] = bad_case
        good.add(insert(conn, GOOD))  # the producer keeps going after each bad row
    conn.close()

    outcome = produce(db, max_row_bytes=2048)

    assert_sorted_out(outcome, {rowid: case[1] for rowid, case in bad.items()}, good)
    assert_good_records(outcome, good)
    for rowid, (overrides, column, reason, json_value) in bad.items():
        letter = outcome.letters[rowid]
        assert reason in letter.headers["dlq.error"].decode()
        row = {**GOOD, **{k: v for k, v in overrides.items() if not isinstance(v, Sql)}}
        if json_value is None:  # the text as inserted
            json_value = overrides[column]
        assert letter.value == expected_row_json(rowid, row, column, json_value)


def test_nan_is_stored_as_null_so_the_row_arrives_with_a_null_reading(tmp_path, produce) -> None:
    db = tmp_path / "edge.db"
    conn = readings_db(db)
    first = insert(conn, {**GOOD, "temperature": float("nan")})
    second = insert(conn, {**GOOD, "humidity": Sql("0.0 / 0.0")})
    stored = conn.execute(
        "SELECT typeof(temperature), typeof(humidity) FROM sensor_readings ORDER BY id"
    ).fetchall()
    assert stored == [("null", "null"), ("real", "null")]
    # A NOT NULL REAL column refuses NaN: SQLite turns it into NULL, then enforces NOT NULL.
    conn.execute("CREATE TABLE strict_readings (id INTEGER PRIMARY KEY, v REAL NOT NULL)")
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL constraint failed"):
        conn.execute("INSERT INTO strict_readings (v) VALUES (?)", (float("nan"),))
    conn.execute("DROP TABLE strict_readings")
    conn.close()

    outcome = produce(db)

    assert_sorted_out(outcome, {}, {first, second})
    assert outcome.records[first][1]["temperature"] is None
    assert outcome.records[second][1]["temperature"] == 21.5
    assert outcome.records[second][1]["humidity"] is None


def test_a_row_above_kafka_message_size_is_dead_lettered_truncated(tmp_path, produce) -> None:
    """A 2 MB value: over max_row_bytes (default 1 MiB) and over Kafka's 1 MB message limit,
    so its dead letter cannot carry it whole; before the fix the DLQ message itself was
    refused and the producer retried the chunk forever."""
    db = tmp_path / "edge.db"
    conn = readings_db(db)
    before = insert(conn, GOOD)
    big = insert(conn, {**GOOD, "location": "x" * 2_000_000})
    after = insert(conn, GOOD)
    conn.close()

    outcome = produce(db)

    assert_sorted_out(outcome, {big: "location"}, {before, after})
    letter = outcome.letters[big]
    limit = ProducerSettings.model_fields["max_row_bytes"].default
    assert f"above the limit of {limit} bytes; largest column 'location' has 2000000 bytes" in (
        letter.headers["dlq.error"].decode()
    )
    truncated = {"truncated": True, "bytes": 2_000_000, "head": "x" * 256}
    assert letter.value == expected_row_json(big, GOOD, "location", truncated)


def test_not_null_is_enforced_by_sqlite_and_null_like_text_is_just_text(tmp_path, produce) -> None:
    db = tmp_path / "edge.db"
    conn = readings_db(db)
    for column in ("timestamp", "sensor_id"):
        with pytest.raises(sqlite3.IntegrityError, match=f"NOT NULL constraint failed: .*{column}"):
            insert(conn, {**GOOD, column: None})
    good = insert(conn, GOOD)
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        conn.execute("UPDATE sensor_readings SET sensor_id = NULL")
    null_text_id = insert(conn, {**GOOD, "sensor_id": "NULL"})
    null_text_time = insert(conn, {**GOOD, "timestamp": "NULL"})
    conn.close()

    outcome = produce(db)

    assert_sorted_out(outcome, {null_text_time: "timestamp"}, {good, null_text_id})
    key, record = outcome.records[null_text_id]
    assert (key, record["sensor_id"]) == (b"NULL", "NULL")


def test_null_in_a_not_null_column_of_an_edited_schema_and_a_null_timestamp(
    tmp_path, produce
) -> None:
    """NULLs that did get in: rows written before NOT NULL was put into the schema by hand,
    and a NULL event time in a timestamp column that allows it."""
    db = tmp_path / "edge.db"
    table = "readings"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, timestamp TEXT, sensor_id TEXT, value REAL)"
    )
    row = {"timestamp": GOOD["timestamp"], "sensor_id": "s-1", "value": 1.5}
    good = {insert(conn, row, table)}
    null_sensor = insert(conn, {**row, "sensor_id": None}, table)
    good.add(insert(conn, row, table))
    null_time = insert(conn, {**row, "timestamp": None}, table)
    good.add(insert(conn, row, table))
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, 'sensor_id TEXT', 'sensor_id TEXT NOT NULL') "
        f"WHERE name = '{table}'"
    )
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [
        (f"NULL value in {table}.sensor_id",)
    ]
    conn.close()

    outcome = produce(db)

    assert_sorted_out(
        outcome, {null_sensor: "sensor_id", null_time: "timestamp"}, good, table=table
    )
    sensor_letter, time_letter = outcome.letters[null_sensor], outcome.letters[null_time]
    assert sensor_letter.headers["dlq.error"] == b"sensor_id: NULL in a NOT NULL column"
    assert sensor_letter.value == {"id": null_sensor, **row, "sensor_id": None}
    assert time_letter.headers["dlq.error"] == (
        b"timestamp: NULL timestamp (event time is required)"
    )
    assert time_letter.value == {"id": null_time, **row, "timestamp": None}
    for rowid in good:
        key, record = outcome.records[rowid]
        assert (key, record["sensor_id"], record["value"]) == (b"s-1", "s-1", 1.5)
        assert record["_source_table"] == table
