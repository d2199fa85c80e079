"""The sink's retry budget is a hard bound (DESIGN section 7), checked on a fake clock: no wait
and no attempt may reach past the deadline, whatever the object store client does. One test
runs the real bounded attempt, to see that a hung attempt is abandoned rather than awaited."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from sensorstream.errors import PipelineError
from sinks.retry import AttemptTimedOut, RetryBudget, run_bounded


class FakeStore:
    """A clock, and attempts that take `attempt_s` each (fail, hang or succeed on a script)."""

    def __init__(self, attempt_s: float, outcomes: list[str]) -> None:
        self.now = 1000.0
        self.attempt_s = attempt_s
        self.outcomes = outcomes
        self.timeouts: list[float] = []
        self.waits: list[float] = []
        self.attempts = 0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        assert seconds >= 0
        self.waits.append(seconds)
        self.now += seconds
        return False

    def run_attempt(self, action: Callable[[], str], timeout: float) -> str:
        self.timeouts.append(timeout)
        self.attempts += 1
        outcome = self.outcomes[min(self.attempts, len(self.outcomes)) - 1]
        if outcome == "hang":  # the attempt would outlive the deadline: abandoned at it
            self.now += timeout
            raise AttemptTimedOut(f"no answer within {timeout}")
        self.now += min(self.attempt_s, timeout)
        if outcome == "fail":
            raise OSError("connection refused")
        return action()

    def budget(self, seconds: float) -> RetryBudget:
        return RetryBudget(
            seconds,
            lambda exc: isinstance(exc, OSError),
            clock=self.clock,
            run_attempt=self.run_attempt,
            wait=self.wait,
        )


def test_failing_attempts_stop_at_the_deadline_not_after_a_last_backoff() -> None:
    store = FakeStore(attempt_s=0.3, outcomes=["fail"])
    started = store.now
    with pytest.raises(PipelineError, match="unreachable after 10s of retries"):
        store.budget(10).run("writing s3://lake/raw", lambda: "done")
    assert store.now - started <= 10.0
    assert store.attempts > 3  # it did retry, with backoff
    assert all(t <= 10.0 for t in store.timeouts)


def test_an_attempt_that_hangs_is_abandoned_at_the_deadline() -> None:
    store = FakeStore(attempt_s=0.5, outcomes=["fail", "fail", "hang"])
    started = store.now
    with pytest.raises(PipelineError, match="s3://lake/raw"):
        store.budget(5).run("writing s3://lake/raw", lambda: "done")
    assert store.now - started == pytest.approx(5.0)
    # each attempt may only run for what is left of the budget
    spent = 0.0
    for timeout, wait in zip(store.timeouts, [*store.waits, 0.0], strict=True):
        assert timeout == pytest.approx(5.0 - spent)
        spent += min(timeout, 0.5) + wait


def test_success_after_transient_failures_returns_the_result() -> None:
    store = FakeStore(attempt_s=0.1, outcomes=["fail", "fail", "ok"])
    assert store.budget(60).run("reading", lambda: "table") == "table"
    assert store.attempts == 3


def test_a_problem_with_the_data_is_not_retried() -> None:
    store = FakeStore(attempt_s=0.1, outcomes=["ok"])

    def bad() -> str:
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError, match="schema mismatch"):
        store.budget(60).run("writing", bad)
    assert store.attempts == 1


def test_stopping_the_sink_ends_the_retries() -> None:
    stop = threading.Event()
    stop.set()
    budget = RetryBudget(60, lambda exc: True, stop=stop, run_attempt=lambda a, t: a())

    def refused() -> str:
        raise OSError("connection refused")

    with pytest.raises(PipelineError, match="asked to stop"):
        budget.run("writing", refused)


def test_run_bounded_does_not_wait_for_a_hung_attempt() -> None:
    release, finished = threading.Event(), threading.Event()

    def hung() -> None:
        release.wait(600)
        finished.set()

    with pytest.raises(AttemptTimedOut):
        run_bounded(hung, 0.2)
    # It gave up while the attempt still hung, however long the machine took to get here.
    assert not finished.is_set()
    release.set()
    assert run_bounded(lambda: 42, 5) == 42
    with pytest.raises(OSError, match="refused"):
        run_bounded(lambda: (_ for _ in ()).throw(OSError("refused")), 5)
