"""A server started as a detached local process, found again later through its pid file.

`sensorstream stack up` exits while the servers keep running, and `down` or `status` run in a
different process, so everything we know about a server lives on disk: a pid file holding the
pid *and* the kernel's start time of that pid (so a recycled pid is never mistaken for ours)
and a log file whose tail explains a failed start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.local_stack.errors import StackError


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None when no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished; it only waits to be reaped
        return None
    return int(fields[19])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_ticks: int
    command: list[str]


class ManagedProcess:
    """One named server process: its pid file, its log, and the signals to stop it."""

    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def record(self) -> ProcessRecord | None:
        """The running process we started, or None (and the stale pid file removed)."""
        try:
            data = json.loads(self.pid_file.read_text())
            record = ProcessRecord(int(data["pid"]), int(data["start_ticks"]), data["command"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _proc_start_ticks(record.pid) != record.start_ticks:
            self.pid_file.unlink(missing_ok=True)
            return None
        return record

    def is_running(self) -> bool:
        return self.record() is not None

    def start(self, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        """Start detached in its own session so Ctrl-C on the caller never reaches it."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ticks = _proc_start_ticks(proc.pid)
        if ticks is None:
            raise StackError(
                f"{self.name} exited at once; log {self.log_file}:\n{tail(self.log_file)}"
            )
        self.pid_file.write_text(
            json.dumps({"pid": proc.pid, "start_ticks": ticks, "command": command})
        )
        return proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout`.

        Returns True when a process was running.
        """
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap(record.pid)
            if _proc_start_ticks(record.pid) != record.start_ticks:
                break
            time.sleep(0.1)
        else:
            self._signal_group(record.pid, signal.SIGKILL)
            for _ in range(50):
                self._reap(record.pid)
                if _proc_start_ticks(record.pid) != record.start_ticks:
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    @staticmethod
    def _reap(pid: int) -> None:
        """Collect the exit status when the server is our own child (tests start it in-process)."""
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def rss_mb(self) -> float | None:
        record = self.record()
        if record is None:
            return None
        try:
            for line in Path(f"/proc/{record.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None
