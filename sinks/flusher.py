"""One batch written in the background while the sink consumes the next (issue 5).

A flush is mostly Rust: polars decodes the batch, delta-rs writes Parquet and commits, and
both release the GIL. Running it on a worker thread lets the sink's loop keep consuming (and
librdkafka keep fetching) meanwhile, which a serial loop cannot: consuming and flushing each
took about half of its time, on a machine with a second core mostly idle.

The exactly-once protocol stays serial where it matters:
* At most one flush runs at a time, and flushes start in the order they were handed over, so
  a table's txn version for a partition only ever grows (a later batch committed first would
  make the table drop the earlier batch's rows as "already written").
* A flush's result (the offsets it covers) is handed back on the sink's own thread, which
  commits the consumer offsets only then: never past a batch that is not in its table.
* A flush that failed fails the sink at the next `poll`, `wait` or `submit`; nothing handed
  over after it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

R = TypeVar("R")


class Flusher(Generic[R]):
    """Runs flushes one at a time on a worker thread; `on_done` gets each result, in order,
    on the thread that calls `poll`, `wait` or `submit`."""

    def __init__(self, on_done: Callable[[R], None], background: bool = True) -> None:
        self.on_done = on_done
        self.background = background
        self._pending: tuple[Future[R], int] | None = None

    @property
    def rows_in_flight(self) -> int:
        return 0 if self._pending is None else self._pending[1]

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
