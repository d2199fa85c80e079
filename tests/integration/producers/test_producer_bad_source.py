"""A bad edge database or bad configuration (DESIGN sections 3 and 7): `sensorstream produce`
exits 2 with a message naming the file and the problem, exits 1 when the database fails while
being tailed, and keeps waiting (without flooding its log) while the broker is unreachable.

What SQLite really does here:
- a 0-byte file is a valid, empty database; random bytes are "file is not a database";
- a writer's `BEGIN EXCLUSIVE` on a rollback-journal (DELETE mode) database locks readers out
  until it commits: the read-only open waits the busy timeout, then "database is locked". In
  WAL mode the same lock does not stop readers;
- overwritten bytes are found where they are read: in the header or the schema page at open
  (exit 2), in a table page only when the tailer reaches it (exit 1, after committing the
  chunks before it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ROW = ("2024-05-01T12:00:00Z", "s-1", 21.5)


def cli_environment(kafka, schema_registry, unique: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SENSORSTREAM_", "KAFKA_", "SCHEMA_REGISTRY_"))
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        SCHEMA_REGISTRY_URL=schema_registry.url,
        SENSORSTREAM_PRODUCER_TOPIC=f"t.readings.{unique}",
        SENSORSTREAM_PRODUCER_DEAD_LETTER_TOPIC=f"t.dlq.{unique}",
        SENSORSTREAM_PRODUCER_CHECKPOINT_TOPIC=f"t.ckpt.{unique}",
        SENSORSTREAM_PRODUCER_NODE_ID=f"n-{unique}",
    )
    return env


def produce_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensorstream", "produce", "--once", *args]


@pytest.fixture
def cli_env(kafka, schema_registry, unique) -> dict[str, str]:
    return cli_environment(kafka, schema_registry, unique)


@pytest.fixture
def produce(cli_env):
    def run(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            produce_command(*args),
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**cli_env, **env},
            timeout=timeout,
        )

    return run


def make_db(path: Path, *statements: str, journal_mode: str = "WAL") -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    for statement in statements:
        conn.execute(statement)
    conn.close()
    return path


def readings_table(name: str = "readings", timestamp: str = "timestamp") -> str:
    return (
        f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, {timestamp} TEXT, sensor_id TEXT, "
        "value REAL)"
    )


def insert_row(table: str = "readings") -> str:
    return f"INSERT INTO {table} VALUES (NULL, '{ROW[0]}', '{ROW[1]}', {ROW[2]})"


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def assert_produced(result: subprocess.CompletedProcess, rows: int) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"produced {rows} rows (0 to the dead-letter topic)")


# -- the file and the configuration: exit 2 before any server is contacted ----------------
#
# Each case builds its input in its own folder and gives the produce arguments; the message
# must contain the fragments, with {db} the folder's edge.db and {dir} the folder.


def random_bytes(folder: Path) -> list[str]:
    (folder / "edge.db").write_bytes(os.urandom(8192))
    return ["--sqlite", str(folder / "edge.db")]


def empty_file(folder: Path) -> list[str]:
    (folder / "edge.db").touch()  # SQLite reads a 0-byte file as an empty database
    return ["--sqlite", str(folder / "edge.db")]


def database(*statements: str, args: tuple[str, ...] = ()):
    def make(folder: Path) -> list[str]:
        make_db(folder / "edge.db", *statements)
        return ["--sqlite", str(folder / "edge.db"), *args]

    return make


def corrupted(offset: int, data: bytes):
    def make(folder: Path) -> list[str]:
        corruptible_db(folder / "edge.db")
        overwrite(folder / "edge.db", offset, data)
        return ["--sqlite", str(folder / "edge.db")]

    return make


def yaml_config(line: str):
    def make(folder: Path) -> list[str]:
        make_db(folder / "edge.db", readings_table(), insert_row())
        config = folder / "edge.yaml"
        config.write_text(
            f"# edge node config\nproducer:\n  sqlite: {folder / 'edge.db'}\n{line}\n"
        )
        return ["--config", str(config)]

    return make


SEVERAL = (readings_table("readings"), readings_table("calibration"), insert_row())
NO_TIMESTAMP = (readings_table(timestamp="taken"), insert_row())
WITHOUT_ROWID = (
    "CREATE TABLE readings (sensor_id TEXT, timestamp TEXT, value REAL, "
    "PRIMARY KEY (sensor_id, timestamp)) WITHOUT ROWID",
    "INSERT INTO readings VALUES ('s-1', '2024-05-01T12:00:00Z', 1.5)",
)
USAGE_ERRORS: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "missing file": (
        lambda folder: ["--sqlite", str(folder / "nowhere" / "edge.db")],
        ("{dir}/nowhere/edge.db: no such SQLite database file",),
    ),
    "a directory": (lambda folder: ["--sqlite", str(folder)], ("{dir}: not a file",)),
    "random bytes": (random_bytes, ("{db}: not a SQLite database (file is not a database)",)),
    "0-byte file": (empty_file, ("{db}: the database has no tables to tail",)),
    "tables dropped": (
        database(readings_table(), "DROP TABLE readings"),
        ("{db}: the database has no tables to tail",),
    ),
    "several tables": (
        database(*SEVERAL),
        ("{db}: several tables (calibration, readings); choose one with --table",),
    ),
    "several tables, --table missing": (
        database(*SEVERAL, args=("--table", "sensor_readings")),
        ("{db}: no table 'sensor_readings' (tables: calibration, readings)",),
    ),
    "no timestamp column": (
        database(*NO_TIMESTAMP),
        (
            "{db}: table 'readings' has no column that looks like an event timestamp "
            "(columns: id, taken, sensor_id, value); pass --timestamp-col NAME",
        ),
    ),
    "--timestamp-col missing": (
        database(*NO_TIMESTAMP, args=("--timestamp-col", "when")),
        ("{db}: --timestamp-col 'when' is not a column of table 'readings'",),
    ),
    "WITHOUT ROWID": (
        database(*WITHOUT_ROWID),
        ("{db}: table 'readings' is a WITHOUT ROWID table; sensorstream tails tables by rowid",),
    ),
    "corrupt file header": (
        corrupted(0, b"\x00" * 16),
        ("{db}: not a SQLite database (file is not a database)",),
    ),
    # Page 1 after the 100-byte file header holds sqlite_master: read at open.
    "corrupt schema page": (
        corrupted(100, b"\xa5" * 1000),
        ("{db}: the SQLite database is corrupt (database disk image is malformed)",),
    ),
    "--region eu/west": (
        database(*NO_TIMESTAMP, args=("--region", "eu/west")),
        ("command-line option --region:", "no '/', '..', spaces"),
    ),
    "--node-id ..": (
        database(*NO_TIMESTAMP, args=("--node-id", "..")),
        ("command-line option --node-id:", "no '/', '..', spaces"),
    ),
    "no --sqlite": (lambda folder: [], ("setting 'sqlite': Field required",)),
    "yaml unknown key": (
        yaml_config("  chunk_size: 100"),
        (
            "{dir}/edge.yaml, line 4, key 'producer.chunk_size': unknown setting; "
            "did you mean 'chunk_rows'?",
        ),
    ),
    "yaml bad value": (
        yaml_config("  chunk_rows: 0"),
        (
            "{dir}/edge.yaml, line 4, key 'producer.chunk_rows': "
            "Input should be greater than or equal to 1",
        ),
    ),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_bad_source_or_config_exits_2_naming_it(case: str, tmp_path, produce) -> None:
    make, fragments = USAGE_ERRORS[case]
    result = produce(*make(tmp_path))
    assert_usage_error(
        result, *(f.format(dir=tmp_path, db=tmp_path / "edge.db") for f in fragments)
    )
    if case == "missing file":
        assert not (tmp_path / "nowhere").exists()  # opened read-only: nothing was created


def test_naming_the_table_fixes_several_tables(tmp_path, produce) -> None:
    path = make_db(tmp_path / "edge.db", *SEVERAL)
    assert_produced(produce("--sqlite", str(path), "--table", "readings"), 1)


def test_naming_the_timestamp_column_fixes_its_absence(tmp_path, produce) -> None:
    path = make_db(tmp_path / "edge.db", *NO_TIMESTAMP)
    assert_produced(produce("--sqlite", str(path), "--timestamp-col", "taken"), 1)


# -- locks ---------------------------------------------------------------------------------


def test_a_database_locked_by_a_writer_outside_wal_mode(tmp_path, produce, cli_env) -> None:
    path = make_db(tmp_path / "edge.db", readings_table(), insert_row(), journal_mode="DELETE")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(insert_row())
        # The lock is held until the producer has given up: with a busy timeout of 0.5 s it
        # must give up, and say so, whatever the machine's speed.
        result = produce("--sqlite", str(path), SENSORSTREAM_PRODUCER_BUSY_TIMEOUT_S="0.5")
        assert_usage_error(
            result,
            f"{path}: the SQLite database stayed locked for 0.5 s (database is locked)",
            "WAL mode",
            "busy_timeout_s",
        )
        # The busy timeout is what the producer waits, not the default 10 s: configured
        # longer, it outwaits a lock held for 15 s after it opened the file, then reads.
        process = subprocess.Popen(
            produce_command("--sqlite", str(path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**cli_env, "SENSORSTREAM_PRODUCER_BUSY_TIMEOUT_S": "600"},
        )
        try:
            wait_for(lambda: has_open(process.pid, path), deadline_s=120, what="open database")
            holding = time.monotonic() + 15
            while time.monotonic() < holding:
                assert process.poll() is None, process.communicate()[1]  # still waiting
                time.sleep(0.2)
            writer.execute("COMMIT")
            stdout, stderr = process.communicate(timeout=180)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        writer.close()
    assert_produced(subprocess.CompletedProcess([], process.returncode, stdout, stderr), 2)


def has_open(pid: int, path: Path) -> bool:
    """Does process `pid` have `path` open (it is past start-up, in the SQLite open)?"""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if Path(os.readlink(fd)) == path.resolve():
                    return True
    return False


def test_a_writer_lock_in_wal_mode_does_not_stop_the_producer(tmp_path, produce) -> None:
    path = make_db(tmp_path / "edge.db", readings_table(), insert_row())
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(insert_row())  # not committed: not seen
        result = produce("--sqlite", str(path), SENSORSTREAM_PRODUCER_BUSY_TIMEOUT_S="0.5")
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert_produced(result, 1)


# -- corruption ----------------------------------------------------------------------------


def corruptible_db(path: Path, rows: int = 2000) -> tuple[int, int]:
    """A rollback-journal database of `rows` rows; returns (page size, page count)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(readings_table())
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO readings VALUES (NULL, ?, ?, ?)",
        [(ROW[0], f"s-{i % 7}", float(i)) for i in range(rows)],
    )
    conn.execute("COMMIT")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    return page_size, page_count


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


def test_corruption_found_while_tailing_is_a_runtime_failure(
    tmp_path, produce, kafka, schema_registry, unique
) -> None:
    path = tmp_path / "edge.db"
    page_size, page_count = corruptible_db(path)
    overwrite(path, page_size * (page_count // 2), b"\xa5" * page_size)  # a leaf mid-table

    result = produce("--sqlite", str(path), SENSORSTREAM_PRODUCER_CHUNK_ROWS="100")

    assert result.returncode == 1, result.stderr
    assert (
        f"sensorstream produce: {path}: reading table 'readings': the SQLite database is "
        "corrupt (database disk image is malformed)"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    # The chunks before the bad page were committed, each row once, in order; then it stopped.
    decoder = AvroDecoder(schema_registry.url)
    rowids = [
        decoder.decode(m.value())[1]["_source_rowid"]
        for m in read_topic(kafka.bootstrap_servers, f"t.readings.{unique}")
    ]
    assert len(rowids) % 100 == 0 and 0 < len(rowids) < 2000
    assert sorted(rowids) == list(range(1, len(rowids) + 1))


# -- the broker ----------------------------------------------------------------------------


def test_an_unreachable_broker_is_waited_for_quietly_and_sigterm_stops_cleanly(
    tmp_path, cli_env
) -> None:
    path = make_db(tmp_path / "edge.db", readings_table(), insert_row())
    interval_s = 2.0
    env = {
        **cli_env,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens there
        "SENSORSTREAM_PRODUCER_STATUS_INTERVAL_S": f"{interval_s:g}",
    }
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr_file:
        started = time.monotonic()
        process = subprocess.Popen(
            produce_command("--sqlite", str(path)),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            cwd=REPO,
            env=env,
        )
        try:
            # Waiting, not exited: it says the broker is unreachable, then reports once an
            # interval while it keeps trying (two status lines: at least one full interval).
            wait_for(
                lambda: log.read_text().count("offline for") >= 2 or process.poll() is not None,
                deadline_s=120,
                what="two offline status lines",
            )
            assert process.poll() is None, log.read_text()
            process.send_signal(signal.SIGTERM)
            # It stops once the metadata request in flight times out (librdkafka: at most
            # 10 s); the deadline is for a loaded machine.
            stdout, _ = process.communicate(timeout=120)
            running_s = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stderr = log.read_text()
    assert process.returncode == 0, stderr
    assert stdout.startswith("produced 0 rows (0 to the dead-letter topic) in 0 transactions")
    lines = stderr.splitlines()
    # State changes and one status line per interval, no more: however long it ran.
    status = [line for line in lines if "offline for" in line]
    assert len(status) <= running_s / interval_s + 1, stderr
    assert len(lines) - len(status) <= 5, stderr
    assert sum("is unreachable" in line for line in lines) == 1, stderr
    # librdkafka's own lines go through the throttled logger, not straight to stderr.
    assert not any(line.startswith("%") for line in lines), stderr
    assert "Traceback" not in stderr


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {deadline_s:g} s"
        time.sleep(0.1)
