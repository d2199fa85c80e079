"""Where the local stack keeps its files and which ports it listens on.

Ports and directories are configurable so a developer can run the stack beside other services;
versions are not: they are pinned in each server's module, because a test run must mean the
same thing on every machine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sensorstream"


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORSTREAM_STACK_", extra="ignore")

    dir: Path = Field(default=Path(".stack"), description="pid files, logs and server data")
    cache_dir: Path = Field(
        default_factory=_default_cache_dir, description="downloaded and built server artifacts"
    )
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    registry_port: int = 8081
    registry_management_port: int = 8091
    s3_port: int = 9000
    s3_access_key: str = "sensorstream"
    s3_secret_key: str = "sensorstream-local-secret"
    s3_region: str = "us-east-1"
    s3_bucket: str = "sensorstream"
    ready_timeout_s: float = 180.0

    @property
    def run_dir(self) -> Path:
        return self.dir.resolve() / "run"

    @property
    def log_dir(self) -> Path:
        return self.dir.resolve() / "logs"

    @property
    def data_dir(self) -> Path:
        return self.dir.resolve() / "data"
