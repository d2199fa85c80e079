"""The Delta log settings every sink table carries, and giving them to tables that lack them.

A sink table commits every second or few, tens of thousands of times a day. Two table
properties keep its `_delta_log` small without any job of ours:

* `delta.checkpointInterval`: the commit that lands on a version v with (v + 1) % interval == 0
  also writes a checkpoint (delta-rs's post-commit hook; every writer runs it: both sinks of a
  table, the compaction's OPTIMIZE and lease commits). A reader starts from the checkpoint.
* `delta.logRetentionDuration`: right after writing a checkpoint, the same hook deletes commit
  files and older checkpoints whose objects are older than the retention, keeping the newest
  checkpoint at or before that age and every commit after it, so each version younger than the
  retention can still be read (`delta.enableExpiredLogCleanup`, true unless set to false).

Cleanup never loses the sink's txn versions: every checkpoint carries the txn action of each
app id (one per topic-partition), so the versions live on in the checkpoint when the commits
that set them are deleted. `delta.setTransactionRetentionDuration` drops only txn actions with an
older update time from checkpoints; the sink's carry none, so an idle partition's stays.

The default retention, 7 days, is the vacuum retention (`sinks.maintenance`): a reader more
than 7 days behind (a Databricks stream stopped that long, a time-travel query) has lost data
files to vacuum already, so keeping the log longer buys no reader anything, while shorter
would let log cleanup, not vacuum, be what breaks a stream paused over a long weekend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

# Annotations only: sinks.settings takes this module's default, and a `--config` file check
# reads the sink's settings in every role, including the edge's install without deltalake.
if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger("sensorstream.sink")

DEFAULT_LOG_RETENTION_HOURS = 168.0
"""7 days: the same as vacuum's retention (see the module docstring for why)."""

DEFAULT_CHECKPOINT_INTERVAL = 20
"""Every commit replays the log since the table was opened in delta-rs, which made a commit
cost 6 ms of CPU just after a checkpoint and over 40 ms 100 commits later: with tables
committed every 1-3 s, 100 (delta-rs's default) doubled the sink's CPU per row. The writer
opens its table afresh at each checkpoint, which with the checkpoint itself costs some 35 ms;
once the next batch no longer read the table first, 20 commits between them cost about a
tenth less CPU per commit than Delta's own default of 10 (docs/benchmarks.md)."""

CHECKPOINT_BUDGET_S = 0.01
"""CPU seconds per commit a sink accepts for its checkpoints (each written, and the table
opened afresh from it) before it spaces them out."""
MIN_STRETCH_S = 0.2
"""A checkpoint that cost less CPU never spaces the next ones out, whatever the interval: a
young table's costs some 20-50 ms."""
MAX_CHECKPOINT_STRETCH = 5
"""Checkpoint intervals between two of a sink's checkpoints at most: each commit after a
checkpoint replays a little more of the log, and an open replays every one since."""

LOG_CLEANUP_COMMITS = 100
"""Commits between two log cleanups by the sink at most (each lists the whole `_delta_log`)."""

CHECKPOINT_INTERVAL = "delta.checkpointInterval"
LOG_RETENTION = "delta.logRetentionDuration"


def retention_interval(hours: float) -> str:
    """`hours` as a Delta interval string that Spark and delta-rs both parse (whole units only:
    "interval 7 days", "interval 36 hours", "interval 90 seconds")."""
    seconds = round(hours * 3600)
    if seconds and seconds % 86400 == 0:
        return f"interval {seconds // 86400} days"
    if seconds and seconds % 3600 == 0:
        return f"interval {seconds // 3600} hours"
    return f"interval {seconds} seconds"


def log_properties(checkpoint_interval: int, log_retention_hours: float) -> dict[str, str]:
    """The properties the sink gives each table it creates (and each older table lacking them)."""
    return {
        CHECKPOINT_INTERVAL: str(checkpoint_interval),
        LOG_RETENTION: retention_interval(log_retention_hours),
    }


def cleanup_interval(checkpoint_interval: int, every: int | None) -> int:
    """The versions v with (v + 1) % result == 0 are the checkpoints at which to clean the log:
    every checkpoint when `every` is None, else the multiple of the checkpoint interval nearest
    `every` commits (a checkpoint version always: cleanup deletes only what a checkpoint
    covers)."""
    if every is None:
        return checkpoint_interval
    return checkpoint_interval * max(1, round(every / checkpoint_interval))


def clean_expired_log(table: DeltaTable, uri: str) -> bool:
    """Delete the log files past the table's `delta.logRetentionDuration`, right after a
    checkpoint; False (and a warning naming the table) if that failed. A failed cleanup loses
    nothing and must never fail a landed batch: the log only stays longer, and the next
    checkpoint's cleanup takes its files."""
    try:
        table.cleanup_metadata()
    except Exception as exc:
        log.warning("cleaning the log of %s failed (%s); the next checkpoint retries", uri, exc)
        return False
    return True


def checkpoint_stretch(checkpoint_cpu_s: float, interval: int) -> int:
    """How many of the table's checkpoint intervals a sink lets pass before its next
    checkpoint, given the CPU its last one cost (written, and the table opened from it).

    A checkpoint holds the table's whole state, and the removals compaction leaves stay in it
    for `delta.deletedFileRetentionDuration`: a week-old table flushed every 3 s holds some
    200,000, its checkpoint is 18 MB, and writing one every 20 commits and opening the table
    from it more than doubled the CPU of the sink's commits to it (docs/benchmarks.md, "Delta
    log: the removals a week of compaction leaves"). So the interval stretches to keep that
    cost near `CHECKPOINT_BUDGET_S` per commit, to `MAX_CHECKPOINT_STRETCH` intervals at most,
    and comes back as soon as a checkpoint is cheap again. Every stretched checkpoint lands on
    a version where the table's own interval also puts one."""
    threshold = max(interval * CHECKPOINT_BUDGET_S, MIN_STRETCH_S)
    return max(1, min(MAX_CHECKPOINT_STRETCH, math.floor(checkpoint_cpu_s / threshold)))


def missing(configuration: Mapping[str, str | None], wanted: Mapping[str, str]) -> dict[str, str]:
    """The `wanted` properties a table's `configuration` does not set at all.

    A value that is set, even to something else, is the operator's choice and stays.
    """
    return {key: value for key, value in wanted.items() if configuration.get(key) is None}


def adopt(table: DeltaTable, wanted: Mapping[str, str]) -> dict[str, str]:
    """Set the `wanted` properties `table` lacks, in one metadata-only commit (no data file is
    rewritten); returns what was set. A table created by an earlier release, which set only
    the checkpoint interval, keeps every commit file until it gains a retention here."""
    lacking = missing(table.metadata().configuration, wanted)
    if lacking:
        table.alter.set_table_properties(lacking, raise_if_not_exists=False)
        log.info("table %s: set %s", table.table_uri, lacking)
    return lacking
