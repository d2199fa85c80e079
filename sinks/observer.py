"""Hooks for timing the sink's stages from outside it, for the sink benchmark.

Prometheus metrics (`sinks.metrics`) say how the sink is doing in production; a benchmark needs
more: when each consume() call ran, when each batch's commit step began and ended, how long
the loop waited for a table's lane. Rather than swap the sink's own methods at run time (which
a refactor of the sink breaks without anyone seeing), the sink calls an observer at those
points. The default observer does nothing; its hooks cost a clock reading or two per consume()
call and per batch.

Times are `time.perf_counter()` seconds. A hook must be quick and must not raise: a batch's
hooks run on its flush thread, the others on the sink's loop thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition


@dataclass(frozen=True)
class BatchTiming:
    """One batch's flush, from its decoding to its table's commit."""

    route: str
    records: int
    """Consumed records in the batch."""
    decode_s: float
    """Decoding it (on the flush thread, maybe while the table's previous batch committed)."""
    commit_started: float
    """Its commit step began: the table's previous batch had landed."""
    commit_ended: float
    delta_write_s: float
    """Of the commit step, the time in the Delta writers (its table's, and the dead-letter
    table's for its dead rows)."""


class SinkObserver:
    """Does nothing; subclass it and pass it as `DeltaSink(observer=...)` to time the sink."""

    def consumed(self, started: float, ended: float, messages: int) -> None:
        """One consume() call of the loop, and how many messages it returned."""

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions were assigned, their start offsets set (their tables' txn versions read)."""

    def batch_committing(self, route: str, records: int) -> None:
        """A batch's commit step begins (flush thread)."""

    def batch_committed(self, timing: BatchTiming) -> None:
        """A batch's commit step ended, landed or not (flush thread)."""

    def lanes_waited(self, started: float, ended: float) -> None:
        """The loop handed a batch to a lane or waited for lanes (a full lane, the memory
        bound, a rebalance, the end of a run) from `started` to `ended`."""

    def landing_all(self) -> None:
        """The loop stopped consuming (stopped, or `once` read everything); what is buffered
        lands now."""
