"""What `sensorstream maintain` can be told (flags > environment > YAML `maintain:` > defaults).

The defaults suit sinks that flush every table every few seconds: fresh files are merged within
about one pass (`interval_s`), a day partition keeps a dozen files or fewer while it is written,
and a day the sink has left behind (`window_s`) ends as files of at least 64 MiB, or one file
when the day holds less. See docs/runbook.md, "Continuous compaction".
"""

from __future__ import annotations

import itertools

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sensorstream.metrics import MAINTAIN_METRICS_PORT, metrics_host_field, metrics_port_field
from sensorstream.settings import LayeredSettings
from sinks.compaction_plan import CompactionPolicy

DEFAULT_RETENTION_HOURS = 168
"""Vacuum keeps replaced files this long: Delta's own default (`deletedFileRetentionDuration`).
Here, not beside vacuum, so a settings check needs no deltalake (a producer-only install)."""

MiB = 2**20


class MaintainSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORSTREAM_MAINTAIN_")

    interval_s: float = Field(10.0, gt=0, description="seconds between passes over the lake")
    window_s: float = Field(
        600.0,
        gt=0,
        description="a partition with no file written for this long is closed: the sink has "
        "moved on, and its files are merged into big ones",
    )
    open_tier_bytes: list[int] = Field(
        default_factory=lambda: [1 * MiB, 16 * MiB, 128 * MiB],
        min_length=1,
        description="file sizes of the tiers that compact a partition the sink still writes, "
        "smallest first",
    )
    max_files_per_tier: int = Field(
        3,
        ge=1,
        description="files in a tier's size range a partition may hold before they are merged",
    )
    closed_file_bytes: int = Field(
        1024 * MiB, ge=1024, description="largest file a closed partition's files merge into"
    )
    closed_min_file_bytes: int = Field(
        64 * MiB, ge=1024, description="a closed partition's files under this are merged"
    )
    lease_s: float = Field(
        900.0,
        gt=0,
        description="compaction lease per table and pass; longer than any one pass's "
        "compactions of a table. A killed compactor holds up the next one this long at most",
    )
    vacuum: bool = Field(False, description="also vacuum each table every vacuum_interval_s")
    vacuum_interval_s: float = Field(3600.0, gt=0)
    vacuum_retention_hours: int = Field(DEFAULT_RETENTION_HOURS, ge=0)
    allow_short_retention: bool = Field(
        False, description="allow vacuum_retention_hours under 168 (see `sensorstream vacuum`)"
    )
    once: bool = Field(
        False, description="compact until every table meets the targets, then exit (cron)"
    )
    metrics_host: str = metrics_host_field()
    metrics_port: int = metrics_port_field(MAINTAIN_METRICS_PORT)

    @model_validator(mode="after")
    def _tiers_grow(self) -> MaintainSettings:
        tiers = self.open_tier_bytes
        growing = all(a < b for a, b in itertools.pairwise(tiers))
        if not growing or tiers[-1] > self.closed_file_bytes:
            raise ValueError(
                "maintain: file sizes must grow tier by tier: open_tier_bytes in increasing "
                "order, none above closed_file_bytes"
            )
        if min(self.open_tier_bytes) < 1024:
            raise ValueError("maintain: open_tier_bytes must be 1024 bytes or more")
        if self.closed_min_file_bytes > self.closed_file_bytes:
            raise ValueError("closed_min_file_bytes must not exceed closed_file_bytes")
        return self

    def policy(self) -> CompactionPolicy:
        return CompactionPolicy(
            open_tier_bytes=tuple(self.open_tier_bytes),
            max_files_per_tier=self.max_files_per_tier,
            closed_file_bytes=self.closed_file_bytes,
            closed_min_file_bytes=self.closed_min_file_bytes,
            window_s=self.window_s,
        )
