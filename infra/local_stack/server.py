"""What the stack needs to know of each server: how to get it, start it, and see it is ready."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from pathlib import Path

from infra.local_stack.process import ManagedProcess
from infra.local_stack.settings import StackSettings


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalServer(ABC):
    name: str

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.run_dir, settings.log_dir)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir / self.name

    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the server binds, checked free before a start."""

    def port_variables(self) -> list[str]:
        """The environment variables that move this server's ports."""
        by_port = {
            value: f"SENSORSTREAM_STACK_{field.upper()}"
            for field, value in self.settings.model_dump().items()
            if field.endswith("_port")
        }
        return [by_port[p] for p in self.ports if p in by_port]

    @property
    @abstractmethod
    def port(self) -> int:
        """The port clients use."""

    @abstractmethod
    def prepare(self) -> None:
        """Fetch pinned artifacts (cached), write config, initialise storage; idempotent."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def is_ready(self) -> bool:
        """A real client round trip, not just an open port."""

    @abstractmethod
    def exports(self) -> dict[str, str]:
        """The connection environment (DESIGN section 3) clients need for this server."""

    def version(self) -> str:
        return ""

    def after_ready(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Set-up that needs the server answering (buckets, ...); idempotent."""
