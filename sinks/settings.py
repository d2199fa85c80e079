"""What `sensorstream sink` can be told (flags > environment > YAML `sink:` > defaults).

Flush policy is per route: the emergency table is flushed about every second (its readers are
alerting), the others every few seconds, so that every route is fresh within seconds. The small
files that costs are merged afterwards by table maintenance, not avoided by waiting longer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from sensorstream.metrics import SINK_METRICS_PORT, metrics_host_field, metrics_port_field
from sensorstream.settings import LayeredSettings
from sinks.flusher import AHEAD_BYTES
from sinks.table_log import (
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_LOG_RETENTION_HOURS,
    LOG_CLEANUP_COMMITS,
)

ROUTED_TOPICS = [
    "sensors.raw",
    "sensors.schematized",
    "sensors.filtered",
    "sensors.emergency",
    r"^sensors\.regional\..+",
    "sensors.dlq",
]


class TableSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(
        None, description="table URI; may contain {region}; default <lake>/<route>[/<region>]"
    )
    max_rows: int = Field(100_000, ge=1)
    max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="flush at this many bytes of records (values plus 64 bytes each): a "
        "batch's size bounds what decoding and writing it hold at once",
    )
    max_latency_s: float = Field(3.0, gt=0)
    hourly: bool = Field(False, description="also partition by event_hour")
    landing: bool = Field(False, description="also write the Auto Loader Parquet landing area")


# Built-in per-route values. A `routes:` entry of the user's changes only the keys it sets, so
# configuring, say, `emergency: {hourly: true}` keeps the emergency table's 1 s latency.
ROUTE_DEFAULTS: dict[str, dict[str, object]] = {
    "emergency": {"max_latency_s": 1.0},
    "dlq": {"max_latency_s": 5.0},
}


class SinkSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORSTREAM_SINK_")

    consumer_group: str = "sensorstream-sink"
    instance_id: str | None = Field(None, description="stable name: static group membership")
    topics: list[str] = Field(default_factory=lambda: list(ROUTED_TOPICS))
    topic_prefix: str = Field("sensors.", description="stripped from a topic to name its route")
    dead_letter_topic: str = "sensors.dlq"
    defaults: TableSettings = Field(default_factory=TableSettings)
    routes: dict[str, TableSettings] = Field(
        default_factory=dict,
        description="per-route overrides, key by key, of `defaults` and the built-in route "
        "values (emergency: max_latency_s 1; dlq: 5)",
    )
    max_buffered_rows: int = Field(
        500_000, ge=1000, description="memory bound: the fullest batch is flushed beyond it"
    )
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="memory bound in bytes: records held (buffered, and in the batches being "
        "written), counted as their values plus 64 bytes each; the fullest batch is flushed "
        "beyond it",
    )
    fetch_queue_kbytes: int = Field(
        16 * 1024,
        ge=1024,
        description="the Kafka consumer's prefetch, in KiB (librdkafka queued.max.messages.kbytes)",
    )
    fetch_queue_records: int = Field(
        10_000,
        ge=1,
        description="records the Kafka consumer prefetches per partition (librdkafka "
        "queued.min.messages)",
    )
    decode_ahead_bytes: int = Field(
        AHEAD_BYTES,
        ge=0,
        description="a table's next batch is decoded while its previous one is written only "
        "while that one holds fewer bytes than this (0: never): large batches, when catching "
        "up, are decoded one at a time, which lowers the sink's peak memory",
    )
    poll_batch: int = Field(5000, ge=1, le=100_000)
    background_flush: bool = Field(
        True, description="write a batch on a worker thread while consuming the next"
    )
    checkpoint_interval: int = Field(
        DEFAULT_CHECKPOINT_INTERVAL,
        ge=1,
        description="delta.checkpointInterval of the tables the sink creates: a Delta "
        "checkpoint every N commits (each commit replays the log since the last one)",
    )
    log_cleanup_commits: int = Field(
        LOG_CLEANUP_COMMITS,
        ge=1,
        description="delete expired log files at the checkpoint every about N commits (each "
        "cleanup lists the table's whole _delta_log), not at every checkpoint",
    )
    log_retention_hours: float = Field(
        DEFAULT_LOG_RETENTION_HOURS,
        ge=0,
        description="delta.logRetentionDuration of the tables the sink creates (and of older "
        "tables that set none): commit files and checkpoints older than this are deleted after "
        "each checkpoint; a reader (a Databricks stream, time travel) further behind fails",
    )
    retry_budget_s: float = Field(
        300.0,
        gt=0,
        description="hard bound on one object-store operation (a table read or commit), "
        "retries included: the sink fails once it is spent",
    )
    once: bool = False
    join_timeout_s: float = Field(
        120.0,
        gt=0,
        description="with --once: how long joining the consumer group may take before the "
        "sink fails (exit 1) instead of waiting on",
    )
    metrics_host: str = metrics_host_field()
    metrics_port: int = metrics_port_field(SINK_METRICS_PORT)

    @model_validator(mode="after")
    def _landing_stays_in_the_lake(self) -> SinkSettings:
        for route in {*self.routes, *ROUTE_DEFAULTS}:
            table = self.table_settings(route)
            if table.landing and table.uri is not None:
                raise ValueError(
                    f"route {route}: landing with a table uri of its own is not supported: the "
                    "landing area is written under SENSORSTREAM_LAKE_URI/landing/, which would "
                    "put this route's records outside the location its uri keeps them in"
                )
        return self

    def table_settings(self, route: str) -> TableSettings:
        """`defaults`, then the built-in values for `route`, then the user's `routes` entry:
        each layer changes only the keys it sets."""
        merged = self.defaults.model_dump(exclude_unset=True)
        merged.update(ROUTE_DEFAULTS.get(route, {}))
        override = self.routes.get(route)
        if override is not None:
            merged.update(override.model_dump(exclude_unset=True))
        return TableSettings(**merged)
