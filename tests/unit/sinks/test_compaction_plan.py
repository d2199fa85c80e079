"""The compaction planner: which partitions to compact, with which tier, and when to leave a
partition alone (pure logic; the integration tests run it on real tables)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from sinks.compaction_plan import CompactionPolicy, DataFile, Partition, partitions_of, plan

KiB = 1024
NOW_MS = 10_000_000
POLICY = CompactionPolicy(
    open_tier_bytes=(100 * KiB, 1000 * KiB),
    max_files_per_tier=3,
    closed_file_bytes=10_000 * KiB,
    closed_min_file_bytes=600 * KiB,
    window_s=60,
)


def partition(*sizes_kib: int, age_s: float = 1) -> Partition:
    modified = NOW_MS - int(age_s * 1000)
    files = tuple(DataFile(f"f{i}", s * KiB, modified) for i, s in enumerate(sizes_kib))
    return Partition((("event_date", "2026-12-02"),), files)


def test_groups_add_actions_by_partition_values():
    rows = [
        {
            "path": "a",
            "size_bytes": 1,
            "modification_time": 5,
            "partition.event_date": date(2026, 12, 2),
        },
        {
            "path": "b",
            "size_bytes": 2,
            "modification_time": 6,
            "partition.event_date": date(2026, 12, 1),
        },
        {
            "path": "c",
            "size_bytes": 3,
            "modification_time": 7,
            "partition.event_date": date(2026, 12, 2),
        },
    ]
    found = {p.name: [f.path for f in p.files] for p in partitions_of(rows)}
    assert found == {"event_date=2026-12-01": ["b"], "event_date=2026-12-02": ["a", "c"]}
    assert partitions_of(rows)[1].filters == [("event_date", "=", "2026-12-02")]
    assert partitions_of(rows)[1].newest_ms == 7


def test_a_compaction_output_does_not_reopen_a_closed_day():
    """A merged file is new (its modification time is the compaction's), but its rows landed
    when the sink wrote them: `_ingested_at`'s max statistic says so. Had the file's time
    counted, every closed-tier merge would reopen the day for a whole window, and `maintain
    --once` would stop with the day's files still under the minimum size."""
    landed = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    landed_ms = int(landed.timestamp() * 1000)
    rows = [
        {
            "path": "merged",
            "size_bytes": 10,
            "modification_time": landed_ms + 3_600_000,
            "max._ingested_at": landed,
            "partition.event_date": date(2026, 12, 2),
        },
        {
            "path": "no-stats",
            "size_bytes": 10,
            "modification_time": landed_ms - 5,
            "max._ingested_at": None,
            "partition.event_date": date(2026, 12, 2),
        },
    ]
    (day,) = partitions_of(rows)
    assert day.newest_ms == landed_ms
    policy = CompactionPolicy((100, 1000), 3, 10_000, 600, window_s=60)
    step = plan(day, policy, now_ms=landed_ms + 3_600_000 + 1_000)
    assert step is not None and step.tier == "closed"


def test_unpartitioned_table_has_one_partition_without_filters():
    (only,) = partitions_of([{"path": "a", "size_bytes": 1, "modification_time": 5}])
    assert only.filters is None


@pytest.mark.parametrize(
    ("sizes", "tier"),
    [
        ((10, 10, 10), None),  # few small files: not worth a commit yet
        ((10, 10, 10, 10), "open1"),
        ((30, 30, 10, 10, 10), None),  # a quarter-full first-tier output is done for that tier
        ((30, 30, 30, 30), "open2"),
        ((30, 30, 30, 30, 10, 10, 10, 10), "open2"),  # the bigger tier takes the small files too
        ((300, 30, 30, 30, 10), None),
        ((1200, 900, 300, 300, 300, 300, 10), None),  # big files: no open tier rewrites them
    ],
)
def test_open_partition_tiers(sizes, tier):
    step = plan(partition(*sizes), POLICY, NOW_MS)
    assert (step.tier if step else None) == tier


def test_small_tier_candidates_are_what_delta_rs_would_consider():
    step = plan(partition(10, 10, 10, 10, 60, 500), POLICY, NOW_MS)
    assert step is not None and step.target_size == 100 * KiB
    assert step.candidates == frozenset({"f0", "f1", "f2", "f3", "f4"})


@pytest.mark.parametrize(
    ("sizes", "tier"),
    [
        ((10,), None),  # the partition's whole data in one file
        ((700, 700), None),  # every file big enough
        ((700, 10), "closed"),
        ((10, 10), "closed"),
    ],
)
def test_closed_partition(sizes, tier):
    step = plan(partition(*sizes, age_s=61), POLICY, NOW_MS)
    assert (step.tier if step else None) == tier
    if step:
        assert step.target_size == POLICY.closed_file_bytes


def test_a_partition_written_within_the_window_is_open():
    many_small = (10,) * 5
    assert plan(partition(*many_small, age_s=59), POLICY, NOW_MS).tier == "open1"
    assert plan(partition(*many_small, age_s=60), POLICY, NOW_MS).tier == "closed"


def test_closed_partition_splits_into_balanced_files():
    """More than one closed_file_bytes of data: bins of equal size, no small remainder."""
    sizes = [100] * 250  # KiB: 25 MiB into files of up to 10 MiB -> 3 bins
    step = plan(partition(*sizes, age_s=61), POLICY, NOW_MS)
    assert step is not None and step.tier == "closed"
    bins, current = [], 0
    for size in sizes:  # delta-rs: in order, a new bin when the next file does not fit
        if current and current + size * KiB > step.target_size:
            bins.append(current)
            current = 0
        current += size * KiB
    bins.append(current)
    assert len(bins) == 3 and min(bins) >= 8000 * KiB
