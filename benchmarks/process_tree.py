"""CPU and memory of a process and everything it starts, read from /proc while it runs.

A Spark job is a Python driver plus the JVM it launches (and the JVM may outlive the driver's
own accounting), so `getrusage(RUSAGE_CHILDREN)` of the benchmark would miss or mix its parts.
Sampling /proc every few hundred milliseconds sees every descendant: each process's CPU
(utime + stime) and its own peak RSS (VmHWM) as last seen, and the tree's RSS summed at each
sample, whose maximum is the tree's peak.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def parse_stat(text: str) -> tuple[int, float]:
    """(parent pid, CPU seconds: utime + stime) from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself,
    so the fields are counted from the last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime field 14, stime field 15.
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def status_kb(text: str, name: str) -> int:
    """A `Name:   N kB` value of /proc/<pid>/status (0 when absent: a zombie has no memory)."""
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """`root` and every process whose chain of parents reaches it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


@dataclass
class ProcessSeen:
    command: str = ""
    cpu_seconds: float = 0.0
    peak_rss_kb: int = 0


@dataclass
class TreeUsage:
    processes: dict[int, ProcessSeen] = field(default_factory=dict)
    peak_tree_rss_kb: int = 0
    samples: int = 0

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds for p in self.processes.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu_seconds": self.cpu_seconds(),
            "peak_tree_rss_mb": self.peak_tree_rss_kb / 1024,
            "sum_of_process_peaks_mb": sum(p.peak_rss_kb for p in self.processes.values()) / 1024,
            "samples": self.samples,
            "processes": {
                str(pid): {
                    "command": p.command,
                    "cpu_seconds": p.cpu_seconds,
                    "peak_rss_mb": p.peak_rss_kb / 1024,
                }
                for pid, p in self.processes.items()
            },
        }


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # gone between listing and reading
        return None


class TreeMonitor(threading.Thread):
    """Samples the tree under `root` until `stop()`; `usage` holds what it saw."""

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True, name=f"tree-monitor-{root}")
        self.root = root
        self.interval_s = interval_s
        self.usage = TreeUsage()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            text = _read(entry / "stat")
            if text:
                pid = int(entry.name)
                parents[pid], cpu[pid] = parse_stat(text)
        tree_rss = 0
        for pid in descendants(self.root, parents) & parents.keys():
            status = _read(PROC / str(pid) / "status")
            if status is None:
                continue
            seen = self.usage.processes.setdefault(pid, ProcessSeen())
            if not seen.command:
                seen.command = (_read(PROC / str(pid) / "cmdline") or "").replace("\0", " ")[:200]
            seen.cpu_seconds = max(seen.cpu_seconds, cpu[pid])
            seen.peak_rss_kb = max(seen.peak_rss_kb, status_kb(status, "VmHWM"))
            tree_rss += status_kb(status, "VmRSS")
        self.usage.peak_tree_rss_kb = max(self.usage.peak_tree_rss_kb, tree_rss)
        self.usage.samples += 1

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> TreeUsage:
        self._stop_event.set()
        self.join()
        return self.usage
