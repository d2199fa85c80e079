"""The edge database replaced while the producer runs (DESIGN section 5, edge life).

A database moved over the path, or deleted and created again, is noticed at the next poll
after the old file's last row, and the new file is checked against the checkpoint as at start:
with `--on-recreated restart` every row of both files reaches the topic exactly once; with the
default the producer stops (exit 1) naming the file and the remedy. Before, the producer kept
reading the old file and never streamed another row, without a word.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from subprocess import Popen

import pytest

from tests.integration.producers.test_producer import START, recreate, simulate
from tests.integration.producers.test_producer_bad_source import cli_environment
from tests.producer_process import (
    assert_each_once,
    produced_rows,
    running_producer,
    source_rows,
    wait_streamed,
)

pytestmark = pytest.mark.integration

NEW_DAY = START + timedelta(days=1)


@pytest.fixture
def env(kafka, schema_registry, tmp_path, unique) -> dict[str, str]:
    return {
        **cli_environment(kafka, schema_registry, unique),
        "SENSORSTREAM_PRODUCER_SQLITE": str(tmp_path / "edge.db"),
        "SENSORSTREAM_PRODUCER_CHUNK_ROWS": "100",
        "SENSORSTREAM_PRODUCER_METRICS_PORT": "0",
    }


@pytest.fixture
def streamed(kafka, schema_registry, env, tmp_path) -> Callable[[Popen, set, str], None]:
    """`streamed(producer, rows, what)`: until every one of `rows` is in the producer's topic;
    at once, with the producer's log, if it stopped first."""
    log, topic = tmp_path / "producer.log", env["SENSORSTREAM_PRODUCER_TOPIC"]

    def wait(producer: Popen, rows: set, what: str) -> None:
        wait_streamed(
            producer, log, kafka.bootstrap_servers, schema_registry.url, topic, rows, what
        )

    return wait


def move_over(db: Path, folder: Path) -> None:
    """A new database renamed over the path, the old one moved away with its WAL files."""
    simulate(folder / "new.db", 200, seed=99, start=NEW_DAY)
    old = folder / "old"
    old.mkdir()
    for suffix in ("", "-wal", "-shm"):
        if db.with_name(db.name + suffix).exists():
            os.replace(db.with_name(db.name + suffix), old / (db.name + suffix))
    os.replace(folder / "new.db", db)


def delete_and_recreate(db: Path, folder: Path) -> None:
    recreate(db)
    simulate(db, 200, seed=99, start=NEW_DAY)


REPLACEMENTS = {"moved-over": move_over, "deleted-and-recreated": delete_and_recreate}


def produced(kafka, schema_registry, env):
    return produced_rows(
        kafka.bootstrap_servers, schema_registry.url, env["SENSORSTREAM_PRODUCER_TOPIC"]
    )


@pytest.mark.parametrize("replace", REPLACEMENTS.values(), ids=REPLACEMENTS.keys())
def test_every_row_of_the_new_file_streams_once_with_restart(
    kafka, schema_registry, env, tmp_path, streamed, replace
):
    db = Path(env["SENSORSTREAM_PRODUCER_SQLITE"])
    simulate(db, 300)
    old_rows = source_rows(db)
    env = {**env, "SENSORSTREAM_PRODUCER_ON_RECREATED": "restart"}
    with running_producer(env, tmp_path / "producer.log") as producer:
        streamed(producer, old_rows, "the old database streamed")
        replace(db, tmp_path)
        # The writer goes on appending to the new file.
        simulate(db, 100, seed=100, start=NEW_DAY + timedelta(hours=1))
        new_rows = source_rows(db)
        assert len(new_rows) == 300
        streamed(producer, old_rows | new_rows, "every row of the new database streamed")
    assert_each_once(produced(kafka, schema_registry, env), old_rows | new_rows)
    log = (tmp_path / "producer.log").read_text()
    assert "while being tailed" in log and "on_recreated=restart" in log, log


def test_a_replaced_database_stops_the_producer_loudly_by_default(
    kafka, schema_registry, env, tmp_path, streamed
):
    db = Path(env["SENSORSTREAM_PRODUCER_SQLITE"])
    simulate(db, 300)
    old_rows = source_rows(db)
    with running_producer(env, tmp_path / "producer.log") as producer:
        streamed(producer, old_rows, "the old database streamed")
        move_over(db, tmp_path)
        producer.wait(120)
    log = (tmp_path / "producer.log").read_text()
    assert producer.returncode == 1, log
    assert f"{db}: table sensor_readings was recreated" in log
    assert "--on-recreated restart" in log
    assert "Traceback" not in log
    assert_each_once(produced(kafka, schema_registry, env), old_rows)  # nothing of the new one


def test_a_copy_of_the_same_database_moved_over_resumes_after_the_checkpoint(
    kafka, schema_registry, env, tmp_path, streamed
):
    db = Path(env["SENSORSTREAM_PRODUCER_SQLITE"])
    simulate(db, 300)
    with running_producer(env, tmp_path / "producer.log") as producer:
        streamed(producer, source_rows(db), "the database streamed")
        # e.g. a compacted copy put in place: the same rows, then more of them.
        copy = tmp_path / "copy.db"
        conn = sqlite3.connect(db)
        conn.execute("VACUUM INTO ?", (str(copy),))
        conn.close()
        simulate(copy, 150, seed=8, start=START + timedelta(hours=1))
        for suffix in ("-wal", "-shm"):
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        os.replace(copy, db)
        rows = source_rows(db)
        assert len(rows) == 450
        streamed(producer, rows, "the copy's new rows streamed")
    assert_each_once(produced(kafka, schema_registry, env), rows)


def test_the_old_files_wal_left_beside_a_new_database_stops_the_producer(
    kafka, schema_registry, env, tmp_path, streamed
):
    db = Path(env["SENSORSTREAM_PRODUCER_SQLITE"])
    simulate(db, 300)
    with running_producer(env, tmp_path / "producer.log") as producer:
        streamed(producer, source_rows(db), "the database streamed")
        # A writer's session while the producer has the database open: its WAL stays.
        simulate(db, 100, seed=8, start=START + timedelta(hours=1))
        rows = source_rows(db)
        streamed(producer, rows, "the new rows streamed")
        assert db.with_name(db.name + "-wal").stat().st_size > 0
        simulate(tmp_path / "new.db", 200, seed=99, start=NEW_DAY)
        os.replace(tmp_path / "new.db", db)  # without moving the old -wal and -shm away
        producer.wait(120)
    log = (tmp_path / "producer.log").read_text()
    assert producer.returncode == 1, log
    assert "edge.db-wal beside it still belongs to the replaced file" in log, log
    assert "move the old -wal and -shm files away" in log
    assert_each_once(produced(kafka, schema_registry, env), rows)


def test_a_deleted_database_that_does_not_come_back_stops_the_producer(
    kafka, schema_registry, env, tmp_path, streamed
):
    db = Path(env["SENSORSTREAM_PRODUCER_SQLITE"])
    simulate(db, 50)
    env = {**env, "SENSORSTREAM_PRODUCER_REOPEN_TIMEOUT_S": "5"}
    with running_producer(env, tmp_path / "producer.log") as producer:
        streamed(producer, source_rows(db), "the database streamed")
        recreate(db)
        producer.wait(120)
    log = (tmp_path / "producer.log").read_text()
    assert producer.returncode == 2, log
    assert f"{db}: no such SQLite database file" in log
    assert "was deleted while being tailed" in log and "within 5 s" in log
