"""The Delta writer opens its table afresh after each checkpoint instead of growing one
`DeltaTable` with every commit (its memory is measured by `benchmarks/delta_state.py`); the
reopening at its own checkpoints: tests/unit/sinks/test_delta_writer_checkpoints.py.

Real deltalake on a local path: no server involved."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from sinks.delta_writer import DeltaTableWriter
from sinks.settings import SinkSettings
from sinks.tables import target_for
from tests.unit.sinks.sink_batches import TOPIC, batch


def test_other_writers_commits_still_lead_to_a_reopen(tmp_path: Path) -> None:
    """Versions that never land on a checkpoint of ours reopen after two intervals anyway."""
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    target = target_for(TOPIC, settings, str(tmp_path))
    ours = DeltaTableWriter(target, None, checkpoint_interval=4)
    other = DeltaTableWriter(target, None, checkpoint_interval=4)
    ours.write(batch(0), {(TOPIC, 0): 2})
    first = ours._table
    offset = 3
    for _ in range(3):  # the other writer takes the versions ours would have reopened at
        for _ in range(3):
            other.write(batch(offset), {(TOPIC, 0): offset + 2})
            offset += 3
        ours.write(batch(offset), {(TOPIC, 0): offset + 2})
        ours.settle()
        offset += 3
    ours.write(batch(offset), {(TOPIC, 0): offset + 2})  # takes the table opened afresh
    offset += 3
    assert ours._table is not first
    assert DeltaTable(target.uri).count() == offset


def test_reopen_after_checkpoint_off_keeps_one_table_as_the_earlier_writer_did(
    tmp_path: Path,
) -> None:
    """The delta_state benchmark's baseline: the writer before it reopened its table."""
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    target = target_for(TOPIC, settings, str(tmp_path))
    writer = DeltaTableWriter(target, None, checkpoint_interval=5, reopen_after_checkpoint=False)
    writer.write(batch(0), {(TOPIC, 0): 2})
    first = writer._table
    for i in range(1, 13):  # past two checkpoints (versions 4 and 9)
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
        assert writer._table is first
    assert DeltaTable(target.uri).count() == 39


def test_a_table_with_its_own_interval_is_reopened_at_its_own_checkpoints(tmp_path: Path) -> None:
    """A table created by an earlier release (or set by an operator) checkpoints at its own
    `delta.checkpointInterval`: reopening at the writer's interval instead opened it at
    versions with no checkpoint, replaying every commit since the last one."""
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    target = target_for(TOPIC, settings, str(tmp_path))
    earlier = DeltaTableWriter(target, None, checkpoint_interval=8)
    earlier.write(batch(0), {(TOPIC, 0): 2})  # version 0, created with interval 8
    writer = DeltaTableWriter(target, None, checkpoint_interval=3)
    versions_at_reopen = []
    for i in range(1, 20):
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
        writer.settle()
        versions_at_reopen.append(writer._opened_version)
    # opened at version 0 (for its first write), then for the table's checkpoints: 7, 15
    assert sorted(set(versions_at_reopen)) == [0, 7, 15]
    assert DeltaTable(target.uri).count() == 60
