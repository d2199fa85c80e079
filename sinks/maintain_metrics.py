"""What `sensorstream maintain` reports to Prometheus (families in `sensorstream.metrics`): only
its own families, so its endpoint never shows a sink's buffer or a producer's backlog."""

from __future__ import annotations

import time

from sensorstream.metrics import MetricFamilies
from sinks.compaction_plan import Partition, Tier
from sinks.maintenance import CompactResult


class MaintainMetrics:
    def __init__(self, families: MetricFamilies | None = None) -> None:
        self.families = families = families or MetricFamilies()
        families.maintain_tables.set(0)
        # Registered now, so the first scrape lists every family (per-table children come
        # with the tables).
        _ = (
            families.maintain_compactions,
            families.maintain_files_removed,
            families.maintain_files_added,
            families.maintain_lease_busy,
            families.maintain_active_files,
            families.maintain_partition_files,
            families.maintain_pass_duration,
            families.maintain_last_pass,
        )

    def tables(self, count: int) -> None:
        self.families.maintain_tables.set(count)

    def layout(self, table: str, partitions: list[Partition]) -> None:
        files = [len(p.files) for p in partitions]
        self.families.maintain_active_files.labels(table).set(sum(files))
        self.families.maintain_partition_files.labels(table).set(max(files, default=0))

    def compacted(self, table: str, tier: Tier, result: CompactResult) -> None:
        if result.files_removed:
            self.families.maintain_compactions.labels(table, tier).inc()
        self.families.maintain_files_removed.labels(table).inc(result.files_removed)
        self.families.maintain_files_added.labels(table).inc(result.files_added)

    def lease_busy(self, table: str) -> None:
        self.families.maintain_lease_busy.labels(table).inc()

    def pass_done(self, seconds: float) -> None:
        self.families.maintain_pass_duration.observe(seconds)
        self.families.maintain_last_pass.set(time.time())
