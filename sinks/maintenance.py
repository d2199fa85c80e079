"""Delta table maintenance: compaction, vacuum and checkpoints, one function each.

The sinks commit small files often (an emergency route flushes about every second), so tables
need compaction, and the files compaction replaces need vacuuming once no reader can still want
them. Both run while sinks keep appending, which is what shapes this module:

* delta-rs rebases an OPTIMIZE commit over concurrent blind appends by itself; a commit that
  still fails (a concurrent schema change, exhausted rebase retries) is retried here from a
  fresh snapshot, a bounded number of times.
* delta-rs 1.6 does NOT detect two concurrent OPTIMIZEs of the same files: both commit, and
  every compacted row is then in the table twice. `compact` therefore holds a lease recorded in
  the table's own log (see `compaction_lease`), so one compaction runs per table at a time.
* Vacuum deletes files that older table versions still reference. Below 7 days of retention it
  can break readers of those versions and slow writers, so it needs an explicit opt-in.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from sensorstream.backoff import Backoff
from sensorstream.errors import ConfigError, PipelineError
from sensorstream.failpoints import failpoint
from sinks.maintain_settings import DEFAULT_RETENTION_HOURS

log = logging.getLogger("sensorstream.maintenance")

T = TypeVar("T")

COMPACTION_APP_ID = "sensorstream.compaction"
DEFAULT_LEASE_S = 6 * 3600
"""Long enough for any compaction; a crashed compaction blocks the next one this long at most."""

ATTEMPTS = 4
"""Tries per operation (each already retried inside object_store): bounded, then exit 1."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CompactResult:
    files_removed: int
    files_added: int
    version: int
    """The table's version right after the compaction (its OPTIMIZE commit included)."""
    attempts: int

    def summary(self) -> str:
        if self.files_removed == 0:
            return f"nothing to compact at version {self.version}"
        return (
            f"compacted {self.files_removed} files into {self.files_added} at version "
            f"{self.version} ({self.attempts} attempt{'s' if self.attempts > 1 else ''})"
        )


def _describe(exc: BaseException) -> str:
    """delta-rs errors span lines with colour codes; one plain line reads better in a log."""
    lines = [line.strip(" ↳") for line in _ANSI.sub("", str(exc)).splitlines()]
    return "; ".join(line for line in lines if line)


def _missing_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc)


def _transient(exc: BaseException) -> bool:
    """An object store that is down or slow (retry) rather than a bad request."""
    if isinstance(exc, OSError):
        return not _missing_bucket(exc)
    text = str(exc).lower()
    return "generic s3 error" in text or "error sending request" in text


def retrying(what: str, uri: str, action: Callable[[], T]) -> T:
    """Run `action`, retrying conflicts and outages with backoff; map the rest to exit codes."""
    attempts = ATTEMPTS
    backoff = Backoff(initial_s=0.5, max_s=8.0)
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TableNotFoundError:
            raise ConfigError(f"{uri}: not a Delta table (no _delta_log there)") from None
        except (CommitFailedError, OSError, DeltaError) as exc:
            if _missing_bucket(exc):
                raise ConfigError(f"{uri}: the bucket does not exist") from None
            if not isinstance(exc, CommitFailedError) and not _transient(exc):
                raise PipelineError(f"{what} {uri}: {_describe(exc)}") from exc
            if attempt == attempts:
                raise PipelineError(
                    f"{what} {uri}: gave up after {attempts} attempts: {_describe(exc)}"
                ) from exc
            log.warning("%s %s failed (%s); retrying", what, uri, _describe(exc))
            backoff.wait()
    raise AssertionError("unreachable")


def load_table(uri: str, storage_options: dict[str, str] | None) -> DeltaTable:
    return DeltaTable(uri, storage_options=storage_options or None)


# -- compaction ---------------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lease_expiry(version: int | None) -> int | None:
    """The lease encoded in the txn version: odd = held until version // 2 (epoch ms).

    Odd/even keeps the txn version increasing on every claim and release, as Delta readers
    expect of txn versions; so a claim's expiry never precedes the previous claim's (with the
    default lease it never has to).
    """
    if version is None or version % 2 == 0:
        return None
    return version // 2


def _commit_lease(table: DeltaTable, version: int) -> None:
    """An empty append that only records the txn: readers see no data change."""
    table.create_write_transaction(
        [],
        mode="append",
        schema=table.schema(),
        partition_by=table.metadata().partition_columns or None,
        commit_properties=CommitProperties(
            app_transactions=[Transaction(COMPACTION_APP_ID, version, _now_ms())]
        ),
    )


class _Held(Exception):
    """Raised inside a claim attempt, so `retrying` does not take it for a failure."""


class LeaseHeld(PipelineError):
    """Another compaction holds the table's lease: this one did nothing (a continuous
    compactor tries again on its next pass; `sensorstream compact` exits 1)."""


@contextmanager
def compaction_lease(
    uri: str, storage_options: dict[str, str] | None, lease_s: float = DEFAULT_LEASE_S
) -> Iterator[int]:
    """Hold the table's compaction lease; PipelineError if another compaction holds it.

    The lease is a txn action (app id `sensorstream.compaction`) in the table's log, so it needs
    no lock service: two claims from the same snapshot both write that app id, and delta-rs
    rejects the second as a concurrent transaction (the commit itself is a put-if-absent).
    Sinks use other app ids, so their appends never conflict with it. A holder that dies
    leaves the lease to expire after `lease_s`.
    """

    def claim() -> int:
        table = load_table(uri, storage_options)
        current = table.transaction_version(COMPACTION_APP_ID)
        expiry = _lease_expiry(current)
        if expiry is not None and expiry > _now_ms():
            until = datetime.fromtimestamp(expiry / 1000, UTC).isoformat(timespec="seconds")
            raise _Held(
                f"compacting {uri}: another compaction holds the table's lease until {until}; "
                "two compactions of the same files would duplicate their rows"
            )
        version = 2 * (_now_ms() + int(lease_s * 1000)) + 1
        if current is not None and version <= current:
            version = current + (2 if current % 2 else 1)
        _commit_lease(table, version)
        return version

    def release(claimed: int) -> None:
        table = load_table(uri, storage_options)
        if table.transaction_version(COMPACTION_APP_ID) == claimed:  # else: expired, taken
            _commit_lease(table, claimed + 1)

    try:
        claimed = retrying("claiming the compaction lease of", uri, claim)
    except _Held as exc:
        raise LeaseHeld(str(exc)) from None
    try:
        yield claimed
    finally:
        try:
            retrying("releasing the compaction lease of", uri, lambda: release(claimed))
        except PipelineError as exc:
            log.warning("%s; the lease expires by itself after %.0f s", exc, lease_s)


def compact(
    uri: str,
    storage_options: dict[str, str] | None,
    target_size: int | None = None,
    *,
    lease_s: float = DEFAULT_LEASE_S,
) -> CompactResult:
    """Merge small files into files of about `target_size` bytes (default: the table's
    `delta.targetFileSize` or 100 MB) while sinks keep appending.

    The rows stay the same (the OPTIMIZE commit marks its files dataChange=false, so streaming
    readers skip it); only the file layout changes.
    """
    (result,) = compact_partitions(uri, storage_options, [(None, target_size)], lease_s=lease_s)
    return result


PartitionFilters = list[tuple[str, str, str]] | None


def compact_partitions(
    uri: str,
    storage_options: dict[str, str] | None,
    steps: Sequence[tuple[PartitionFilters, int | None]],
    *,
    lease_s: float = DEFAULT_LEASE_S,
) -> list[CompactResult]:
    """Compact each (partition filters, target size) of `steps` in turn, under one claim of
    the table's lease; LeaseHeld when another compaction holds it.

    Each step is its own OPTIMIZE commit, so a partition compacted early is not redone when
    a later one fails. `lease_s` must exceed the time all steps take: a compaction still
    running when its lease expires could meet a second one on the same files.
    """
    results: list[CompactResult] = []
    with compaction_lease(uri, storage_options, lease_s):
        failpoint("maintenance.lease_claimed")
        for filters, target_size in steps:
            results.append(
                retrying("compacting", uri, _optimizer(uri, storage_options, filters, target_size))
            )
    return results


def _optimizer(
    uri: str,
    storage_options: dict[str, str] | None,
    filters: PartitionFilters,
    target_size: int | None,
) -> Callable[[], CompactResult]:
    attempts = 0

    def attempt() -> CompactResult:
        nonlocal attempts
        attempts += 1
        table = load_table(uri, storage_options)
        metrics = table.optimize.compact(partition_filters=filters, target_size=target_size)
        removed, added = int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
        # Appends may land while delta-rs commits the OPTIMIZE past them: report the table's
        # version once it is done, which includes the compaction.
        return CompactResult(removed, added, load_table(uri, storage_options).version(), attempts)

    return attempt


# -- vacuum -------------------------------------------------------------------------------------


def vacuum(
    uri: str,
    storage_options: dict[str, str] | None,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    allow_short_retention: bool = False,
) -> list[str]:
    """Delete files the table stopped referencing more than `retention_hours` ago; returns
    them (with `dry_run`, only lists them).

    It lists the table's files ("full" vacuum), not only the removals its log still holds
    (delta-rs's default, "lite"): a checkpoint drops removals older than
    `delta.deletedFileRetentionDuration` (7 days), and delta-rs refuses a vacuum retention
    shorter than that, so a lite vacuum could delete a compacted-away file only until the
    next checkpoint, a minute or so after it became old enough, and nearly every one stayed in
    storage for good. A full vacuum still keeps a file whose removal is younger than the
    retention, however old the file itself; it costs a LIST of the table's objects per run.

    Retention under 7 days needs `allow_short_retention`: a Databricks stream or a time-travel
    query still reading an older version would find its files gone, and so would a sink whose
    slow commit still builds on the snapshot it read before a compaction.
    """
    if retention_hours < 0:
        raise ConfigError(f"vacuum {uri}: retention must be 0 hours or more")
    if retention_hours < DEFAULT_RETENTION_HOURS and not allow_short_retention:
        raise ConfigError(
            f"vacuum {uri}: a retention of {retention_hours} h is under the safe minimum of "
            f"{DEFAULT_RETENTION_HOURS} h; readers of older versions and writers still "
            "committing on an older snapshot would lose files they need. Pass "
            "--allow-short-retention if no such reader or writer exists"
        )

    def attempt() -> list[str]:
        table = load_table(uri, storage_options)
        try:
            return table.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=not allow_short_retention,
                full=True,
            )
        except DeltaError as exc:
            if "retention" in str(exc).lower() and not _transient(exc):
                raise ConfigError(f"vacuum {uri}: {_describe(exc)}") from None
            raise

    return retrying("vacuuming", uri, attempt)


# -- checkpoints --------------------------------------------------------------------------------


def checkpoint(uri: str, storage_options: dict[str, str] | None) -> int:
    """Write a checkpoint at the latest version and drop expired log files; returns the version.

    A reader opening the table starts from the last checkpoint instead of replaying every
    JSON commit, which on S3 is one request per commit.
    """

    def attempt() -> int:
        table = load_table(uri, storage_options)
        table.create_checkpoint()
        table.cleanup_metadata()  # only logs older than the table's delta.logRetentionDuration
        return table.version()

    return retrying("checkpointing", uri, attempt)
