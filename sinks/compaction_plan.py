"""Which partitions of a Delta table to compact now, and to what file size: pure logic.

A sink flushing every second or two writes one small file per table and partition per flush,
so a day partition collects thousands of files. Compacting all of them into one big file on
every pass would rewrite the growing file again and again (the cost grows with the square of
the day's data); never compacting the partition the sink is writing would leave every reader
opening thousands of files. The plan is therefore tiered, per partition:

* **open** partitions (a file written within `window_s`: the sink still writes there) are
  compacted in tiers of growing file size (`open_tier_bytes`, e.g. 1 MiB, 16 MiB, 128 MiB):
  when more than `max_files_per_tier` files lie in a tier's range (from a quarter of the
  tier below's size to a quarter of its own), they are merged into files of up to the tier's
  size. The first tier runs on nearly every pass but rewrites at most its size (about 1 MiB);
  each next tier runs only every few outputs of the one below, so every byte is rewritten about
  once per tier, and the growing big file is not rewritten on every pass.

  A tier's output counts as done once it is a quarter of its size: delta-rs packs files by
  their input sizes, and a merged file is smaller than its parts (one footer instead of many,
  and Parquet compresses a long column better: small files shrink to half or less), so
  outputs well under the size are normal and must not be merged again and again.
* **closed** partitions (no row landed within `window_s`: yesterday, once the sink has
  moved on): when a file is under `closed_min_file_bytes`, the partition is merged into as
  few files of up to about `closed_file_bytes` as hold it, of balanced sizes (so the last one
  is not a small remainder): a finished day ends as one file, or a few big ones.

When a row landed is told by the file's `_ingested_at` maximum (the sink's landing time,
kept in the Delta statistics and carried over by a merge), falling back to the file's
modification time where the table keeps no statistics for that column. A merged file's
modification time is the merge's own: counting it would reopen a closed day after each of
its merges, so it would reach its final size only a window per step.

delta-rs packs the files of a partition that are under the target size into bins of up to
that size, in the table's file order; bins of one file are left alone. `candidates` is the
set of files a step would consider, so the caller can tell a step it already ran without
effect (files it cannot merge, e.g. two that do not fit one bin) and not repeat it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

Tier = str
"""`open1`, `open2`, ... (the open tiers, smallest first) or `closed`."""
CLOSED: Tier = "closed"
_PARTITION_PREFIX = "partition."
_LANDED_STAT = "max._ingested_at"


@dataclass(frozen=True)
class DataFile:
    path: str
    size: int
    landed_ms: int
    """When its newest row landed (see the module docstring)."""


@dataclass(frozen=True)
class Partition:
    """One partition of a table (a day, or a day and hour), with its active files."""

    values: tuple[tuple[str, str], ...]
    files: tuple[DataFile, ...]

    @property
    def name(self) -> str:
        return "/".join(f"{k}={v}" for k, v in self.values) or "(unpartitioned)"

    @property
    def filters(self) -> list[tuple[str, str, str]] | None:
        """delta-rs partition filters selecting exactly this partition."""
        return [(k, "=", v) for k, v in self.values] or None

    @property
    def newest_ms(self) -> int:
        return max((f.landed_ms for f in self.files), default=0)


@dataclass(frozen=True)
class CompactionPolicy:
    open_tier_bytes: tuple[int, ...]
    max_files_per_tier: int
    closed_file_bytes: int
    closed_min_file_bytes: int
    window_s: float


@dataclass(frozen=True)
class Step:
    """Compact `partition` with delta-rs target size `target_size`."""

    partition: Partition
    tier: Tier
    target_size: int
    candidates: frozenset[str]

    def describe(self) -> str:
        return (
            f"{self.partition.name}: {len(self.candidates)} files for the {self.tier} tier "
            f"(target {_size(self.target_size)})"
        )


def _text(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def partitions_of(add_actions: Iterable[Mapping[str, Any]]) -> list[Partition]:
    """Group a table's active files (rows of `DeltaTable.get_add_actions(flatten=True)`) by
    partition values."""
    grouped: dict[tuple[tuple[str, str], ...], list[DataFile]] = {}
    for row in add_actions:
        values = tuple(
            sorted(
                (key[len(_PARTITION_PREFIX) :], _text(value))
                for key, value in row.items()
                if key.startswith(_PARTITION_PREFIX) and value is not None
            )
        )
        grouped.setdefault(values, []).append(
            DataFile(str(row["path"]), int(row["size_bytes"]), _landed_ms(row))
        )
    return [Partition(values, tuple(files)) for values, files in sorted(grouped.items())]


def _landed_ms(row: Mapping[str, Any]) -> int:
    landed = row.get(_LANDED_STAT)
    if isinstance(landed, datetime):
        return int(landed.timestamp() * 1000)
    return int(row["modification_time"])


def is_closed(partition: Partition, policy: CompactionPolicy, now_ms: int) -> bool:
    """No row landed within the window: the sink has moved on from this partition."""
    return now_ms - partition.newest_ms >= policy.window_s * 1000


def plan(partition: Partition, policy: CompactionPolicy, now_ms: int) -> Step | None:
    """The one step this partition needs now: the biggest tier with too many files in its
    range (its merge takes in the smaller files as well); None when the partition is fine."""
    files = partition.files
    if is_closed(partition, policy, now_ms):
        small = [f for f in files if f.size < policy.closed_min_file_bytes]
        if len(files) > 1 and small:
            candidates = [f for f in files if f.size <= policy.closed_file_bytes]
            target = balanced_target([f.size for f in candidates], policy.closed_file_bytes)
            return _step(partition, CLOSED, target, [f for f in candidates if f.size <= target])
        return None
    step = None
    lower = 0
    for number, size in enumerate(policy.open_tier_bytes, start=1):
        done = size // 4
        in_range = [f for f in files if lower <= f.size < done]
        if len(in_range) > policy.max_files_per_tier:
            # A bigger tier merges the smaller files too, and must not wait for the smaller
            # tier to have nothing to do: fresh files arrive on every pass.
            step = _step(partition, f"open{number}", size, [f for f in files if f.size <= size])
        lower = done
    return step


def balanced_target(sizes: list[int], largest: int) -> int:
    """A delta-rs target size that packs `sizes` into the fewest bins of about `largest` or
    less, all of about the same size.

    delta-rs fills bins in file order and closes one when the next file does not fit, so each
    bin but the last holds at least `target - max(sizes)`. With `n` bins needed and a target of
    `total / n + max(sizes)`, every bin holds about `total / n`, the last one included.
    """
    total = sum(sizes)
    bins = max(1, math.ceil(total / largest))
    if bins == 1:
        return largest
    return math.ceil(total / bins) + max(sizes)


def _step(partition: Partition, tier: Tier, target: int, files: list[DataFile]) -> Step:
    return Step(partition, tier, target, frozenset(f.path for f in files))


def _size(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} B"
