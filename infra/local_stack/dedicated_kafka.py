"""A Kafka broker of one run's own, on free ports in its own directory, to stop and restart.

A chaos test or benchmark restarts the broker mid-run; doing that to the shared stack would
break every other test and the developer's own runs. This broker is the stack's `KafkaServer`
(same pinned version, same settings) with its own ports and data directory, run as a child of
the caller: it dies with the caller (the supervisor's parent-death signal), so an interrupted
run never leaves a JVM behind, and `stop` takes it down however the run ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from infra.local_stack.errors import StackError
from infra.local_stack.kafka import KafkaServer
from infra.local_stack.process import tail
from infra.local_stack.settings import StackSettings
from infra.local_stack.supervisor import die_with_parent

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class DedicatedKafka:
    """Use as a context manager: the broker is started on entry and stopped on exit."""

    def __init__(self, directory: Path, properties: dict[str, str] | None = None) -> None:
        """`properties` override the stack's broker settings (e.g. Kafka's own default
        `group.initial.rebalance.delay.ms=3000`, which the stack sets to 0)."""
        self.directory = directory.resolve()
        self.server = KafkaServer(
            StackSettings(
                dir=self.directory, kafka_port=free_port(), kafka_controller_port=free_port()
            )
        )
        self.server.overrides = dict(properties or {})
        self.log = self.directory / "logs" / "kafka.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def bootstrap_servers(self) -> str:
        return self.server.bootstrap_servers

    def __enter__(self) -> DedicatedKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start (formatting the storage on the first start) and wait until it answers."""
        self.launch()
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.running:
                raise StackError(f"dedicated Kafka exited at start:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(
                    f"dedicated Kafka not ready in {timeout_s:.0f} s:\n{tail(self.log)}"
                )
            time.sleep(0.25)

    def ready(self) -> bool:
        """Running and answering a metadata request."""
        return self.running and self.server.is_ready()

    def launch(self) -> None:
        """Start the process and return at once; `ready()` says when it answers.

        Call it from a thread that outlives the broker (the main thread): the parent-death
        signal follows the thread that started the process.
        """
        if self.running:
            return
        self.server.prepare()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting kafka\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.server.command(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop with `sig` (SIGTERM: a controlled shutdown), SIGKILL after `timeout_s`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def restart(self, down_s: float = 0.0, sig: signal.Signals = signal.SIGTERM) -> float:
        """Stop, stay down `down_s`, start again; the seconds the broker did not answer."""
        began = time.monotonic()
        self.stop(sig)
        time.sleep(down_s)
        self.start()
        self.restarts += 1
        return time.monotonic() - began


class BrokerBounce:
    """One broker restart carried out across a caller's loop, so the loop goes on meanwhile.

    `step()` is called every tick: the controlled shutdown (which can take tens of seconds
    while clients hold transactions open) runs in a thread, and the start is made from the
    caller's thread, so the new broker still dies with the caller.
    """

    def __init__(self, kafka: DedicatedKafka, down_s: float) -> None:
        self.kafka = kafka
        self.down_s = down_s
        self.state = "stopping"
        self.began = time.monotonic()
        self._up_at = 0.0
        self._stopper = threading.Thread(target=kafka.stop, name="broker-stop", daemon=True)
        self._stopper.start()

    @property
    def done(self) -> bool:
        return self.state == "done"

    def step(self) -> str | None:
        """Advance; a line to report when the broker went down or came back."""
        now = time.monotonic()
        if self.state == "stopping" and not self._stopper.is_alive():
            self.state, self._up_at = "down", now + self.down_s
            return f"broker: stopped after {now - self.began:.1f} s; down for {self.down_s:g} s"
        if self.state == "down" and now >= self._up_at:
            self.kafka.launch()
            self.state = "starting"
            return "broker: starting"
        if self.state == "starting":
            if not self.kafka.running:
                raise StackError(f"dedicated Kafka exited at restart:\n{tail(self.kafka.log)}")
            if self.kafka.ready():
                self.state = "done"
                self.kafka.restarts += 1
                return f"broker: answering again, {now - self.began:.1f} s after the stop began"
        return None
