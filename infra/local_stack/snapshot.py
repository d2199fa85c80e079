"""The pipeline at one moment, stage by stage, counted for the current run only.

One snapshot puts the four stages side by side (rows in SQLite, rows the producers have
committed to Kafka, records in the routed topics, what the router and the sinks still owe), so
progress, lag and "caught up" are all read off the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from infra.local_stack.kafka_probe import KafkaProbe
from infra.local_stack.pipeline import (
    DEAD_LETTERS,
    READINGS,
    ROUTE_TOPICS,
    ROUTER_GROUP,
    SINK_GROUP,
    EdgeNode,
)
from infra.local_stack.sqlite_probe import rows_after


@dataclass(frozen=True)
class Snapshot:
    """The pipeline at one moment, counted for this run only."""

    at: float  # monotonic
    written: dict[str, int]  # node id -> rows the simulator committed to SQLite
    produced: dict[str, int]  # node id -> rows the producer committed to Kafka
    topics: dict[str, int]  # topic -> records
    router_lag: int
    sink_lag: dict[str, int]  # topic -> records not in their Delta table yet

    def total(self, per_node: dict[str, int]) -> int:
        return sum(per_node.values())

    @property
    def caught_up(self) -> bool:
        return (
            all(self.produced[n] >= w for n, w in self.written.items())
            and self.topics.get(READINGS, 0) >= self.total(self.produced)
            and self.router_lag == 0
            and not any(self.sink_lag.values())
        )


def take_snapshot(nodes: list[EdgeNode], probe: KafkaProbe) -> Snapshot:
    """Every stage now: SQLite read directly, the rest from what `probe` has read so far."""
    produced = {
        n.node_id: max(0, probe.checkpoints.get(n.node_id, 0) - n.start_rowid) for n in nodes
    }
    sink_topics = (*ROUTE_TOPICS, *probe.regional_topics, DEAD_LETTERS)
    return Snapshot(
        at=time.monotonic(),
        written={n.node_id: rows_after(n.db, n.start_rowid) for n in nodes},
        produced=produced,
        topics=dict(probe.counts),
        router_lag=probe.lag(ROUTER_GROUP, (READINGS,))[READINGS],
        sink_lag=probe.lag(SINK_GROUP, sink_topics),
    )
