"""The producer on a read-only mount of a WAL database, as the Bacalhau job runs it.

SQLite on read-only media reads a WAL database through its `-wal` and `-shm` files and cannot
create them. A writer that stops while no other connection is open checkpoints the database and
removes both; before, a producer started then exited 2 ("unable to open database file"). Here
the writer starts, stops and starts again around the running producer, and every row reaches
the topic exactly once. The mount is a real read-only bind mount, not file permissions: root
ignores permission bits.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.producers.test_producer import START, simulate
from tests.integration.producers.test_producer_bad_source import cli_environment
from tests.producer_process import (
    REPO,
    assert_each_once,
    produced_rows,
    running_producer,
    source_rows,
    wait_streamed,
)

pytestmark = pytest.mark.integration


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def read_only_mount(tmp_path) -> Iterator[tuple[Path, Path]]:
    """(writable folder, read-only bind mount of it); unmounted whatever happens."""
    writable, mounted = tmp_path / "sensors", tmp_path / "sensors-ro"
    writable.mkdir()
    mounted.mkdir()
    bind = _run("mount", "--bind", str(writable), str(mounted))
    if bind.returncode != 0:
        reason = f"cannot bind-mount here (mount --bind: {bind.stderr.strip()}); needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run these tests")
        pytest.skip(reason)
    try:
        remount = _run("mount", "-o", "remount,bind,ro", str(mounted))
        assert remount.returncode == 0, remount.stderr
        probe = mounted / "probe"
        with pytest.raises(OSError, match="Read-only file system"):
            probe.write_text("")
        yield writable, mounted
    finally:
        if _run("umount", str(mounted)).returncode != 0:
            _run("umount", "-l", str(mounted))


def mounted_env(kafka, schema_registry, unique: str, mounted: Path, **extra: str) -> dict:
    """The producer's environment, reading `edge.db` through the read-only mount."""
    return {
        **cli_environment(kafka, schema_registry, unique),
        "SENSORSTREAM_PRODUCER_SQLITE": str(mounted / "edge.db"),
        "SENSORSTREAM_PRODUCER_METRICS_PORT": "0",
        **extra,
    }


def companions(db: Path) -> set[str]:
    return {s for s in ("-wal", "-shm") if db.with_name(db.name + s).exists()}


@pytest.mark.parametrize("at_start", ["writer-stopped", "writer-running"])
def test_every_row_streams_once_as_the_writer_stops_and_starts(
    kafka, schema_registry, unique, tmp_path, read_only_mount, at_start
):
    writable, mounted = read_only_mount
    db = writable / "edge.db"
    env = mounted_env(
        kafka, schema_registry, unique, mounted, SENSORSTREAM_PRODUCER_CHUNK_ROWS="100"
    )
    topic = env["SENSORSTREAM_PRODUCER_TOPIC"]
    hour = iter(range(1, 100))

    def write(count: int) -> set:
        """A writer session: open, append, close (SQLite removes the WAL if it is alone)."""
        session = next(hour)
        simulate(db, count, seed=session, start=START + timedelta(hours=session))
        return source_rows(db)

    rows = write(300)
    assert companions(db) == set()  # the writer stopped and removed its WAL files
    writer = None
    if at_start == "writer-running":
        writer = sqlite3.connect(db)  # the sensor application, holding the database open
        writer.execute("SELECT count(*) FROM sensor_readings").fetchone()
        rows = write(50)
        assert companions(db) == {"-wal", "-shm"}
    log = tmp_path / "producer.log"
    with running_producer(env, log) as producer:

        def stage(rows: set, what: str) -> None:
            bootstrap, registry_url = kafka.bootstrap_servers, schema_registry.url
            wait_streamed(producer, log, bootstrap, registry_url, topic, rows, what)

        stage(rows, f"the rows there at start ({at_start})")
        # The writer starts again later and keeps the database open while appending.
        writer = writer or sqlite3.connect(db)
        writer.execute("SELECT count(*) FROM sensor_readings").fetchone()
        rows = write(200)
        assert companions(db) == {"-wal", "-shm"}
        stage(rows, "the rows of a running writer")
        # The writer stops; a later session appends and stops again.
        writer.close()
        rows = write(100)
        stage(rows, "the rows of a writer session after a stop")
        # The writer stops and its WAL files go (checkpointed into the database first),
        # while the producer runs; then it starts again and appends.
        checkpointer = sqlite3.connect(db)
        checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpointer.close()
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        rows = write(150)
        stage(rows, "the rows after the WAL files were removed and the writer came back")
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
    assert producer.returncode == 0, log.read_text()
    assert_each_once(produced_rows(kafka.bootstrap_servers, schema_registry.url, topic), rows)


def test_a_drain_and_a_replaced_database_on_the_mount_with_the_writer_stopped(
    kafka, schema_registry, unique, tmp_path, read_only_mount
):
    writable, mounted = read_only_mount
    db = writable / "edge.db"
    env = mounted_env(
        kafka, schema_registry, unique, mounted, SENSORSTREAM_PRODUCER_ON_RECREATED="restart"
    )
    topic = env["SENSORSTREAM_PRODUCER_TOPIC"]
    simulate(db, 300)
    old_rows = source_rows(db)
    assert companions(db) == set()
    # The drain job (producer-drain.yaml): everything there now, then exit 0.
    drained = subprocess.run(
        [sys.executable, "-m", "sensorstream", "produce", "--once"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.startswith("produced 300 rows"), drained.stdout
    log = tmp_path / "producer.log"
    with running_producer(env, log) as producer:
        # A new database made elsewhere is moved in, and a writer starts appending to it.
        simulate(tmp_path / "new.db", 200, seed=99, start=START + timedelta(days=1))
        os.replace(tmp_path / "new.db", db)
        simulate(db, 100, seed=100, start=START + timedelta(days=1, hours=1))
        new_rows = source_rows(db)
        assert len(new_rows) == 300
        wait_streamed(
            producer,
            log,
            kafka.bootstrap_servers,
            schema_registry.url,
            topic,
            old_rows | new_rows,
            "the new database streamed",
        )
    produced = produced_rows(kafka.bootstrap_servers, schema_registry.url, topic)
    assert_each_once(produced, old_rows | new_rows)
