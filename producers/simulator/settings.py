"""What `sensorstream simulate` can be told, validated before a single row is written.

The region ends up inside sensor ids, which later become Kafka keys, topic names and Delta
partition paths, so it is held to the safe-identifier rule here rather than downstream.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from sensorstream.settings import LayeredSettings

SAFE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SENSORS = 10_000


class SimulatorSettings(LayeredSettings):
    """Settings for one simulated edge node writing to one SQLite database."""

    # LayeredSettings.model_config already carries an env_prefix key, so it is overridden in a
    # merged dict rather than passed twice to SettingsConfigDict.
    model_config = SettingsConfigDict(
        **{**LayeredSettings.model_config, "env_prefix": "SENSORSTREAM_SIMULATOR_"}
    )

    db: Path = Field(description="SQLite database to append to; created if missing")
    sensors: int = Field(default=5, ge=1, le=MAX_SENSORS)
    rate: float = Field(
        default=100.0,
        ge=0,
        allow_inf_nan=False,
        description="rows per second across all sensors; 0 writes as fast as possible",
    )
    count: int | None = Field(default=None, ge=0, description="stop after this many rows")
    duration: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="stop after this many seconds"
    )
    seed: int | None = Field(default=None, description="same seed, same sensors and values")
    region: str = Field(default="us-east-1", pattern=SAFE_NAME_PATTERN)
    anomaly_probability: float = Field(
        default=0.05, ge=0, le=1, description="expected fraction of anomalous rows"
    )
    tick_s: float = Field(
        default=0.05, gt=0, le=5, description="pacing granularity: one transaction per tick"
    )
    progress_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("duration")
    @classmethod
    def _one_stop_condition(cls, duration: float | None, info: ValidationInfo) -> float | None:
        # Checked here, not in a model validator, so the error names where `duration` came from.
        if duration is not None and info.data.get("count") is not None:
            raise ValueError("cannot be combined with count; give one stop condition")
        return duration
