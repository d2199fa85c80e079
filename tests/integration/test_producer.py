"""The edge producer against the real broker and registry: every SQLite row arrives in the
topic exactly once, equal to the row, and keeps doing so across restarts and new columns."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from producers.checkpoint import Checkpoint
from producers.settings import ProducerSettings
from producers.simulator import SimulatorSettings, SteppingClock, run_simulator
from producers.tailer import EdgeTailer
from schemas.timestamps import to_epoch_micros
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def simulate(db, count: int, seed: int = 7, start: datetime = START) -> None:
    settings = SimulatorSettings(db=db, count=count, rate=0, seed=seed, sensors=6)
    run_simulator(settings, clock=SteppingClock(start, timedelta(milliseconds=10)))


@pytest.fixture
def producer_settings(tmp_path, unique) -> ProducerSettings:
    return ProducerSettings(
        sqlite=tmp_path / "edge.db",
        node_id=f"node-{unique}",
        region="eu-west-1",
        topic=f"t.readings.{unique}",
        dead_letter_topic=f"t.dlq.{unique}",
        checkpoint_topic=f"t.ckpt.{unique}",
        chunk_rows=700,
        once=True,
    )


def sqlite_rows(db) -> dict[int, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {row["id"]: dict(row) for row in conn.execute("SELECT * FROM sensor_readings")}
    conn.close()
    return rows


def topic_records(kafka, schema_registry, topic) -> list[tuple[bytes, int, dict]]:
    decoder = AvroDecoder(schema_registry.url)
    return [
        (m.key(), *decoder.decode(m.value())) for m in read_topic(kafka.bootstrap_servers, topic)
    ]


def assert_exactly_once(records, rows: dict[int, dict]) -> None:
    counts = Counter(record["_source_rowid"] for _, _, record in records)
    duplicated = {rowid: n for rowid, n in counts.items() if n > 1}
    assert not duplicated, f"rows produced more than once: {sorted(duplicated)[:10]}"
    missing = set(rows) - set(counts)
    assert not missing, f"{len(missing)} rows never produced, e.g. {sorted(missing)[:10]}"
    assert set(counts) == set(rows)


def test_every_row_arrives_once_and_equal_to_its_source(
    kafka, schema_registry, connection, producer_settings
):
    simulate(producer_settings.sqlite, 2500)
    result = EdgeTailer(producer_settings, connection).run()
    assert (result.rows, result.dead_letters, result.last_rowid) == (2500, 0, 2500)
    assert result.transactions == 4  # 2500 rows in chunks of 700

    rows = sqlite_rows(producer_settings.sqlite)
    records = topic_records(kafka, schema_registry, producer_settings.topic)
    assert_exactly_once(records, rows)
    for key, _schema_id, record in records:
        row = rows[record["_source_rowid"]]
        assert key == row["sensor_id"].encode()
        assert record["timestamp"] == datetime.fromtimestamp(0, UTC) + timedelta(
            microseconds=to_epoch_micros(row["timestamp"])
        )
        for column, value in row.items():
            if column != "timestamp":
                assert record[column] == value, (column, record[column], value)
        assert record["_node_id"] == producer_settings.node_id
        assert record["_region"] == "eu-west-1"
        assert record["_source_table"] == "sensor_readings"

    (last,) = [
        Checkpoint.from_bytes(m.value())
        for m in read_topic(kafka.bootstrap_servers, producer_settings.checkpoint_topic)
    ][-1:]
    assert (last.rowid, last.rows_total, last.table) == (2500, 2500, "sensor_readings")


def test_restart_resumes_after_the_checkpoint(
    kafka, schema_registry, connection, producer_settings
):
    simulate(producer_settings.sqlite, 1000)
    assert EdgeTailer(producer_settings, connection).run().rows == 1000
    assert EdgeTailer(producer_settings, connection).run().rows == 0  # nothing new
    simulate(producer_settings.sqlite, 450, seed=8, start=START + timedelta(hours=1))
    again = EdgeTailer(producer_settings, connection).run()
    assert (again.rows, again.last_rowid) == (450, 1450)
    records = topic_records(kafka, schema_registry, producer_settings.topic)
    assert_exactly_once(records, sqlite_rows(producer_settings.sqlite))


def test_a_new_column_becomes_a_new_schema_version(
    kafka, schema_registry, connection, producer_settings
):
    simulate(producer_settings.sqlite, 300)
    EdgeTailer(producer_settings, connection).run()
    conn = sqlite3.connect(producer_settings.sqlite)
    conn.execute("ALTER TABLE sensor_readings ADD COLUMN co2_ppm REAL")
    conn.commit()
    conn.close()
    simulate(producer_settings.sqlite, 200, seed=9, start=START + timedelta(hours=1))
    conn = sqlite3.connect(producer_settings.sqlite)
    conn.execute("UPDATE sensor_readings SET co2_ppm = 400.0 + id WHERE id > 300")
    conn.commit()
    conn.close()
    # The producer picks the column up while running, not only at start.
    settings = producer_settings.model_copy(update={"once": False})
    stop = threading.Event()
    tailer = EdgeTailer(settings, connection, stop)
    runner = threading.Thread(target=tailer.run)
    runner.start()
    try:
        deadline = datetime.now() + timedelta(seconds=60)
        while (tailer.checkpoint is None or tailer.checkpoint.rowid < 500) and (
            datetime.now() < deadline
        ):
            stop.wait(0.1)
    finally:
        stop.set()
        runner.join(30)

    records = topic_records(kafka, schema_registry, producer_settings.topic)
    assert_exactly_once(records, sqlite_rows(producer_settings.sqlite))
    old = {sid for _, sid, r in records if r["_source_rowid"] <= 300}
    new = {sid for _, sid, r in records if r["_source_rowid"] > 300}
    assert len(old) == 1 and len(new) == 1 and old != new
    for _, _, record in records:
        if record["_source_rowid"] > 300:
            assert record["co2_ppm"] == 400.0 + record["_source_rowid"]
        else:
            assert "co2_ppm" not in record
    versions = tailer.registry.client.get_versions(f"{producer_settings.topic}-value")
    assert versions == [1, 2]


def test_tailing_never_blocks_the_sensor_writer(
    kafka, schema_registry, connection, producer_settings
):
    simulate(producer_settings.sqlite, 10)
    settings = producer_settings.model_copy(update={"once": False, "chunk_rows": 200})
    stop = threading.Event()
    tailer = EdgeTailer(settings, connection, stop)
    runner = threading.Thread(target=tailer.run)
    runner.start()
    try:
        # The writer inserts at a fixed pace while the tailer reads; a lock held by the
        # reader would surface here as "database is locked" or as a missed pace.
        writer = run_simulator(
            SimulatorSettings(db=settings.sqlite, duration=3, rate=6000, seed=11, sensors=6)
        )
        assert writer.rows_written == 18_000  # kept its pace: never waited on a lock
        total = writer.last_rowid
        deadline = datetime.now() + timedelta(seconds=60)
        while tailer.checkpoint is None or tailer.checkpoint.rowid < total:
            assert datetime.now() < deadline, "the tailer did not catch up"
            stop.wait(0.1)
    finally:
        stop.set()
        runner.join(30)
    records = topic_records(kafka, schema_registry, settings.topic)
    assert_exactly_once(records, sqlite_rows(settings.sqlite))


def recreate(db) -> None:
    """What the legacy simulator did on every start: delete the database."""
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize("regrown", [False, True], ids=["rowids-backwards", "regrown-past"])
def test_recreated_database_stops_the_producer_loudly(
    kafka, schema_registry, connection, producer_settings, regrown
):
    from producers.tailer import SourceRecreated

    simulate(producer_settings.sqlite, 500)
    EdgeTailer(producer_settings, connection).run()
    recreate(producer_settings.sqlite)
    # A new database, perhaps already past the old checkpoint's rowid.
    simulate(
        producer_settings.sqlite, 800 if regrown else 120, seed=99, start=START.replace(day=21)
    )
    with pytest.raises(SourceRecreated) as stopped:
        EdgeTailer(producer_settings, connection).run()
    message = str(stopped.value)
    assert str(producer_settings.sqlite) in message
    assert "recreated" in message and "rowid 500" in message
    assert "--on-recreated restart" in message
    records = topic_records(kafka, schema_registry, producer_settings.topic)
    assert len(records) == 500  # nothing of the new database, nothing again of the old

    restarted = producer_settings.model_copy(update={"on_recreated": "restart"})
    result = EdgeTailer(restarted, connection).run()
    assert result.rows == (800 if regrown else 120)
    records = topic_records(kafka, schema_registry, producer_settings.topic)
    new_rows = sqlite_rows(producer_settings.sqlite)
    assert len(records) == 500 + len(new_rows)
    new_database = [r for r in records if r[2]["timestamp"].day == 21]
    assert_exactly_once(new_database, new_rows)
    # Afterwards the new database is the lineage: a further run resumes, it does not restart.
    assert EdgeTailer(producer_settings, connection).run().rows == 0
