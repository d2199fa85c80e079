"""Live progress of a running pipeline: what each stage has done, its rate, and the lag.

On a terminal a block is redrawn in place every second; anywhere else (a log, CI) a single
line every few seconds, so a captured output stays readable.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import IO

from infra.local_stack.display import count, grid
from infra.local_stack.pipeline import DEAD_LETTERS, ROUTE_TOPICS, ROUTES, EdgeNode, regional_topic
from infra.local_stack.snapshot import Snapshot

PLAIN_REFRESH_S = 5.0


def _rate(now: Snapshot, before: Snapshot | None, pick: Callable[[Snapshot], int]) -> str:
    if before is None or now.at <= before.at:
        return "-"
    return f"{(pick(now) - pick(before)) / (now.at - before.at):,.0f}"


class ProgressView:
    """Live progress: a block redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, out: IO[str], nodes: list[EdgeNode]) -> None:
        self.out = out
        self.nodes = nodes
        self.tty = out.isatty()
        self._drawn = 0  # lines of the block on screen
        self._last_line = float("-inf")
        self._previous: Snapshot | None = None

    def say(self, line: str) -> None:
        """A log line above the live block (which is redrawn at the next update)."""
        self._erase()
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out, flush=True)

    def freeze(self) -> None:
        """Leave the last block on screen: what follows is printed below it."""
        self._drawn = 0

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def update(self, status: str, snap: Snapshot) -> None:
        previous, self._previous = self._previous, snap
        if self.tty:
            self._erase()
            lines = self._block(status, snap, previous)
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
            self._drawn = len(lines)
        elif snap.at - self._last_line >= PLAIN_REFRESH_S:
            self._last_line = snap.at
            print(self._line(status, snap), file=self.out, flush=True)

    def _block(self, status: str, s: Snapshot, before: Snapshot | None) -> list[str]:
        regions = [n.region for n in self.nodes]
        ids = [n.node_id for n in self.nodes]

        def stage(label: str, cells: list[int], pick: Callable[[Snapshot], int]) -> list[str]:
            return [label, *map(count, cells), count(sum(cells)), _rate(s, before, pick)]

        routed = [s.topics.get(regional_topic(r), 0) for r in regions]
        stages = grid(
            [
                ["", *regions, "total", "rows/s"],
                stage(
                    "written to SQLite", [s.written[i] for i in ids], lambda x: x.total(x.written)
                ),
                stage(
                    "produced to Kafka", [s.produced[i] for i in ids], lambda x: x.total(x.produced)
                ),
                stage("routed (regional)", routed, lambda x: x.topics.get("sensors.raw", 0)),
            ],
            min_width=9,
        )
        regional = tuple(regional_topic(r) for r in regions)
        groups = [*((t,) for t in ROUTE_TOPICS), regional, (DEAD_LETTERS,)]

        def per_topic(counts: dict[str, int]) -> list[str]:
            return [count(sum(counts.get(t, 0) for t in group)) for group in groups]

        routes = grid(
            [
                ["routed topic", *ROUTES, "regional", "dlq"],
                ["records", *per_topic(s.topics)],
                ["not yet in Delta", *per_topic(s.sink_lag)],
            ],
            min_width=7,
        )
        behind = max(0, s.total(s.written) - s.total(s.produced))
        lags = (
            f"  lag: producers {count(behind)} rows · router {count(s.router_lag)} records · "
            f"sink {count(sum(s.sink_lag.values()))} records"
        )
        width = shutil.get_terminal_size((100, 24)).columns - 1
        lines = [f"sensorstream demo · {status} · Ctrl-C stops everything", *stages, "", *routes]
        # One screen line each, or the redraw (which moves up by lines) would drift.
        return [line[:width] for line in [*lines, lags]]

    def _line(self, status: str, s: Snapshot) -> str:
        return (
            f"{status}: written {count(s.total(s.written))}, "
            f"produced {count(s.total(s.produced))}, "
            f"routed {count(s.topics.get('sensors.raw', 0))} "
            f"(router lag {count(s.router_lag)}), sink lag {count(sum(s.sink_lag.values()))}, "
            f"dlq {count(s.topics.get(DEAD_LETTERS, 0))}"
        )
