"""The same edge database under a new node id (DESIGN section 5, edge life): refused loudly,
never streamed twice; a rename declared with --renamed-from continues the earlier checkpoint.

Runs `sensorstream produce --once` as a process against the real broker and registry, so exit
codes and messages are the operator's."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.producers.test_producer import START, simulate, sqlite_rows, topic_records
from tests.integration.producers.test_producer_bad_source import (
    REPO,
    cli_environment,
    produce_command,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def produce(kafka, schema_registry, unique):
    env = cli_environment(kafka, schema_registry, unique)

    def run(db: Path, node: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            produce_command("--sqlite", str(db), "--node-id", node, *args),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=180,
        )

    return run


def produced(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return int(result.stdout.split()[1])  # "produced N rows (...)"


def refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def records_by_rowid(kafka, schema_registry, unique) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = {}
    for _, _, record in topic_records(kafka, schema_registry, f"t.readings.{unique}"):
        found.setdefault(record["_source_rowid"], []).append(record)
    return found


def test_a_new_node_id_is_refused_and_a_declared_rename_sends_nothing_twice(
    kafka, schema_registry, unique, tmp_path, produce
):
    db = tmp_path / "edge.db"
    node_a, node_b = f"a-{unique}", f"b-{unique}"
    simulate(db, 1200)
    assert produced(produce(db, node_a)) == 1200

    # The same database as node B: refused, naming node A and the remedies; nothing sent.
    refused(
        produce(db, node_b),
        str(db),
        f"already produced as node {node_a}",
        f"--renamed-from {node_a}",
        f"--distinct-from {node_a}",
        "Nothing was produced",
    )
    assert len(records_by_rowid(kafka, schema_registry, unique)) == 1200

    # Declared: node B continues after node A's last row; the new rows stream once.
    simulate(db, 300, seed=8, start=START + timedelta(hours=1))
    assert produced(produce(db, node_b, "--renamed-from", node_a)) == 300
    # Left set (as in a deployment's environment), the option changes nothing afterwards.
    assert produced(produce(db, node_b, "--renamed-from", node_a)) == 0
    assert produced(produce(db, node_b)) == 0

    found = records_by_rowid(kafka, schema_registry, unique)
    assert set(found) == set(sqlite_rows(db))
    assert not {rowid: len(rs) for rowid, rs in found.items() if len(rs) > 1}
    assert Counter(rs[0]["_node_id"] for rs in found.values()) == {node_a: 1200, node_b: 300}
    assert {rs[0]["_node_id"] for rowid, rs in found.items() if rowid > 1200} == {node_b}

    # The old name cannot stream it again; nor can a third name, which is told the new owner.
    refused(produce(db, node_a), f"handed over to node {node_b}", f"--node-id {node_b}")
    refused(produce(db, f"c-{unique}"), f"already produced as node {node_b}")
    assert len(records_by_rowid(kafka, schema_registry, unique)) == 1500


def test_a_new_database_is_not_taken_for_another_nodes(
    kafka, schema_registry, unique, tmp_path, produce
):
    """Two nodes started together: same rowids at the same event times, other sensors."""
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    simulate(first, 800, seed=7)
    simulate(second, 800, seed=11)
    assert produced(produce(first, f"a-{unique}")) == 800
    assert produced(produce(second, f"b-{unique}")) == 800


def test_distinct_from_streams_a_database_that_holds_the_same_readings(
    kafka, schema_registry, unique, tmp_path, produce
):
    """A copy of a produced database is refused (its readings were sent); an operator who
    knows better says so for that node."""
    original, copy = tmp_path / "original.db", tmp_path / "copy.db"
    simulate(original, 400)
    assert produced(produce(original, f"a-{unique}")) == 400
    shutil.copy(original, copy)
    refused(produce(copy, f"b-{unique}"), f"already produced as node a-{unique}")
    assert produced(produce(copy, f"b-{unique}", "--distinct-from", f"a-{unique}")) == 400


def test_renamed_from_a_node_that_produced_another_database_is_refused(
    kafka, schema_registry, unique, tmp_path, produce
):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    simulate(first, 300, seed=7)
    simulate(second, 500, seed=11)
    assert produced(produce(first, f"a-{unique}")) == 300
    refused(
        produce(second, f"b-{unique}", "--renamed-from", f"a-{unique}"),
        f"not the database node a-{unique} produced",
    )
    refused(
        produce(second, f"b-{unique}", "--renamed-from", f"nobody-{unique}"),
        f"node nobody-{unique} has no checkpoint",
    )
    assert produced(produce(second, f"b-{unique}")) == 500


def test_the_handover_fences_a_producer_still_running_under_the_old_name(
    kafka, schema_registry, connection, unique, tmp_path, produce
):
    """Renamed while the old producer still runs: the old one stops at its next commit, and
    each new row is streamed once, by the new name."""
    from producers.settings import ProducerSettings
    from producers.tailer import EdgeTailer, ProducerFenced
    from sensorstream.errors import ConfigError

    db = tmp_path / "edge.db"
    node_a, node_b = f"a-{unique}", f"b-{unique}"
    simulate(db, 500)
    settings = ProducerSettings(
        sqlite=db,
        node_id=node_a,
        region="eu-west-1",
        topic=f"t.readings.{unique}",
        dead_letter_topic=f"t.dlq.{unique}",
        checkpoint_topic=f"t.ckpt.{unique}",
    )
    stop = threading.Event()
    old = EdgeTailer(settings, connection, stop)
    outcome: list[BaseException | None] = []

    def run_old() -> None:
        try:
            old.run()
            outcome.append(None)
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)

    runner = threading.Thread(target=run_old)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while old.checkpoint is None or old.checkpoint.rowid < 500:
            assert time.monotonic() < deadline, "the old producer did not catch up"
            stop.wait(0.1)
        assert produced(produce(db, node_b, "--renamed-from", node_a)) == 0
        simulate(db, 200, seed=8, start=START + timedelta(hours=1))
        runner.join(120)
        assert not runner.is_alive(), "the old producer kept running after the handover"
    finally:
        stop.set()
        runner.join(30)
    # Fenced at its commit; depending on the error librdkafka reports, it stops at once or
    # after re-reading its checkpoint, which names the new owner.
    assert len(outcome) == 1, outcome
    stopped = outcome[0]
    assert isinstance(stopped, ProducerFenced) or (
        isinstance(stopped, ConfigError) and f"handed over to node {node_b}" in str(stopped)
    ), repr(stopped)
    assert produced(produce(db, node_b)) == 200
    found = records_by_rowid(kafka, schema_registry, unique)
    assert set(found) == set(sqlite_rows(db))
    assert not {rowid: len(rs) for rowid, rs in found.items() if len(rs) > 1}
    assert {rs[0]["_node_id"] for rowid, rs in found.items() if rowid > 500} == {node_b}
