"""Retrying an object-store operation within a hard time budget (DESIGN section 7: "retry with
backoff, then fail loudly; never commit offsets past data that was not written").

The budget is how long one operation (reading a table, or one table's commit) may take from its
start, every attempt and every wait included, and it is a hard bound. Two things used to overrun
it: the backoff wait that followed the last failed attempt, and attempts themselves, which the
object store client stretches with its own timeouts and retries (minutes by default, e.g. for a
server that accepts connections and never answers). Here every wait ends at the deadline, and
every attempt runs on a daemon thread that is abandoned when the deadline passes: the caller
gets its `PipelineError` on time. An abandoned attempt may still finish later, even commit;
that is harmless, because the sink fails without committing the batch's offsets, and on restart
the table's txn versions skip whatever that commit holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TypeVar

from sensorstream.backoff import Backoff
from sensorstream.errors import PipelineError

T = TypeVar("T")


class AttemptTimedOut(Exception):
    """An attempt still running when the budget ran out (not an OSError: never retried)."""


def run_bounded(action: Callable[[], T], timeout: float) -> T:
    """`action()` on its own daemon thread, waited for at most `timeout` seconds."""
    future: Future[T] = Future()

    def attempt() -> None:
        try:
            future.set_result(action())
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=attempt, name="object-store-attempt", daemon=True).start()
    try:
        return future.result(timeout=max(timeout, 0.0))
    except FutureTimeout:
        raise AttemptTimedOut(f"no answer within {timeout:.1f}s") from None


@dataclass
class RetryBudget:
    """Runs operations with backoff retries of transient errors, each within `budget_s`."""

    budget_s: float
    is_transient: Callable[[BaseException], bool]
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    run_attempt: Callable[[Callable[[], T], float], T] = run_bounded
    wait: Callable[[float], bool] | None = None  # default: stop.wait; True when stopped
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0

    def run(self, what: str, action: Callable[[], T]) -> T:
        """`action()`'s result; PipelineError once `budget_s` is spent (or the sink stops)."""
        wait = self.wait or self.stop.wait
        backoff = Backoff(initial_s=self.backoff_initial_s, max_s=self.backoff_max_s)
        deadline = self.clock() + self.budget_s
        while True:
            try:
                return self.run_attempt(action, deadline - self.clock())
            except AttemptTimedOut as exc:
                raise self._spent(what, exc) from None
            except Exception as exc:
                if not self.is_transient(exc):
                    raise
                remaining = deadline - self.clock()
                if remaining <= 0 or self.stop.is_set():
                    raise self._spent(what, exc) from exc
                if wait(min(backoff.next_delay(), remaining)):
                    raise self._spent(what, exc) from exc
                if self.clock() >= deadline:
                    raise self._spent(what, exc) from exc

    def _spent(self, what: str, exc: BaseException) -> PipelineError:
        if self.stop.is_set():
            why = "the sink was asked to stop while retrying"
        else:
            why = f"the object store is unreachable after {self.budget_s:g}s of retries"
        return PipelineError(
            f"{what}: {why}: {exc}; no offsets were committed past data that is not in the table"
        )
