"""Columns dropped, renamed or retyped at the source while the producer runs, against the real
broker and registry: the producer keeps streaming, each row arrives once (as a record or as a
dead letter that says why), and the registry holds the versions a change calls for."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from producers.settings import ProducerSettings
from producers.tailer import EdgeTailer
from sensorstream.errors import ConfigError
from tests.edge_nodes import node_settings
from tests.integration.producers.test_producer import simulate, topic_records
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

BEFORE = 120  # rows written (and streamed) before the change
AFTER = 80  # rows written after it
DEADLINE_S = 120


@pytest.fixture
def settings(tmp_path, unique) -> ProducerSettings:
    return node_settings(
        tmp_path / "edge.db", unique, chunk_rows=50, poll_interval_s=0.1, once=False
    )


class Running:
    """A producer tailing in a thread; what it raised, if anything, is kept for the test."""

    def __init__(self, settings: ProducerSettings, connection) -> None:
        self.stop = threading.Event()
        self.tailer = EdgeTailer(settings, connection, self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.tailer.run()
        except BaseException as exc:  # reported by wait_for
            self.error = exc

    def wait_for(self, rowid: int) -> None:
        """Until the committed checkpoint covers `rowid`; fails at once if the producer died."""
        waited = 0.0
        while waited < DEADLINE_S:
            if self.error is not None:
                raise AssertionError(f"the producer stopped: {self.error!r}") from self.error
            checkpoint = self.tailer.checkpoint
            if checkpoint is not None and checkpoint.rowid >= rowid:
                return
            self.stop.wait(0.1)
            waited += 0.1
        raise AssertionError(f"the checkpoint never reached rowid {rowid}: producer stalled")


@contextmanager
def producing(settings: ProducerSettings, connection) -> Iterator[Running]:
    running = Running(settings, connection)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(60)


def execute(db: Path, *statements: str, rows: list[dict] | None = None) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for statement in statements:
            conn.execute(statement)
        for row in rows or []:
            names = ", ".join(row)
            conn.execute(
                f"INSERT INTO sensor_readings ({names}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
    conn.close()


def new_rows(**columns) -> list[dict]:
    """AFTER rows with the columns every shape here keeps, plus `columns` (value or callable)."""
    rows = []
    for i in range(AFTER):
        row = {
            "timestamp": f"2026-11-21T09:{i // 60:02d}:{i % 60:02d}Z",
            "sensor_id": f"S{i % 4}",
            "temperature": 20.0 + i,
        }
        row |= {name: value(i) if callable(value) else value for name, value in columns.items()}
        rows.append(row)
    return rows


def rebuild_with(db: Path, column: str, new_type: str) -> str:
    """SQLite's way to retype a column: a new table with the new declared type, the rows
    copied (rowids kept: `id` is the INTEGER PRIMARY KEY), the old table dropped, the new one
    renamed, in one transaction. Returns the old declared type."""
    conn = sqlite3.connect(db)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sensor_readings'").fetchone()
    conn.close()
    old_type = next(
        part.strip().split()[1]
        for part in sql.split(",")
        if part.strip().split() and part.strip().split()[0] == column
    )
    new_sql = sql.replace("sensor_readings", "sensor_readings_new", 1).replace(
        f"{column} {old_type}", f"{column} {new_type}", 1
    )
    execute(
        db,
        new_sql,
        "INSERT INTO sensor_readings_new SELECT * FROM sensor_readings",
        "DROP TABLE sensor_readings",
        "ALTER TABLE sensor_readings_new RENAME TO sensor_readings",
    )
    return old_type


def dead_letters(kafka, topic: str) -> dict[int, str]:
    letters = {}
    for message in read_topic(kafka.bootstrap_servers, topic):
        headers = dict(message.headers())
        rowid = int(headers["dlq.source.rowid"])
        assert rowid not in letters, f"rowid {rowid} dead-lettered twice"
        letters[rowid] = headers["dlq.error"].decode()
    return letters


def records_by_rowid(kafka, schema_registry, topic: str) -> dict[int, tuple[int, dict]]:
    found: dict[int, tuple[int, dict]] = {}
    for _, schema_id, record in topic_records(kafka, schema_registry, topic):
        rowid = record["_source_rowid"]
        assert rowid not in found, f"rowid {rowid} produced twice"
        found[rowid] = (schema_id, record)
    return found


def run_change(settings, connection, change) -> Running:
    """BEFORE rows streamed, `change()` applied while the producer runs, then AFTER rows."""
    simulate(settings.sqlite, BEFORE)
    with producing(settings, connection) as running:
        running.wait_for(BEFORE)
        change()
        running.wait_for(BEFORE + AFTER)
        assert running.error is None
    return running


def versions(running: Running, settings: ProducerSettings) -> list[int]:
    return running.tailer.registry.client.get_versions(f"{settings.topic}-value")


def test_a_dropped_column_leaves_the_schema_and_streaming_goes_on(
    kafka, schema_registry, connection, settings
):
    def drop() -> None:
        execute(settings.sqlite, "ALTER TABLE sensor_readings DROP COLUMN humidity")
        execute(settings.sqlite, rows=new_rows())

    running = run_change(settings, connection, drop)
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    assert sorted(records) == list(range(1, BEFORE + AFTER + 1))
    assert dead_letters(kafka, settings.dead_letter_topic) == {}
    for rowid, (_, record) in records.items():
        if rowid <= BEFORE:
            assert isinstance(record["humidity"], float)
        else:
            assert "humidity" not in record
            assert record["temperature"] == 20.0 + (rowid - BEFORE - 1)
    assert len({schema_id for schema_id, _ in records.values()}) == 2
    assert versions(running, settings) == [1, 2]


def test_a_renamed_column_becomes_a_new_field_and_the_old_one_leaves(
    kafka, schema_registry, connection, settings
):
    def rename() -> None:
        execute(
            settings.sqlite, "ALTER TABLE sensor_readings RENAME COLUMN pressure TO pressure_hpa"
        )
        execute(settings.sqlite, rows=new_rows(pressure_hpa=lambda i: 1000.0 + i))

    running = run_change(settings, connection, rename)
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    assert sorted(records) == list(range(1, BEFORE + AFTER + 1))
    assert dead_letters(kafka, settings.dead_letter_topic) == {}
    for rowid, (_, record) in records.items():
        if rowid <= BEFORE:
            assert isinstance(record["pressure"], float) and "pressure_hpa" not in record
        else:
            assert "pressure" not in record
            assert record["pressure_hpa"] == 1000.0 + (rowid - BEFORE - 1)
    latest = running.tailer.registry.latest_value_schema(settings.topic)
    field = next(f for f in latest["fields"] if f["name"] == "pressure_hpa")
    assert field["type"] == ["null", "double"] and field["default"] is None
    assert versions(running, settings) == [1, 2]


def test_a_retype_whose_values_fit_the_field_streams_them_in_the_lakes_type(
    kafka, schema_registry, connection, settings
):
    """REAL -> INTEGER: whole numbers are exact doubles, so the field (and the lake's column)
    stays double and every row streams; no new version."""

    def retype() -> None:
        assert rebuild_with(settings.sqlite, "temperature", "INTEGER") == "REAL"
        rows = new_rows()
        for row in rows:
            row["temperature"] = int(row["temperature"])
        execute(settings.sqlite, rows=rows)

    running = run_change(settings, connection, retype)
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    assert sorted(records) == list(range(1, BEFORE + AFTER + 1))
    assert dead_letters(kafka, settings.dead_letter_topic) == {}
    for rowid, (_, record) in records.items():
        if rowid > BEFORE:
            value = record["temperature"]
            assert isinstance(value, float) and value == 20.0 + (rowid - BEFORE - 1)
    assert versions(running, settings) == [1]


def test_a_retype_whose_values_do_not_fit_dead_letters_them_with_the_remedy(
    kafka, schema_registry, connection, settings
):
    """INTEGER -> TEXT with text values: the lake's column is a long and cannot become a
    string, so those rows go to the dead-letter topic saying why and what to do; rows whose
    value still fits (NULL here) stream, and the producer never stalls."""

    def retype() -> None:
        assert rebuild_with(settings.sqlite, "status_code", "TEXT") == "INTEGER"
        execute(
            settings.sqlite,
            rows=new_rows(status_code=lambda i: None if i % 4 == 0 else f"state-{i}"),
        )

    run_change(settings, connection, retype)
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    letters = dead_letters(kafka, settings.dead_letter_topic)
    assert set(records).isdisjoint(letters)
    assert sorted([*records, *letters]) == list(range(1, BEFORE + AFTER + 1))
    dead = {BEFORE + 1 + i for i in range(AFTER) if i % 4 != 0}
    assert set(letters) == dead
    for reason in letters.values():
        assert reason.startswith("status_code: text ")
        assert "declared TEXT (Avro string) but its field in the topic's schema is long" in reason
        assert "give the column a new name at the source" in reason
    for rowid in set(range(BEFORE + 1, BEFORE + AFTER + 1)) - dead:
        assert records[rowid][1]["status_code"] is None


def test_a_dropped_column_before_a_restart_needs_no_new_version(
    kafka, schema_registry, connection, settings
):
    """After the producer restarts on the changed table, it registers the same version again."""
    simulate(settings.sqlite, BEFORE)
    execute(settings.sqlite, "ALTER TABLE sensor_readings DROP COLUMN vibration")
    once = settings.model_copy(update={"once": True})
    first = EdgeTailer(once, connection)
    assert first.run().rows == BEFORE
    execute(settings.sqlite, rows=new_rows())
    second = EdgeTailer(once, connection)
    assert second.run().rows == AFTER
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    assert sorted(records) == list(range(1, BEFORE + AFTER + 1))
    assert all("vibration" not in record for _, record in records.values())
    assert second.registry.client.get_versions(f"{settings.topic}-value") == [1]


def test_the_event_time_column_dropped_stops_the_producer_naming_the_remedy(
    kafka, schema_registry, connection, settings
):
    """Without event time no row can be partitioned: a loud stop (exit 2 from the CLI) that
    names the database and says what to pass, after every row before the change streamed."""
    simulate(settings.sqlite, BEFORE)
    with producing(settings, connection) as running:
        running.wait_for(BEFORE)
        execute(settings.sqlite, "ALTER TABLE sensor_readings DROP COLUMN timestamp")
        running.thread.join(DEADLINE_S)
        assert not running.thread.is_alive(), "the producer went on without event time"
    assert isinstance(running.error, ConfigError)
    message = str(running.error)
    assert str(settings.sqlite) in message and "sensor_readings" in message
    assert "pass --timestamp-col NAME" in message
    records = records_by_rowid(kafka, schema_registry, settings.topic)
    assert sorted(records) == list(range(1, BEFORE + 1))
