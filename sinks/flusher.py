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
* At most one flush of a table runs at a time, and its flushes start in the order they were
  handed over, so a table's txn version for a partition only ever grows (a later batch
  committed first would make the table drop the earlier batch's rows as "already written").
* A flush's result (the offsets it covers) is handed back on the sink's own thread, which
  commits the consumer offsets only then: never past a batch that is not in its table.
* A flush that failed fails the sink at the next `poll`, `wait` or `submit`; nothing handed
  over after it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

R = TypeVar("R")


class Flusher(Generic[R]):
    """One lane: runs flushes one at a time on a worker thread; `on_done` gets each result,
    in order, on the thread that calls `poll`, `wait` or `submit`."""

    def __init__(self, on_done: Callable[[R], None], background: bool = True) -> None:
        self.on_done = on_done
        self.background = background
        self._pending: tuple[Future[R], int] | None = None

    @property
    def rows_in_flight(self) -> int:
        return 0 if self._pending is None else self._pending[1]

    @property
    def busy(self) -> bool:
        """A flush is running (or finished, its result not yet handed over)."""
        return self._pending is not None

    def submit(self, flush: Callable[[], R], rows: int) -> None:
        """Start `flush` (of `rows` records) once the previous one has finished."""
        self.wait()
        if not self.background:
            self.on_done(flush())
            return
        future: Future[R] = Future()

        def run() -> None:
            try:
                future.set_result(flush())
            except BaseException as exc:  # raised on the sink's thread by _finish
                future.set_exception(exc)

        # A daemon: a flush stuck on an object store past the retry budget must not keep a
        # failed sink's process alive.
        threading.Thread(target=run, name="sink-flush", daemon=True).start()
        self._pending = (future, rows)

    def poll(self) -> None:
        """Hand over the running flush's result if it has finished (raise if it failed)."""
        if self._pending is not None and self._pending[0].done():
            self._finish()

    def wait(self) -> None:
        """Wait for the running flush, if any, and hand over its result."""
        if self._pending is not None:
            self._finish()

    def _finish(self) -> None:
        future, _ = self._pending
        self._pending = None
        self.on_done(future.result())


K = TypeVar("K", bound=Hashable)


class FlushLanes(Generic[K, R]):
    """A `Flusher` per key (a table), created on first use; results reach `on_done` on the
    calling thread, in order within a lane."""

    def __init__(self, on_done: Callable[[R], None], background: bool = True) -> None:
        self.on_done = on_done
        self.background = background
        self._lanes: dict[K, Flusher[R]] = {}

    def lane(self, key: K) -> Flusher[R]:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Flusher(self.on_done, self.background)
        return lane

    @property
    def rows_in_flight(self) -> int:
        return sum(lane.rows_in_flight for lane in self._lanes.values())

    def busy(self, key: K) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.busy

    def submit(self, key: K, flush: Callable[[], R], rows: int) -> None:
        """Start `flush` in `key`'s lane once that lane's previous flush has finished."""
        self.lane(key).submit(flush, rows)

    def poll(self) -> None:
        """Hand over the result of every lane whose flush has finished."""
        for lane in list(self._lanes.values()):
            lane.poll()

    def wait(self, key: K | None = None) -> None:
        """Wait for `key`'s lane, or for every lane."""
        if key is not None:
            self.lane(key).wait()
            return
        for lane in list(self._lanes.values()):
            lane.wait()
