"""Riding out a broker outage in-process (DESIGN section 7: retry with backoff, then fail
loudly).

librdkafka reconnects by itself, but a transaction cannot wait: when the broker stays away
longer than a checkpoint's commit or abort may take, quixstreams raises out of `run()`. The
transaction is then lost anyway (the broker aborts it after its timeout), and so is nothing
else: its outputs were never committed and neither were its input offsets. So the router builds
a new application (new clients, a new transaction) and goes on from the committed offsets,
with backoff, until the outage has lasted its retry budget; then it fails with one line naming
the broker and the last error, not a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

from sensorstream.errors import PipelineError

# What a broker that is down, restarting or unreachable looks like from a client. Fatal
# errors (a fenced producer: another instance took over) are never among them.
OUTAGE_CODES = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)

RECOVERED_AFTER_S = 30.0
"""A run that lasted this long before failing ends the outage it was retrying."""


def outage_error(exc: BaseException) -> KafkaError | None:
    """The Kafka error behind `exc` if it says the broker is unreachable (None otherwise),
    looking through the exceptions it was raised from (quixstreams and our own wrap them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KafkaException) and current.args:
            error = current.args[0]
            transient = isinstance(error, KafkaError) and not error.fatal()
            if transient and (error.code() in OUTAGE_CODES or error.retriable()):
                return error
            return None
        current = current.__cause__ or current.__context__
    return None


class Outage:
    """One broker outage as the router lives it: when it began, and whether the retry budget
    still allows another attempt."""

    def __init__(
        self, budget_s: float, where: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget_s = budget_s
        self.where = where
        self.clock = clock
        self.since: float | None = None
        self.attempts = 0

    def failed(self, error: KafkaError, ran_for_s: float) -> float:
        """Record a failed run (of `ran_for_s` seconds); returns how long the outage has
        lasted, or raises `PipelineError` once that is past the budget."""
        now = self.clock()
        if self.since is None or ran_for_s >= RECOVERED_AFTER_S:
            self.since, self.attempts = now, 0
        self.attempts += 1
        lasted = now - self.since
        if lasted >= self.budget_s:
            raise PipelineError(
                f"Kafka at {self.where} unreachable for {lasted:.0f} s ({self.attempts} "
                f"attempts, retry budget {self.budget_s:.0f} s); last error: {error.str()}"
            )
        return lasted
