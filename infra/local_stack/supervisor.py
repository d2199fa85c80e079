"""The pipeline's processes, each started, signalled, restarted and stopped from one place.

The demo, the chaos test and the benchmarks run the stages as real `sensorstream` processes,
the way a deployment does, because what they check (exactly once across kill -9, restarts,
rebalances) only means something across process boundaries. This module knows nothing of the
stages themselves: a `ProcessSpec` says what to run, the `Supervisor` makes sure it runs,
appends its output to a log file and that nothing it started outlives it.

Each child leads its own process group, so a terminal's Ctrl-C reaches only the parent, which
then stops the children itself, and signals go to the whole group (anything a child spawned
goes with it). Children also ask the kernel to SIGTERM them if the parent dies without
cleaning up (kill -9 of the parent, a crashed test runner).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_S = 45.0  # SIGTERM -> SIGKILL: a sink may be finishing a Delta commit


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up here, in the parent: between fork and exec the child should only make the call.
_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the parent dies without cleaning up.

    Children run in their own sessions, so nothing else would reach them. The kernel sends
    the signal when the *thread* that started the child ends, so start children from a
    thread that lives as long as they should (the main thread).
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class ProcessSpec:
    """What to run: `sensorstream <args>` with `env` on top of the supervisor's environment.

    `ready` are log lines that show the process does its work (consumes, tails): a restart
    is only over once one of them appears again.
    """

    name: str
    role: str  # simulate, produce, route, sink or maintain
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: tuple[str, ...] = ()


@dataclass
class Child:
    """One start of a spec. A restart is a new Child under the same name."""

    spec: ProcessSpec
    process: subprocess.Popen[bytes]
    log: Path
    log_offset: int  # where this start's part of the (appended) log begins
    start: int  # 1 for the first start of this name, 2 after one restart, ...
    started_at: float  # monotonic

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def output(self) -> str:
        """What this start has written to the log so far."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def ready(self) -> bool:
        return not self.spec.ready or any(marker in self.output() for marker in self.spec.ready)

    def tail(self, lines: int = 12) -> str:
        """The last lines of this start's output, indented for a report."""
        text = self.output().splitlines()[-lines:]
        return "\n".join(f"      {line[:200]}" for line in text)


@dataclass(frozen=True)
class ChildStatus:
    name: str
    role: str
    pid: int
    state: str  # "running", "ready" or "exited"
    exit_code: int | None
    starts: int
    log: str


class NotReady(Exception):
    """A child exited, or did not show it works in time, while it was being waited for."""

    def __init__(self, children: list[Child], why: str) -> None:
        super().__init__(
            "\n".join(
                f"{c.name} {why} (exit {c.exit_code}); last lines of {c.log}:\n{c.tail()}"
                for c in children
            )
        )
        self.children = children
        self.why = why


class Supervisor:
    """Starts named processes, signals and restarts them, and stops every one at the end.

    Use it as a context manager (or call `stop_all` in a finally): leaving the block stops
    whatever still runs, SIGTERM first, SIGKILL after `STOP_TIMEOUT_S`.
    """

    def __init__(
        self,
        log_dir: Path,
        cwd: Path,
        env: Mapping[str, str],
        log_prefix: str = "",
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.env = dict(env)
        self.log_prefix = log_prefix
        self.stop_timeout_s = stop_timeout_s
        self.history: list[Child] = []  # every start, in order
        self._current: dict[str, Child] = {}

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- starting ----------------------------------------------------------------------------

    def start(self, spec: ProcessSpec) -> Child:
        """Start `spec`; a name may be started again once its previous start has exited."""
        previous = self._current.get(spec.name)
        if previous is not None and previous.running:
            raise RuntimeError(f"{spec.name} is running already (pid {previous.pid})")
        log = self.log_dir / f"{self.log_prefix}{spec.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "sensorstream", *spec.args]
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env={**self.env, **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        start = 1 if previous is None else previous.start + 1
        child = Child(spec, process, log, offset, start, time.monotonic())
        self._current[spec.name] = child
        self.history.append(child)
        return child

    def restart(self, name: str) -> Child:
        """Start `name` again with the same spec (after a kill, or after it exited)."""
        child = self.get(name)
        if child.running:
            raise RuntimeError(f"{name} is still running (pid {child.pid}); kill or stop it first")
        return self.start(child.spec)

    def wait_ready(
        self,
        children: Iterable[Child],
        timeout_s: float,
        interrupted: Callable[[], bool] = lambda: False,
    ) -> list[Child]:
        """Wait until every child shows its ready line; the ones still not ready at the timeout.

        Raises NotReady when one exits meanwhile. Returns early (with the waiting ones) when
        `interrupted()` says so.
        """
        waiting = list(children)
        deadline = time.monotonic() + timeout_s
        while waiting and not interrupted():
            exited = [c for c in waiting if not c.running]
            if exited:
                raise NotReady(exited, "exited at start")
            waiting = [c for c in waiting if not c.ready]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return waiting

    # -- looking -----------------------------------------------------------------------------

    def get(self, name: str) -> Child:
        try:
            return self._current[name]
        except KeyError:
            known = ", ".join(self._current) or "none"
            raise KeyError(f"no process named {name!r} (known: {known})") from None

    @property
    def children(self) -> list[Child]:
        """The latest start of every name."""
        return list(self._current.values())

    def of(self, *roles: str) -> list[Child]:
        return [c for c in self._current.values() if c.role in roles]

    def status(self) -> list[ChildStatus]:
        statuses = []
        for child in self._current.values():
            state = "exited" if not child.running else "ready" if child.ready else "running"
            statuses.append(
                ChildStatus(
                    child.name,
                    child.role,
                    child.pid,
                    state,
                    child.exit_code,
                    child.start,
                    str(child.log),
                )
            )
        return statuses

    # -- signals -----------------------------------------------------------------------------

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, wait_s: float = 30.0) -> Child:
        """Send `sig` to `name`'s process group and wait up to `wait_s` for it to exit."""
        child = self.get(name)
        self._signal(child, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(wait_s)
        return child

    def stop(
        self,
        children: Iterable[Child],
        timeout_s: float | None = None,
        hurry: Callable[[], bool] = lambda: False,
    ) -> None:
        """SIGTERM `children`, wait for them, SIGKILL the rest after `timeout_s` or `hurry()`."""
        children = list(children)
        for child in children:
            if child.running:
                self._signal(child, signal.SIGTERM)
        timeout = self.stop_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while any(c.running for c in children) and time.monotonic() < deadline and not hurry():
            time.sleep(0.1)
        for child in children:
            if child.running:
                self._signal(child, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(10)

    def stop_all(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """Stop every child still running, earlier starts of a name included."""
        self.stop([c for c in self.history if c.running], hurry=hurry)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        if not child.running:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, sig)
