"""What `sensorstream route` can be told (flags > environment > YAML `router:` > defaults)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sensorstream.metrics import ROUTER_METRICS_PORT, metrics_host_field, metrics_port_field
from sensorstream.settings import LayeredSettings
from sensorstream.topics import ROUTING_CONTROL


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry in some containers
        return "unknown"


class RouterSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORSTREAM_ROUTER_")

    routes: Path | None = Field(
        None,
        description="routing file to apply at start (published to the control topic as a new "
        "version if it differs from the latest); unset: follow the control topic",
    )
    consumer_group: str = "sensorstream-router"
    instance_id: str | None = Field(
        None,
        description="a stable name for this instance (e.g. the pod name): its restart then "
        "fences its own unfinished transaction at once; unset: a random id per start, and a "
        "killed instance's open transaction blocks read_committed readers until it times out",
    )
    transaction_timeout_s: float = Field(
        10.0, ge=2, le=900, description="how long a dead instance's transaction can linger"
    )
    control_topic: str = ROUTING_CONTROL
    processing_guarantee: Literal["exactly-once", "at-least-once"] = "exactly-once"
    commit_interval_s: float = Field(
        0.5, gt=0, le=60, description="transaction length; bounds end-to-end latency"
    )
    output_partitions: int = Field(3, ge=1, description="partitions of output topics it creates")
    retry_budget_s: float = Field(
        300.0,
        gt=0,
        description="how long the broker may stay unreachable: the router starts its clients "
        "again with backoff meanwhile, and fails once this is spent",
    )
    once: bool = False
    join_timeout_s: float = Field(
        120.0,
        gt=0,
        description="with --once: how long joining the consumer group may take before the "
        "router fails (exit 1) instead of waiting on",
    )
    applied_by: str = Field(default_factory=_operator, description="who `routes apply` records")
    metrics_host: str = metrics_host_field()
    metrics_port: int = metrics_port_field(ROUTER_METRICS_PORT)
