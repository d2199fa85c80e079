"""What the router reports to Prometheus (families in `sensorstream.metrics`).

Per message, the router only tallies (`routed`); the tallies become counter increments and
latency observations when the checkpoint that covers them commits (`checkpoint_committed`).
A checkpoint that fails is dropped with its tallies (`checkpoint_failed`): its messages are
routed again after the restart or rebalance, and counted then, once.

quixstreams has no public hook around a checkpoint commit; `observe_checkpoints` wraps its
processing context's `commit_checkpoint` (`quixstreams_internals.on_commit_checkpoint`), the
one place every commit (timer, end of run, rebalance) goes through.
"""

from __future__ import annotations

import functools
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from schemas.dead_letter import HEADER_STAGE
from sensorstream.kafka_stats import STATS_INTERVAL_MS, ConsumerLag
from sensorstream.metrics import DEAD_LETTER_REASONS, DeadLetterReason, MetricFamilies
from stream_apps.dispatch import HEADER_ROUTE, STAGE, Outgoing
from stream_apps.quixstreams_internals import (
    CommitCheckpoint,
    current_checkpoint,
    on_commit_checkpoint,
)

if TYPE_CHECKING:
    from quixstreams.processing import ProcessingContext


def event_time_s(value: datetime | float | int | None) -> float | None:
    """A reading's event time as Unix seconds: a datetime (the decoded `timestamp-micros`
    field), or epoch microseconds as the Avro long carries it."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return value / 1_000_000


class RouterMetrics:
    def __init__(self, families: MetricFamilies | None = None) -> None:
        self.families = families = families or MetricFamilies()
        # Exactly-once commits go through the producer, unseen by the consumer's statistics.
        self.lag = ConsumerLag(families.consumer_lag, STAGE, basis="consumed")
        self._in = families.records_in.labels(STAGE)
        self._dead = {r: families.dead_letters.labels(STAGE, r) for r in DEAD_LETTER_REASONS}
        self._batch = families.batch_duration.labels(STAGE)
        self._commit = families.commit_duration.labels(STAGE)
        self._last_commit = families.last_commit.labels(STAGE)
        # Registered now, so the first scrape lists every router family (per-route children
        # come with the routes' first records).
        _ = (families.router_routing_version, families.records_out, families.end_to_end_latency)
        # At 0 from the start, so an alert on their increase sees the first bad message.
        self._control_bad = {
            reason: families.router_control_bad_messages.labels(reason)
            for reason in ("undecodable", "refused")
        }
        self._names: dict[bytes, str] = {}  # route header value -> route name
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._inputs = 0
        self._outputs: Counter[str] = Counter()
        self._event_times: dict[str, array[float]] = {}
        self._dead_letters: Counter[DeadLetterReason] = Counter()
        self._first_at: float | None = None

    def consumer_config(self, interval_ms: int = STATS_INTERVAL_MS) -> dict[str, Any]:
        """Add to the Application's `consumer_extra_config` to get the consumer lag."""
        return self.lag.consumer_config(interval_ms)

    # -- per message (tallies of the open checkpoint) ---------------------------------------

    def routed(self, outgoing: Sequence[Outgoing], event_time: float | None = None) -> None:
        """One input message and what it became; `event_time` in Unix seconds (see
        `event_time_s`), None when the message could not be decoded. Called once per input on
        the processing thread; it costs about what building the input's outgoing messages
        does (a counter and an array append per output, no dict or string per message)."""
        with self._lock:
            if self._first_at is None:
                self._first_at = time.monotonic()
            self._inputs += 1
            for message in outgoing:
                route = None
                for key, value in message.headers:
                    if key == HEADER_ROUTE:
                        route = value
                    elif key == HEADER_STAGE:
                        break  # a dead letter (its route header, if any, comes later)
                else:
                    self._output(route, message.topic, event_time)
                    continue
                # A dead letter without a route failed before routing: decoding.
                has_route = any(key == HEADER_ROUTE for key, _ in message.headers)
                self._dead_letters["route" if has_route else "decode"] += 1

    def _output(self, route: bytes | None, topic: str, event_time: float | None) -> None:
        name = self._names.get(route) if route is not None else topic
        if name is None:
            name = self._names[route] = route.decode()  # type: ignore[union-attr]
        self._outputs[name] += 1
        if event_time is not None:
            times = self._event_times.get(name)
            if times is None:
                times = self._event_times[name] = array("d")
            times.append(event_time)

    def follow_routing_version(self, version: Callable[[], int]) -> None:
        """Report `version()` (e.g. `lambda: active.version`) as the routing version in force,
        read at each scrape: a switch shows without a call at every switch."""
        self.families.router_routing_version.set_function(version)

    def control_message_bad(self, reason: Literal["undecodable", "refused"]) -> None:
        """A routing control message this router could not take (see the family's help)."""
        self._control_bad[reason].inc()

    # -- per checkpoint ----------------------------------------------------------------------

    def checkpoint_committed(self, commit_s: float) -> None:
        """The open checkpoint committed, its commit having taken `commit_s`."""
        now, ended = time.time(), time.monotonic()
        with self._lock:
            inputs, outputs, times = self._inputs, self._outputs, self._event_times
            dead, first_at = self._dead_letters, self._first_at
            self._reset()
        if not inputs:
            return
        families = self.families
        self._in.inc(inputs)
        for route, count in outputs.items():
            families.records_out.labels(STAGE, route).inc(count)
        for route, route_times in times.items():
            latency = families.end_to_end_latency.labels(stage=STAGE, route=route)
            latency.observe_many(now - t for t in route_times)
        for reason, count in dead.items():
            self._dead[reason].inc(count)
        if first_at is not None:
            self._batch.observe(max(0.0, ended - commit_s - first_at))
        self._commit.observe(commit_s)
        self._last_commit.set(now)

    def expired(self, records: int) -> None:
        """Input records the topic's retention deleted before the router read them."""
        self._dead["expired"].inc(records)

    def checkpoint_failed(self) -> None:
        """The open checkpoint will not commit: its messages will be routed again."""
        with self._lock:
            self._reset()


def observe_checkpoints(context: ProcessingContext, metrics: RouterMetrics) -> None:
    """Report every checkpoint commit of the application of `context` (its processing context,
    `quixstreams_internals.processing_context`) to `metrics`; call once, before `app.run()`.

    A commit happened when the context replaced a non-empty checkpoint with a new one; an
    exception out of the commit means the checkpoint did not commit.
    """

    def timing(commit_checkpoint: CommitCheckpoint) -> CommitCheckpoint:
        @functools.wraps(commit_checkpoint)
        def timed(*args: Any, **kwargs: Any) -> None:
            before = current_checkpoint(context)
            had_records = before is not None and not before.empty()
            started = time.monotonic()
            try:
                commit_checkpoint(*args, **kwargs)
            except BaseException:
                if had_records:
                    metrics.checkpoint_failed()
                raise
            if had_records and current_checkpoint(context) is not before:
                metrics.checkpoint_committed(time.monotonic() - started)

        return timed

    on_commit_checkpoint(context, timing)
