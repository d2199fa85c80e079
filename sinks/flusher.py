"""Batches written in the background while the sink consumes the next (issues 5 and 6).

A flush is mostly Rust: polars decodes the batch, delta-rs writes Parquet and commits, and
both release the GIL. Running it on a worker thread lets the sink's loop keep consuming (and
librdkafka keep fetching) meanwhile, which a serial loop cannot: consuming and flushing each
took about half of its time, on a machine with a second core mostly idle.

Each table has a lane of its own. With a single lane, the emergency table's 1-second batch
queued behind the 30-second tables, which all come due together, and missed its latency
(3.7 s at p99 where 3 s is the target). Lanes of different tables are independent because
their records are: each topic lands in exactly one table, so a table's flush covers only its
own topic-partitions, and committing their offsets says nothing about any other table's. (The
dead-letter table, which every lane may append to, serialises those writes with its writer's
lock; its txn versions are per source topic-partition, so they too only grow.)

The exactly-once protocol stays serial where it matters, within a lane:
* A table's batches are committed one at a time, in the order they were handed over, so a
  table's txn version for a partition only ever grows (a later batch committed first would
  make the table drop the earlier batch's rows as "already written"). Only their preparation
  (decoding, which does not look at the table) runs ahead, one batch deep, and only while the
  batch being committed is small (`AHEAD_BYTES`); whether a batch's schemas fit the table is
  decided in its commit step, after the previous batch's commit.
* A flush's result (the offsets it covers) is handed back on the sink's own thread, which
  commits the consumer offsets only then: never past a batch that is not in its table.
* A flush that failed fails the sink at the next `poll`, `wait` or `submit`; nothing handed
  over after it in its lane commits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

R = TypeVar("R")
P = TypeVar("P")

DEPTH = 2
"""Batches of one table in flight: one committing while the next one decodes."""
AHEAD_BYTES = 4 * 1024 * 1024
"""A table's next batch decodes while its previous one commits only while the batches in
flight hold fewer bytes than this: two large batches at once (one's Avro block, polars frame
and Arrow copies beside the other's write buffers) were most of the sink's peak memory when
catching up, while small batches (a route's few seconds of records) still decode ahead."""


class EarlierFlushFailed(Exception):
    """A flush not committed because one before it in its lane failed (that one is raised)."""


class Flusher(Generic[R]):
    """One lane: each flush is prepared (decoded) as soon as it is handed over and committed
    once the lane's previous flush has committed, so decoding a batch overlaps writing the one
    before; `on_done` gets each result, in order, on the thread that calls `poll`, `wait` or
    `submit`."""

    def __init__(
        self,
        on_done: Callable[[R], None],
        background: bool = True,
        depth: int = DEPTH,
        ahead_bytes: int = AHEAD_BYTES,
    ) -> None:
        self.on_done = on_done
        self.background = background
        self.depth = depth
        self.ahead_bytes = ahead_bytes
        self._pending: deque[tuple[Future[R], int, int]] = deque()

    @property
    def rows_in_flight(self) -> int:
        return sum(rows for _, rows, _ in self._pending)

    @property
    def bytes_in_flight(self) -> int:
        return sum(size for _, _, size in self._pending)

    @property
    def busy(self) -> bool:
        """As many flushes in flight as the lane takes, or those in flight hold `ahead_bytes`
        or more: another would have to wait."""
        if len(self._pending) >= self.depth:
            return True
        return bool(self._pending) and self.bytes_in_flight >= self.ahead_bytes

    def submit(
        self, prepare: Callable[[], P], commit: Callable[[P], R], rows: int, size: int = 0
    ) -> None:
        """Prepare a flush (of `rows` records, `size` bytes) now, and commit it after the
        lane's previous one; waits first while the lane is full."""
        while self.busy:
            self._finish()
        if not self.background:
            self.on_done(commit(prepare()))
            return
        previous = self._pending[-1][0] if self._pending else None
        future: Future[R] = Future()

        def run() -> None:
            try:
                prepared = prepare()
                if previous is not None and previous.exception() is not None:
                    raise EarlierFlushFailed("an earlier flush of this table failed")
                future.set_result(commit(prepared))
            except BaseException as exc:  # raised on the sink's thread by _finish
                future.set_exception(exc)

        # A daemon: a flush stuck on an object store past the retry budget must not keep a
        # failed sink's process alive.
        threading.Thread(target=run, name="sink-flush", daemon=True).start()
        self._pending.append((future, rows, size))

    def poll(self) -> None:
        """Hand over the results of the flushes that have finished, in order (raise if one
        failed)."""
        while self._pending and self._pending[0][0].done():
            self._finish()

    def wait(self) -> None:
        """Wait for every flush in flight and hand over their results."""
        while self._pending:
            self._finish()

    def _finish(self) -> None:
        future, _, _ = self._pending.popleft()
        self.on_done(future.result())


K = TypeVar("K", bound=Hashable)


class FlushLanes(Generic[K, R]):
    """A `Flusher` per key (a table), created on first use; results reach `on_done` on the
    calling thread, in order within a lane."""

    def __init__(
        self,
        on_done: Callable[[R], None],
        background: bool = True,
        on_blocked: Callable[[float, float], None] | None = None,
        ahead_bytes: int = AHEAD_BYTES,
    ) -> None:
        self.on_done = on_done
        self.background = background
        self.ahead_bytes = ahead_bytes
        """See `Flusher`: a lane's next batch decodes ahead only below this many bytes."""
        self.on_blocked = on_blocked
        """Given the `time.perf_counter()` start and end of each `submit` and `wait` call: the
        time the caller spent handing a flush over or blocked on lanes."""
        self._lanes: dict[K, Flusher[R]] = {}

    def lane(self, key: K) -> Flusher[R]:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Flusher(
                self.on_done, self.background, ahead_bytes=self.ahead_bytes
            )
        return lane

    @property
    def rows_in_flight(self) -> int:
        return sum(lane.rows_in_flight for lane in self._lanes.values())

    @property
    def bytes_in_flight(self) -> int:
        return sum(lane.bytes_in_flight for lane in self._lanes.values())

    def busy(self, key: K) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.busy

    def submit(
        self,
        key: K,
        prepare: Callable[[], Any],
        commit: Callable[[Any], R],
        rows: int,
        size: int = 0,
    ) -> None:
        """Hand a flush to `key`'s lane (see `Flusher.submit`)."""
        started = time.perf_counter()
        try:
            self.lane(key).submit(prepare, commit, rows, size)
        finally:
            if self.on_blocked is not None:
                self.on_blocked(started, time.perf_counter())

    def poll(self) -> None:
        """Hand over the results of every lane's finished flushes."""
        for lane in list(self._lanes.values()):
            lane.poll()

    def wait(self, key: K | None = None) -> None:
        """Wait for `key`'s lane, or for every lane."""
        started = time.perf_counter()
        try:
            for lane in [self.lane(key)] if key is not None else list(self._lanes.values()):
                lane.wait()
        finally:
            if self.on_blocked is not None:
                self.on_blocked(started, time.perf_counter())
