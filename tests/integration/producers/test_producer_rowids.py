"""Rowids that repeat or move, against the real broker and registry.

SQLite hands a deleted highest rowid to the next row (no AUTOINCREMENT), and VACUUM renumbers
the rows of a table without an INTEGER PRIMARY KEY. A producer that only reads above its
checkpoint would never send the rows that land at or below it. Every reading here carries its
own number (`reading`), so each test can check that every reading written reached the topic
exactly once, whatever rowid it had.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from producers.checkpoint import Checkpoint, CheckpointStore
from producers.pruning import prune_streamed
from sensorstream.errors import PipelineError
from tests.integration.producers.test_producer import topic_records
from tests.integration.producers.test_producer_bad_source import REPO, cli_environment

pytestmark = pytest.mark.integration

TABLE = "readings"
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
COLUMNS = "reading INTEGER NOT NULL, timestamp TEXT NOT NULL, sensor_id TEXT NOT NULL, value REAL"
KEYS = {
    "autoincrement": "id INTEGER PRIMARY KEY AUTOINCREMENT, ",
    "integer-primary-key": "id INTEGER PRIMARY KEY, ",
    "no-integer-primary-key": "",  # and no index: VACUUM renumbers its rows
}
RESUME_HINT = "--on-rowid-reuse prune"


class EdgeApp:
    """The application on the edge node: writes numbered readings, deletes what was streamed."""

    def __init__(self, db: Path, key: str) -> None:
        self.db = db
        self.written = 0
        self._lock = threading.Lock()
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"CREATE TABLE {TABLE} ({KEYS[key]}{COLUMNS})")
        conn.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=30, isolation_level=None)

    def write(self, count: int) -> None:
        with self._lock:
            first = self.written + 1
            self.written += count
        rows = [
            (n, (START + timedelta(milliseconds=10 * n)).isoformat(), f"s-{n % 5}", n / 10)
            for n in range(first, first + count)
        ]
        conn = self._connect()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO {TABLE} (reading, timestamp, sensor_id, value) VALUES (?, ?, ?, ?)",
                rows,
            )
        conn.close()

    def prune(self, checkpoint: Checkpoint | None) -> int:
        if checkpoint is None:
            return 0
        conn = self._connect()
        try:
            return prune_streamed(conn, TABLE, "timestamp", checkpoint)
        finally:
            conn.close()

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        for statement in statements:
            conn.execute(statement)
        conn.close()

    def rowids(self) -> list[int]:
        conn = self._connect()
        try:
            return [r[0] for r in conn.execute(f"SELECT _rowid_ FROM {TABLE} ORDER BY 1")]
        finally:
            conn.close()


class Edge:
    """One node's database, its producer command and what reached Kafka."""

    def __init__(self, tmp_path: Path, env: dict[str, str], kafka, schema_registry) -> None:
        self.db = tmp_path / "edge.db"
        self.tmp_path = tmp_path
        self.env = {
            **env,
            "SENSORSTREAM_PRODUCER_SQLITE": str(self.db),
            "SENSORSTREAM_PRODUCER_REGION": "eu-west-1",
            "SENSORSTREAM_PRODUCER_CHUNK_ROWS": "300",
            "SENSORSTREAM_PRODUCER_METRICS_PORT": "0",
        }
        self.kafka = kafka
        self.schema_registry = schema_registry
        self.store = CheckpointStore(
            {"bootstrap.servers": kafka.bootstrap_servers},
            self.env["SENSORSTREAM_PRODUCER_CHECKPOINT_TOPIC"],
        )
        self.runs = 0

    def app(self, key: str) -> EdgeApp:
        return EdgeApp(self.db, key)

    def once(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sensorstream", "produce", "--once", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=self.env,
            timeout=180,
        )

    def start(self, *args: str) -> Producer:
        self.runs += 1
        return Producer(self.tmp_path / f"producer-{self.runs}", self.env, args)

    def checkpoint(self) -> Checkpoint | None:
        """The latest committed checkpoint; None also while the producer creates its topic."""
        try:
            return self.store.read(self.env["SENSORSTREAM_PRODUCER_NODE_ID"], TABLE)
        except (KafkaException, PipelineError):
            return None

    def streamed(self) -> Counter[int]:
        """How often each reading number is in the readings topic (read_committed)."""
        topic = self.env["SENSORSTREAM_PRODUCER_TOPIC"]
        records = topic_records(self.kafka, self.schema_registry, topic)
        return Counter(record["reading"] for _, _, record in records)

    def source_rowids(self) -> Counter[int]:
        topic = self.env["SENSORSTREAM_PRODUCER_TOPIC"]
        records = topic_records(self.kafka, self.schema_registry, topic)
        return Counter(record["_source_rowid"] for _, _, record in records)


class Producer:
    """`sensorstream produce` running as the node's long-lived process, output to files."""

    def __init__(self, base: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
        self.stdout_path = base.with_suffix(".out")
        self.stderr_path = base.with_suffix(".err")
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensorstream", "produce", *args],
                stdout=out,
                stderr=err,
                text=True,
                cwd=REPO,
                env=env,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def exited(self, timeout: float = 150) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the producer kept running for {timeout:g} s:\n{self.stderr[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def wait_for(condition: Callable[[], bool], what: str, producer: Producer, timeout=180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if producer.proc.poll() is not None:
            pytest.fail(
                f"the producer exited ({producer.proc.returncode}) before {what}:\n"
                f"{producer.stderr[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s:\n{producer.stderr[-3000:]}")
        time.sleep(0.2)


def checkpoint_at(edge: Edge, rowid: int) -> Callable[[], bool]:
    def reached() -> bool:
        checkpoint = edge.checkpoint()
        return checkpoint is not None and checkpoint.rowid == rowid

    return reached


def all_streamed(edge: Edge, app: EdgeApp) -> Callable[[], bool]:
    return lambda: set(edge.streamed()) == set(range(1, app.written + 1))


def assert_each_reading_once(edge: Edge, app: EdgeApp) -> None:
    counts = edge.streamed()
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not twice, f"{len(twice)} readings streamed more than once, e.g. {twice[:10]}"
    missing = sorted(set(range(1, app.written + 1)) - set(counts))
    assert not missing, f"{len(missing)} readings never streamed, e.g. {missing[:10]}"
    assert set(counts) == set(range(1, app.written + 1))


def assert_stopped_naming_the_remedy(producer: Producer, edge: Edge, checkpoint: int, *words):
    assert producer.exited() == 1, producer.stderr[-3000:]
    err = producer.stderr
    assert "Traceback" not in err, err[-3000:]
    for fragment in (str(edge.db), f"table {TABLE}", f"rowid {checkpoint}", RESUME_HINT, *words):
        assert fragment in err, (fragment, err[-3000:])


@pytest.fixture
def edge(tmp_path, kafka, schema_registry, unique) -> Edge:
    return Edge(tmp_path, cli_environment(kafka, schema_registry, unique), kafka, schema_registry)


# -- rowids handed out again after the application deleted what was streamed ---------------


def test_reused_rowids_stop_a_running_producer_loudly(edge):
    app = edge.app("integer-primary-key")
    app.write(1500)
    producer = edge.start()
    try:
        wait_for(checkpoint_at(edge, 1500), "checkpoint at rowid 1500", producer)
        assert app.prune(edge.checkpoint()) == 1500  # the table is empty now
        app.write(1000)  # readings 1501..2500 take rowids 1..1000 again
        assert app.rowids() == list(range(1, 1001))
        assert_stopped_naming_the_remedy(producer, edge, 1500)
    finally:
        producer.kill()
    assert set(edge.streamed()) == set(range(1, 1501))  # nothing after the stop

    resumed = edge.once("--on-rowid-reuse", "prune")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("produced 1000 rows"), resumed.stdout
    assert_each_reading_once(edge, app)


def test_prune_mode_streams_every_reading_once_across_kill_9(edge):
    app = edge.app("integer-primary-key")
    app.write(1000)
    producer = edge.start("--on-rowid-reuse", "prune")
    try:
        wait_for(checkpoint_at(edge, 1000), "checkpoint at rowid 1000", producer)
        assert app.prune(edge.checkpoint()) == 1000
        app.write(700)  # rowids 1..700 again
        wait_for(all_streamed(edge, app), "all 1700 readings", producer)
        assert app.prune(edge.checkpoint()) == 700
        producer.kill()
        # While it is down, the emptied table grows past the checkpoint (rowid 700) again.
        app.write(900)
        producer = edge.start("--on-rowid-reuse", "prune")
        wait_for(all_streamed(edge, app), "all 2600 readings", producer)

        # The application writes and prunes on its own schedule; the producer dies once.
        stop = threading.Event()

        def writer() -> None:
            for _ in range(60):
                app.write(40)
                time.sleep(0.05)

        def pruner() -> None:
            while not stop.is_set():
                app.prune(edge.checkpoint())
                stop.wait(0.3)

        threads = [threading.Thread(target=writer), threading.Thread(target=pruner)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            producer.kill()
            producer = edge.start("--on-rowid-reuse", "prune")
            threads[0].join(180)
        finally:
            stop.set()
            for thread in threads:
                thread.join(180)
        wait_for(all_streamed(edge, app), f"all {app.written} readings", producer)
    finally:
        producer.stop()
    assert_each_reading_once(edge, app)
    assert max(edge.source_rowids().values()) > 1  # rowids really were handed out again


def test_an_autoincrement_table_may_be_pruned_without_any_mode(edge):
    app = edge.app("autoincrement")
    app.write(1000)
    assert edge.once().returncode == 0
    assert app.prune(edge.checkpoint()) == 1000
    restarted = edge.once()  # an emptied table is not a recreated one
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    app.write(500)  # rowids 1001..1500: AUTOINCREMENT never hands out a rowid twice
    producer = edge.start()
    try:
        wait_for(checkpoint_at(edge, 1500), "checkpoint at rowid 1500", producer)
        assert app.prune(edge.checkpoint()) == 500
        app.write(300)
        wait_for(all_streamed(edge, app), "all 1800 readings", producer)
    finally:
        producer.stop()
    assert_each_reading_once(edge, app)


# -- VACUUM renumbering a table without INTEGER PRIMARY KEY --------------------------------


def test_vacuum_renumbering_stops_a_running_producer_loudly(edge):
    app = edge.app("no-integer-primary-key")
    app.write(1000)
    producer = edge.start()
    try:
        wait_for(checkpoint_at(edge, 1000), "checkpoint at rowid 1000", producer)
        # The application deletes its 600 oldest (streamed) rows and reclaims the space.
        app.execute(f"DELETE FROM {TABLE} WHERE _rowid_ <= 600", "VACUUM")
        app.write(300)
        assert app.rowids() == list(range(1, 701))  # 601..1000 became 1..400
        assert_stopped_naming_the_remedy(producer, edge, 1000, "VACUUM")
    finally:
        producer.kill()
    assert set(edge.streamed()) == set(range(1, 1001))

    resumed = edge.once("--on-rowid-reuse", "prune")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("produced 300 rows"), resumed.stdout
    assert_each_reading_once(edge, app)  # the renumbered 400 rows were not sent again


def test_vacuum_while_stopped_moved_unstreamed_rows_below_the_checkpoint(edge):
    app = edge.app("no-integer-primary-key")
    app.write(1000)
    assert edge.once().returncode == 0
    app.write(200)  # rowids 1001..1200, not streamed yet
    app.execute(f"DELETE FROM {TABLE} WHERE _rowid_ <= 600", "VACUUM")
    assert app.rowids() == list(range(1, 601))  # the 200 unstreamed rows are now 401..600

    stopped = edge.once()
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    for fragment in (f"table {TABLE}", "rowid 1000", RESUME_HINT, "VACUUM"):
        assert fragment in stopped.stderr, (fragment, stopped.stderr[-3000:])
    assert set(edge.streamed()) == set(range(1, 1001))

    resumed = edge.once("--on-rowid-reuse", "prune")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.startswith("produced 200 rows"), resumed.stdout
    assert_each_reading_once(edge, app)


# -- what the producer says at start --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "notice"),
    [
        ("autoincrement", None),
        ("integer-primary-key", "INTEGER PRIMARY KEY without AUTOINCREMENT"),
        ("no-integer-primary-key", "has no INTEGER PRIMARY KEY"),
    ],
)
def test_the_start_says_when_rowids_are_not_stable(edge, key, notice):
    app = edge.app(key)
    app.write(10)
    result = edge.once()
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    rowid_warnings = [line for line in warnings if "rowid" in line]
    if notice is None:
        assert not rowid_warnings, rowid_warnings
        return
    assert len(rowid_warnings) == 1, result.stderr[-3000:]
    (line,) = rowid_warnings
    for fragment in (notice, f"table {TABLE}", RESUME_HINT, "AUTOINCREMENT"):
        assert fragment in line, (fragment, line)
    if key == "no-integer-primary-key":
        assert "VACUUM" in line
    pruned = edge.once("--on-rowid-reuse", "prune")
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    assert not [
        line for line in pruned.stderr.splitlines() if " WARNING " in line and "rowid" in line
    ]
