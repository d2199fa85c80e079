"""When the demo stops waiting for the pipeline to catch up after the simulators end.

A fixed deadline is wrong both ways: on a slow or busy machine the pipeline may need minutes to
land what the simulators wrote in seconds, and stopping it while it is still landing rows turns
rows in flight into rows that look lost. So the drain waits as long as the pipeline makes
progress (some stage owes less than it did a moment before) and gives up only after a whole
stall window without any: a stage that is stuck, not a stage that is slow.

After the simulators end nothing new enters the pipeline, so what a stage owes can only shrink
by that stage doing work (the producers' checkpoints, the router's and the sinks' committed
offsets only move forward); the router routing records makes the sinks owe more, which is why
progress is counted stage by stage, never as one total.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from infra.local_stack.snapshot import Snapshot

# No stage committed anything for this long: the pipeline is stuck, not slow. Generous, since a
# sink's Delta commit to S3 can take a minute on a machine with a load of 20.
STALL_WINDOW_S = 180.0
CALM_NEEDED = 2  # caught up twice in a row: the probe may not have read the last records yet


class DrainState(Enum):
    WAITING = "waiting"
    CAUGHT_UP = "caught up"
    STALLED = "stalled"


def owed(snapshot: Snapshot) -> dict[str, int]:
    """What each stage still owes: rows per producer, records for the router, per sink topic."""
    stages = {
        f"producer {node}": max(0, written - snapshot.produced.get(node, 0))
        for node, written in snapshot.written.items()
    }
    stages["router"] = snapshot.router_lag
    stages |= {f"sink {topic}": lag for topic, lag in snapshot.sink_lag.items()}
    return stages


def describe(stages: Mapping[str, int]) -> str:
    """The stages that still owe something, for the line that says the drain gave up."""
    behind = [f"{stage} {count:,}" for stage, count in stages.items() if count]
    return ", ".join(behind) or "nothing visible"


class Drain:
    """Watches what the stages owe, one observation at a time, and says when to stop waiting."""

    def __init__(
        self, now: float, stall_window_s: float = STALL_WINDOW_S, calm_needed: int = CALM_NEEDED
    ) -> None:
        self.stall_window_s = stall_window_s
        self.calm_needed = calm_needed
        self.last_progress = now
        self._previous: dict[str, int] = {}
        self._calm = 0

    def observe(self, now: float, stages: Mapping[str, int], caught_up: bool) -> DrainState:
        """One look at the pipeline: `stages` as `owed` gives it, `caught_up` as the snapshot
        says. Progress is any stage owing less than at the previous look."""
        if any(count < self._previous.get(stage, count) for stage, count in stages.items()):
            self.last_progress = now
        self._previous = dict(stages)
        self._calm = self._calm + 1 if caught_up else 0
        if self._calm >= self.calm_needed:
            return DrainState.CAUGHT_UP
        if now - self.last_progress > self.stall_window_s:
            return DrainState.STALLED
        return DrainState.WAITING

    def stalled_for(self, now: float) -> float:
        return now - self.last_progress
