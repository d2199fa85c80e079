"""CPU of the whole machine and of the local stack's servers over a measured window.

A process's own CPU time says what it costs, not whether the machine had more to give: on
these two-core machines the sink shares its cores with the broker and the S3 server, which
work for it (serving fetches, storing Parquet). Reading the machine's busy time and the
servers' CPU over the same window as the sink's says how close the run came to using every
core, and so how far any rate could still go by overlapping work rather than removing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.e2e_sampling import cpu_seconds

_TICKS = os.sysconf("SC_CLK_TCK")


def stack_server_pids() -> dict[str, int]:
    """Name → pid of the local stack's running servers (empty when the stack is elsewhere)."""
    try:
        from infra.local_stack.stack import LocalStack

        return {s.name: s.pid for s in LocalStack().status() if s.pid is not None}
    except Exception:  # a benchmark against servers this machine does not run
        return {}


def _machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICKS, sum(ticks) / _TICKS


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float
    total_s: float
    servers_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def take(cls, pids: dict[str, int]) -> CpuSnapshot:
        busy, total = _machine_seconds()
        servers = {name: cpu_seconds(pid) for name, pid in pids.items()}
        return cls(busy, total, {n: s for n, s in servers.items() if s is not None})

    def since(self, before: CpuSnapshot, rows: int, seconds: float) -> dict[str, object]:
        """What the machine and each server spent between `before` and this snapshot."""
        servers = {
            name: 1e6 * (spent - before.servers_s[name]) / rows if rows else 0.0
            for name, spent in self.servers_s.items()
            if name in before.servers_s
        }
        busy = self.busy_s - before.busy_s
        return {
            "machine_cores_busy": busy / seconds if seconds > 0 else 0.0,
            "machine_cpu_us_per_row": 1e6 * busy / rows if rows else 0.0,
            "servers_cpu_us_per_row": servers,
        }
