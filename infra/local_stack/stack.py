"""The local stack as one unit: Kafka, the schema registry and the S3 server.

`up` is idempotent: a server that is already running and ready is left alone, so a second `up`
costs only the readiness probes. Servers are launched together and waited for together, which
is what keeps a warm `up` short: the JVMs warm up side by side on both cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from infra.local_stack.errors import StackError
from infra.local_stack.kafka import KafkaServer
from infra.local_stack.object_store import ObjectStoreServer
from infra.local_stack.process import port_is_free, tail
from infra.local_stack.registry import SchemaRegistryServer
from infra.local_stack.server import LocalServer
from infra.local_stack.settings import StackSettings


@dataclass(frozen=True)
class ServerStatus:
    name: str
    version: str
    state: str  # "ready", "starting" (running, not answering yet) or "stopped"
    pid: int | None
    port: int
    rss_mb: float | None
    log: str


class LocalStack:
    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.kafka = KafkaServer(self.settings)
        self.registry = SchemaRegistryServer(self.settings)
        self.object_store = ObjectStoreServer(self.settings)
        self.servers: list[LocalServer] = [self.kafka, self.registry, self.object_store]

    def up(self, progress: Callable[[str], None] = lambda _: None) -> list[ServerStatus]:
        to_start = [s for s in self.servers if not s.process.is_running()]
        for server in to_start:
            busy = [p for p in server.ports if not port_is_free(p, self.settings.host)]
            if busy:
                raise StackError(
                    f"{server.name} cannot start: port {', '.join(map(str, busy))} on "
                    f"{self.settings.host} is in use by another process. Stop it, or move "
                    f"{server.name} with {', '.join(server.port_variables())}."
                )
        for server in to_start:
            progress(f"preparing {server.name} {server.version()}")
            server.prepare()
        for server in to_start:
            server.process.start(server.command(), cwd=self.settings.dir.resolve())
            progress(f"started {server.name} (pid {server.process.record().pid})")
        self._wait_ready(progress)
        for server in self.servers:
            server.after_ready()
        return self.status()

    def _wait_ready(self, progress: Callable[[str], None]) -> None:
        pending = list(self.servers)
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while pending:
            for server in list(pending):
                if not server.process.is_running():
                    raise StackError(
                        f"{server.name} exited during start; last lines of "
                        f"{server.process.log_file}:\n{tail(server.process.log_file)}"
                    )
                if server.is_ready():
                    progress(f"{server.name} ready on port {server.port}")
                    pending.remove(server)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                logs = "\n".join(
                    f"--- {s.process.log_file}\n{tail(s.process.log_file, 15)}" for s in pending
                )
                raise StackError(
                    f"not ready after {self.settings.ready_timeout_s:.0f}s: {names}\n{logs}"
                )
            time.sleep(0.25)

    def down(self) -> list[str]:
        """Stop every server; returns the names of those that were running."""
        return [s.name for s in reversed(self.servers) if s.process.stop()]

    def status(self) -> list[ServerStatus]:
        statuses = []
        for server in self.servers:
            record = server.process.record()
            if record is None:
                state = "stopped"
            else:
                state = "ready" if server.is_ready() else "starting"
            statuses.append(
                ServerStatus(
                    name=server.name,
                    version=server.version(),
                    state=state,
                    pid=record.pid if record else None,
                    port=server.port,
                    rss_mb=server.process.rss_mb(),
                    log=str(server.process.log_file),
                )
            )
        return statuses

    def exports(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for server in self.servers:
            env.update(server.exports())
        return env
