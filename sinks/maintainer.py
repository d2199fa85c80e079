"""`sensorstream maintain`: continuous care of every Delta table of the lake, beside the sinks.

Each pass discovers the lake's tables (a region's table appears with its first reading), reads
each table's active files, plans per partition what to compact (`compaction_plan`) and runs
those steps under the table's compaction lease (`maintenance.compact_partitions`), so two
maintainers, or a maintainer and an operator's `sensorstream compact`, never both commit a
compaction of the same files (delta-rs 1.6 would commit both, doubling the rows). A table
whose lease is held is left for the next pass. Vacuum runs only when asked for.

Errors are loud: a bucket that does not exist or a table that is not Delta stops the service
with exit 2; an object store that stays unreachable beyond the retries, or a commit that keeps
failing, with exit 1. A supervisor (compose's restart policy, systemd) starts it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from sensorstream.errors import ConfigError, PipelineError
from sensorstream.lake import LakeNotFound, discover_tables, missing_bucket
from sensorstream.settings import ConnectionSettings
from sinks.compaction_plan import Partition, Step, partitions_of, plan
from sinks.maintain_metrics import MaintainMetrics
from sinks.maintain_settings import MaintainSettings
from sinks.maintenance import (
    LeaseHeld,
    compact_partitions,
    load_table,
    retrying,
    vacuum,
)

log = logging.getLogger("sensorstream.maintain")

TableCare = Callable[[str, str, dict[str, str]], None]
"""An extra step run on every table each pass, after compaction: (name, uri, storage options).
The place for Delta log care (checkpoints, expired log cleanup) to join the same schedule."""


@dataclass
class MaintainResult:
    passes: int = 0
    compactions: int = 0
    files_removed: int = 0
    files_added: int = 0
    lease_busy: int = 0
    vacuumed: int = 0
    tables: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"{self.passes} passes over {len(self.tables)} tables: {self.compactions} "
            f"compactions replaced {self.files_removed} files with {self.files_added}; "
            f"{self.lease_busy} times a table's lease was held elsewhere; "
            f"{self.vacuumed} files vacuumed"
        )


class Maintainer:
    def __init__(
        self,
        settings: MaintainSettings,
        connection: ConnectionSettings,
        stop: threading.Event,
        metrics: MaintainMetrics | None = None,
        extra_care: tuple[TableCare, ...] = (),
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.lake = connection.lake_uri
        self.options = connection.storage_options()
        self.stop = stop
        self.metrics = metrics or MaintainMetrics()
        self.extra_care = extra_care
        self.say = progress or log.info
        self.policy = settings.policy()
        self.result = MaintainResult()
        # (table, partition, tier) -> the files of a step that changed nothing: not retried
        # until the partition's files change.
        self._fruitless: dict[tuple[str, str, str], frozenset[str]] = {}
        self._vacuumed_at: dict[str, float] = {}

    def run(self) -> MaintainResult:
        self.say(
            f"maintaining the Delta tables under {self.lake} every {self.settings.interval_s:g} s"
            + (" until they meet the targets" if self.settings.once else "")
        )
        while not self.stop.is_set():
            began = time.monotonic()
            steps = self.run_pass()
            self.metrics.pass_done(time.monotonic() - began)
            self.result.passes += 1
            if self.settings.once:
                if steps == 0:
                    break
                continue  # compact on at once: a pass's merges may allow the next tier's
            self.stop.wait(max(0.0, self.settings.interval_s - (time.monotonic() - began)))
        return self.result

    def run_pass(self) -> int:
        """One pass over every table; the number of compaction steps it ran."""
        tables = self._tables()
        self.metrics.tables(len(tables))
        ran = 0
        for name, uri in tables.items():
            if self.stop.is_set():
                break
            self.result.tables.add(name)
            ran += self._care(name, uri)
        return ran

    def _tables(self) -> dict[str, str]:
        try:
            return discover_tables(self.lake, self.options)
        except LakeNotFound:
            bucket = missing_bucket(self.lake, self.options)
            if bucket is not None:
                raise ConfigError(
                    f"maintain: {self.lake}: the bucket {bucket} does not exist; check "
                    "SENSORSTREAM_LAKE_URI and AWS_ENDPOINT_URL"
                ) from None
            if self.settings.once:
                raise ConfigError(
                    f"maintain: no lake at {self.lake}: set SENSORSTREAM_LAKE_URI to the lake "
                    "the sinks write (a local path or s3://bucket/prefix)"
                ) from None
            if self.result.passes % 60 == 0:
                self.say(f"no lake at {self.lake} yet; waiting for the sinks' first commits")
            return {}
        except OSError as exc:
            if "NoSuchBucket" in str(exc) or "does not exist" in str(exc).lower():
                raise ConfigError(
                    f"maintain: {self.lake}: the bucket does not exist; check "
                    "SENSORSTREAM_LAKE_URI and AWS_ENDPOINT_URL"
                ) from None
            raise PipelineError(f"maintain: listing the lake {self.lake}: {exc}") from exc

    def _care(self, name: str, uri: str) -> int:
        partitions = self._partitions(uri)
        self.metrics.layout(name, partitions)
        now_ms = int(time.time() * 1000)
        steps = [s for p in partitions if (s := plan(p, self.policy, now_ms)) is not None]
        steps = [s for s in steps if self._fruitless.get(self._key(name, s)) != s.candidates]
        if steps:
            self._compact(name, uri, steps)
        if self.settings.vacuum:
            self._vacuum(name, uri)
        for care in self.extra_care:
            care(name, uri, self.options)
        return len(steps)

    def _partitions(self, uri: str) -> list[Partition]:
        def read() -> list[Partition]:
            table = load_table(uri, self.options)
            return partitions_of(pa.table(table.get_add_actions(flatten=True)).to_pylist())

        return retrying("reading the files of", uri, read)

    @staticmethod
    def _key(name: str, step: Step) -> tuple[str, str, str]:
        return (name, step.partition.name, step.tier)

    def _compact(self, name: str, uri: str, steps: list[Step]) -> None:
        try:
            results = compact_partitions(
                uri,
                self.options,
                [(s.partition.filters, s.target_size) for s in steps],
                lease_s=self.settings.lease_s,
            )
        except LeaseHeld as exc:
            if self.settings.once:
                raise
            self.result.lease_busy += 1
            self.metrics.lease_busy(name)
            log.info("%s: left for the next pass: %s", name, exc)
            return
        for step, result in zip(steps, results, strict=True):
            self.metrics.compacted(name, step.tier, result)
            if result.files_removed == 0:
                self._fruitless[self._key(name, step)] = step.candidates
                continue
            self._fruitless.pop(self._key(name, step), None)
            self.result.compactions += 1
            self.result.files_removed += result.files_removed
            self.result.files_added += result.files_added
            log.info("%s %s: %s", name, step.describe(), result.summary())

    def _vacuum(self, name: str, uri: str) -> None:
        last = self._vacuumed_at.get(name)
        if last is not None and time.monotonic() - last < self.settings.vacuum_interval_s:
            return
        deleted = vacuum(
            uri,
            self.options,
            retention_hours=self.settings.vacuum_retention_hours,
            allow_short_retention=self.settings.allow_short_retention,
        )
        self._vacuumed_at[name] = time.monotonic()
        self.result.vacuumed += len(deleted)
        if deleted:
            log.info("%s: vacuum deleted %d files", name, len(deleted))
