"""The Delta writer writes its table's checkpoints after its commits return, not inside them.

A checkpoint (and the table opened afresh from it) took a commit of a small table from about
35 ms to 190-250 ms here, and a 7-day-old table's checkpoint holds some 200,000 removals (333
ms of CPU). Real deltalake on a local path; a checkpoint is held back with an event where a
test needs one in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable

from sinks.delta_writer import DeltaTableWriter
from sinks.log_keeper import LogCare
from sinks.settings import SinkSettings
from sinks.table_log import MAX_CHECKPOINT_STRETCH, checkpoint_stretch
from sinks.tables import app_id, target_for
from tests.unit.sinks.sink_batches import TOPIC, batch

DEADLINE_S = 120.0


def checkpoints(uri: str) -> list[int]:
    """Versions of the checkpoints in the table's log."""
    names = (Path(uri) / "_delta_log").glob("*.checkpoint.parquet")
    return sorted(int(p.name.split(".")[0]) for p in names)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.02)


@pytest.fixture
def held_checkpoints(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Checkpoints written through `DeltaTable.create_checkpoint` wait for the event."""
    release = threading.Event()
    original = DeltaTable.create_checkpoint

    def held(table: DeltaTable) -> None:
        assert release.wait(DEADLINE_S), "the test never released the checkpoint"
        original(table)

    monkeypatch.setattr(DeltaTable, "create_checkpoint", held)
    yield release
    release.set()


def writer_at(tmp_path: Path, interval: int) -> DeltaTableWriter:
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    return DeltaTableWriter(target_for(TOPIC, settings, str(tmp_path)), None, interval)


def test_the_commit_a_checkpoint_is_due_after_returns_before_it_is_written(
    tmp_path: Path, held_checkpoints: threading.Event
) -> None:
    writer = writer_at(tmp_path, interval=5)
    for i in range(5):  # versions 0-4: the checkpoint of version 4 is due after the fifth
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
    # the fifth commit returned, its rows readable, although the checkpoint is still held
    assert checkpoints(writer.target.uri) == []
    assert DeltaTable(writer.target.uri).count() == 15
    # the next batch goes on once the checkpoint is written (at the version it was due)
    landed: list[int] = []
    sixth = threading.Thread(
        target=lambda: landed.append(writer.write(batch(15), {(TOPIC, 0): 17}))
    )
    sixth.start()
    held_checkpoints.set()
    sixth.join(DEADLINE_S)
    assert landed == [3]
    writer.close()
    assert checkpoints(writer.target.uri) == [4]
    assert DeltaTable(writer.target.uri).count() == 18


def test_close_waits_for_the_checkpoint_in_flight(tmp_path: Path) -> None:
    """A sink that stops (or `--once` that ends) leaves the checkpoint it owed written."""
    writer = writer_at(tmp_path, interval=5)
    for i in range(5):
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
    writer.close()
    assert checkpoints(writer.target.uri) == [4]


def test_the_table_is_opened_afresh_from_each_checkpoint_and_misses_nothing(
    tmp_path: Path,
) -> None:
    """The writer takes the table its checkpoint was written from (its state starts small
    again) and brings it up to its own last commit before the next batch."""
    writer = writer_at(tmp_path, interval=5)
    opened_at = []
    for i in range(23):
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
        writer.settle()
        opened_at.append(writer._opened_version)
    assert sorted(set(opened_at)) == [0, 4, 9, 14, 19]
    assert checkpoints(writer.target.uri) == [4, 9, 14, 19]
    # a replayed batch is still recognised through the table opened afresh
    assert writer.write(batch(30), {(TOPIC, 0): 68}) == 0
    writer.close()
    final = DeltaTable(writer.target.uri)
    assert final.count() == 69
    assert final.transaction_version(app_id(TOPIC, 0)) == 68


def test_a_failed_checkpoint_is_reported_and_the_next_one_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = DeltaTable.create_checkpoint
    failures = iter([OSError("the store refused the checkpoint")])

    def failing_once(table: DeltaTable) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        original(table)

    monkeypatch.setattr(DeltaTable, "create_checkpoint", failing_once)
    failed: list[str] = []
    written: list[float] = []
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    writer = DeltaTableWriter(
        target_for(TOPIC, settings, str(tmp_path)),
        None,
        5,
        on_checkpoint_failure=lambda: failed.append("checkpoint"),
        on_checkpoint=written.append,
    )
    with caplog.at_level(logging.WARNING, logger="sensorstream.sink"):
        for i in range(5):
            writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
        writer.settle()
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            "checkpoint" in m and writer.target.uri in m and "refused" in m for m in warned
        ), warned
        assert checkpoints(writer.target.uri) == []
        assert failed == ["checkpoint"]  # counted for the sink's metrics
        assert written == []  # a failed checkpoint has no duration to report
        for i in range(5, 10):
            writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
        writer.close()
    assert checkpoints(writer.target.uri) == [9]
    assert failed == ["checkpoint"]
    # The one written is timed for the sink's metrics: how long a checkpoint takes is what
    # grows as a table collects removals (docs/runbook.md, "Removals").
    assert len(written) == 1 and 0 < written[0] < DEADLINE_S
    assert DeltaTable(writer.target.uri).count() == 30


def test_care_asked_for_while_the_keeper_is_busy_is_done_once() -> None:
    """A fresh open asked for after a checkpoint is part of it; one asked for before is not
    needed once a checkpoint's fresh open is due."""
    first = LogCare(19, checkpoint=True, clean=True)
    assert first.merged(LogCare(25, checkpoint=False, clean=False)) == first
    assert LogCare(25, False, False).merged(first) == first
    assert LogCare(25, False, False).merged(LogCare(30, False, False)) == LogCare(30, False, False)


@pytest.mark.parametrize(
    ("seconds", "interval", "stretch"),
    [
        (0.0, 20, 1),
        (0.05, 20, 1),  # a young table's checkpoint
        (0.39, 20, 1),
        (0.4, 20, 2),
        (0.7, 20, 3),  # a table holding a week of 3 s flushes' removals
        (60.0, 20, MAX_CHECKPOINT_STRETCH),
        (0.19, 5, 1),  # a short interval stretches at 0.2 s of CPU, no sooner
        (0.4, 5, 2),
    ],
)
def test_a_costly_checkpoint_spaces_the_next_ones_out(seconds, interval, stretch):
    assert checkpoint_stretch(seconds, interval) == stretch


def test_the_writer_checkpoints_less_often_while_its_checkpoints_are_costly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A week of compaction leaves some 200,000 removals in a table's state: writing a
    # checkpoint every 20 commits and opening the table from it then cost 47 ms of CPU per
    # commit where a young table's cost 15 (docs/benchmarks.md, "Delta log: the removals a
    # week of compaction leaves"). Here the first checkpoint is made that costly, the later
    # ones are cheap again.
    original = DeltaTable.create_checkpoint
    costly = [0.65]

    def checkpoint(table: DeltaTable) -> None:
        if costly:  # the CPU of writing a large state
            started, cpu = time.thread_time(), costly.pop()
            while time.thread_time() - started < cpu:
                pass
        original(table)

    monkeypatch.setattr(DeltaTable, "create_checkpoint", checkpoint)
    written: list[float] = []
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    writer = DeltaTableWriter(
        target_for(TOPIC, settings, str(tmp_path)), None, 5, on_checkpoint=written.append
    )
    for i in range(25):
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
        writer.settle()
    writer.close()
    # 0.65 s of CPU for a checkpoint every 5 commits: the next one 3 intervals on (version 14,
    # not 9); that one is cheap, which brings the table's own interval back.
    assert checkpoints(writer.target.uri) == [4, 14, 19, 24]
    assert len(written) == 4 and written[0] >= 0.65
    final = DeltaTable(writer.target.uri)
    assert final.count() == 75
    assert final.transaction_version(app_id(TOPIC, 0)) == 74
