"""The edge producer against the real broker and registry: every SQLite row arrives in the
topic exactly once, equal to the row, and keeps doing so across restarts and new columns."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from producers.checkpoint import Checkpoint
from producers.settings import ProducerSettings
from producers.simulator import SimulatorSettings, SteppingClock, build_fleet, run_simulator
from producers.simulator.database import ReadingsDatabase
from producers.simulator.readings import ReadingModel
from producers.tailer import EdgeTailer
from schemas.timestamps import to_epoch_micros
from sensorstream.errors import PipelineError
from tests.edge_nodes import node_settings
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def simulate(db, count: int, seed: int = 7, start: datetime = START) -> None:
    settings = SimulatorSettings(db=db, count=count, rate=0, seed=seed, sensors=6)
    run_simulator(settings, clock=SteppingClock(start, timedelta(milliseconds=10)))


@pytest.fixture
def producer_settings(tmp_path, unique) -> ProducerSettings:
    return node_settings(tmp_path / "edge.db", unique, chunk_rows=700, once=True)


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


@dataclass
class WriterReport:
    """What the sensor writer saw while it wrote beside a reader."""

    transactions: int
    last_rowid: int
    lock_errors: list[str]  # every time a lock stood in its way
    checkpoint: tuple[int, int, int]  # (busy, WAL frames, frames checkpointed) of a TRUNCATE


def write_beside(
    db,
    keep_writing: Callable[[], bool],
    *,
    at_least: int = 300,
    rows_per_transaction: int = 60,
    checkpoint_wait_s: float = 120.0,
    deadline_s: float = 180.0,
) -> WriterReport:
    """Write readings to `db` as the sensor would, noticing every lock instead of waiting.

    The simulator's own `ReadingsDatabase` and `ReadingModel`, on a connection with a busy
    timeout of 0: where a writer with a timeout would wait for a lock (and merely go slower,
    which on a loaded machine proves nothing), SQLite raises "database is locked" at once, so
    every moment a reader stood in the writer's way is counted, however fast the machine is.
    At least `at_least` transactions, then until `keep_writing` says no (or the deadline).

    At the end the writer checkpoints the WAL with TRUNCATE, waiting up to `checkpoint_wait_s`
    for readers: it completes only once no reader is still reading an older snapshot, so a
    reader that keeps a read transaction open (and with it, the WAL growing without end) is
    seen here, while one that reads in short transactions lets it through.
    """
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    writer = ReadingsDatabase(db, conn)
    model = ReadingModel(
        build_fleet(11, "eu-west-1", 6), seed=11, region="eu-west-1", anomaly_probability=0.05
    )
    errors: list[str] = []
    transactions = last_rowid = 0
    deadline = time.monotonic() + deadline_s
    try:
        while transactions < at_least or (keep_writing() and time.monotonic() < deadline):
            rows = [model.next_row(datetime.now(UTC)) for _ in range(rows_per_transaction)]
            try:
                _, last_rowid = writer.append(rows)
            except PipelineError as exc:
                errors.append(str(exc))
            transactions += 1
        conn.execute(f"PRAGMA busy_timeout = {int(checkpoint_wait_s * 1000)}")
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        writer.close()
    return WriterReport(transactions, last_rowid, errors, (busy, frames, done))


def test_tailing_never_blocks_the_sensor_writer(
    kafka, schema_registry, connection, producer_settings
):
    """In WAL mode the only way a reader blocks the sensor's writes is a lock a writer needs
    (a write transaction, or an exclusive lock), and the only way it hurts the writer's WAL is
    a read transaction left open, which keeps every later frame from being checkpointed. The
    writer here counts the first as lock errors (busy timeout 0) and sees the second as a
    TRUNCATE checkpoint that cannot complete; the two tests after this one show each of these
    assertions failing against a reader that does hold such a lock or transaction. Neither
    depends on how fast the machine is: the writer writes as fast as it can, and keeps writing
    until the tailer has been seen reading its rows while it wrote, several times."""
    simulate(producer_settings.sqlite, 10)
    settings = producer_settings.model_copy(update={"once": False, "chunk_rows": 200})
    # The first connection to a WAL database builds its shared index under an exclusive lock
    # (a "recovery"), which anyone opening it at that instant meets as "locked": an open, not
    # a tailer's lock. This connection does that before the tailer and the writer start.
    first = sqlite3.connect(settings.sqlite)
    first.execute("SELECT count(*) FROM sensor_readings").fetchone()
    stop = threading.Event()
    tailer = EdgeTailer(settings, connection, stop)
    runner = threading.Thread(target=tailer.run)
    runner.start()
    seen = [10]  # the checkpoints the tailer committed while the writer wrote

    def tailer_read_while_writing() -> bool:
        rowid = tailer.checkpoint.rowid if tailer.checkpoint else 0
        if rowid > seen[-1]:
            seen.append(rowid)
        return len(seen) <= 5

    try:
        writer = write_beside(settings.sqlite, tailer_read_while_writing)
        assert len(seen) > 5, f"the tailer did not read while the writer wrote: {seen}"
        assert writer.lock_errors == [], writer.lock_errors[:3]
        busy, frames, checkpointed = writer.checkpoint
        assert busy == 0 and frames == checkpointed, writer.checkpoint
        deadline = time.monotonic() + 120
        while tailer.checkpoint is None or tailer.checkpoint.rowid < writer.last_rowid:
            assert time.monotonic() < deadline, "the tailer did not catch up"
            stop.wait(0.1)
    finally:
        stop.set()
        runner.join(30)
        first.close()
    records = topic_records(kafka, schema_registry, settings.topic)
    assert_exactly_once(records, sqlite_rows(settings.sqlite))


def test_the_writer_sees_a_reader_that_takes_a_write_lock(tmp_path) -> None:
    """What the tailing test would report about a reader that took a write lock."""
    db = tmp_path / "edge.db"
    simulate(db, 10)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN IMMEDIATE")  # a reader that wrongly holds the write lock
    try:
        report = write_beside(db, lambda: False, at_least=20, checkpoint_wait_s=0)
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    assert len(report.lock_errors) == 20
    assert "database is locked" in report.lock_errors[0]


def test_the_writer_sees_a_reader_that_keeps_its_read_transaction_open(tmp_path) -> None:
    """What the tailing test would report about a reader that never ends its snapshot: it
    takes no lock a writer needs (WAL mode), but no checkpoint can complete behind it."""
    db = tmp_path / "edge.db"
    simulate(db, 10)
    reader = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sensor_readings").fetchone()  # the snapshot starts
    try:
        report = write_beside(db, lambda: False, at_least=20, checkpoint_wait_s=1)
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert report.lock_errors == []  # writes go on ...
    busy, frames, checkpointed = report.checkpoint
    assert busy == 1 and checkpointed < frames  # ... but the WAL can only grow


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
