"""What `sensorstream produce` can be told (flags > environment > YAML `producer:` > defaults)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from sensorstream.metrics import PRODUCER_METRICS_PORT, metrics_host_field, metrics_port_field
from sensorstream.settings import LayeredSettings
from sensorstream.topics import DEAD_LETTERS, PRODUCER_CHECKPOINTS, READINGS

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "node"
    return host.strip(".-")[:128] or "node"


class ProducerSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORSTREAM_PRODUCER_")

    sqlite: Path = Field(description="the edge SQLite database to tail")
    table: str | None = Field(None, description="table to tail; the only user table if unset")
    timestamp_col: str | None = Field(None, description="event-time column; detected if unset")
    node_id: str = Field(default_factory=_default_node_id)
    region: str | None = Field(None, description="falls back to AWS_REGION, then 'unknown'")
    topic: str = READINGS
    dead_letter_topic: str = DEAD_LETTERS
    checkpoint_topic: str = PRODUCER_CHECKPOINTS
    partitions: int = Field(3, ge=1, description="partitions of the readings topic if created")
    chunk_rows: int = Field(5000, ge=1, le=100_000, description="rows per Kafka transaction")
    poll_interval_s: float = Field(0.05, gt=0, le=60)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(5, ge=0, le=1000)
    # Below the broker's default 1 MiB message limit with room for batch overhead: a larger
    # record would be refused by Kafka on every retry instead of going to the dead letters.
    max_row_bytes: int = Field(900_000, ge=1024, le=1_000_000)
    on_recreated: Literal["fail", "restart"] = Field(
        "fail",
        description="when the database was recreated (rowids went backwards): stop with an "
        "error, or stream the new database from its first row",
    )
    reopen_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="how long a database deleted or replaced while tailed may stay missing (or "
        "without its table) before the producer stops; a new file there is opened as at start",
    )
    renamed_from: str | None = Field(
        None,
        description="the node id this node had before: on its first start under the new id it "
        "continues that node's checkpoint (nothing is sent again), which is marked as moved",
    )
    distinct_from: str | None = Field(
        None,
        description="a node id whose last produced row this database holds by coincidence: "
        "it is not that node's database (starting would otherwise be refused)",
    )
    on_rowid_reuse: Literal["fail", "prune"] = Field(
        "fail",
        description="when rowids at or below the checkpoint name other rows (deleted rows' "
        "rowids handed out again, VACUUM renumbering): stop with an error, or (prune, for "
        "applications that delete rows once streamed, oldest first) stream the new rows once",
    )
    busy_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="how long a SQLite read waits for a writer's lock before failing (a "
        "database not in WAL mode is locked for readers while a writer commits)",
    )
    retry_backoff_max_s: float = Field(30.0, gt=0)
    status_interval_s: float = Field(30.0, gt=0)
    metrics_host: str = metrics_host_field()
    metrics_port: int = metrics_port_field(PRODUCER_METRICS_PORT)
    once: bool = False

    @field_validator("node_id", "region", "renamed_from", "distinct_from")
    @classmethod
    def _safe_identifier(cls, value: str | None) -> str | None:
        if value is not None and not _SAFE.fullmatch(value):
            raise ValueError(
                "must be 1-128 letters, digits, '_', '.' or '-' (no '/', '..', spaces or "
                "control characters): it becomes part of keys, topic names and paths"
            )
        if value is not None and ".." in value:
            raise ValueError("must not contain '..'")
        return value

    @property
    def effective_region(self) -> str:
        region = self.region or os.environ.get("AWS_REGION") or "unknown"
        return self._safe_identifier(region) or "unknown"
