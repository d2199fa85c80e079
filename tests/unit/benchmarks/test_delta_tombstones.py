"""The tombstones benchmark builds what it says: the same live files, and removals only in
the log (so its open-time ratio measures the removals and nothing else)."""

from __future__ import annotations

from deltalake import DeltaTable

from benchmarks.delta_tombstones import build, measure
from sinks.table_log import DEFAULT_CHECKPOINT_INTERVAL


def test_removals_stay_in_the_checkpoint_and_leave_the_live_table_alike(tmp_path):
    fresh, compacted = str(tmp_path / "fresh"), str(tmp_path / "compacted")
    build(fresh, 0)
    build(compacted, 2_000)

    # Both end 19 commits past a checkpoint, with one live file per commit since it.
    for uri in (fresh, compacted):
        table = DeltaTable(uri)
        assert len(table.file_uris()) == DEFAULT_CHECKPOINT_INTERVAL
        assert table.to_pyarrow_table().num_rows == DEFAULT_CHECKPOINT_INTERVAL
    fresh_log, compacted_log = measure(fresh, 1), measure(compacted, 1)
    # The 2,000 removals are in the newest checkpoint: tens of bytes each.
    assert compacted_log["checkpoint_bytes"] - fresh_log["checkpoint_bytes"] > 2_000 * 40
    assert DeltaTable(compacted).get_add_actions(flatten=True).num_rows == (
        DEFAULT_CHECKPOINT_INTERVAL
    )
