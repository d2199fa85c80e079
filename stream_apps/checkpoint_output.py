"""Producing the router's outgoing messages inside quixstreams' checkpoint transaction.

quixstreams' own way out (`apply(expand=True)` into one row per output, then `set_headers` and
`to_topic` per row) costs more per message than routing the message does: a Row, a
serialization context, a kwargs dict, a Python delivery callback and a `poll(0)` per output.
The router instead produces each message of one input straight through the producer the
Application's checkpoints use. That producer is what makes exactly-once hold: under
`processing_guarantee="exactly-once"` every checkpoint begins a Kafka transaction on it and
commits the consumer offsets in the same transaction (`send_offsets_to_transaction`), so
messages produced on it between two checkpoints commit or abort with the offsets of the inputs
that caused them, as `to_topic` output would.

It is the processing context's (public) `producer`; the librdkafka producer under it and its
delivery callback are private to quixstreams, reached through `quixstreams_internals`. Delivery
failures go to that callback, which the checkpoint's flush raises before any commit: a
checkpoint with a lost message never commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Producer

from sensorstream.errors import PipelineError
from sensorstream.topics import TopicSpec, ensure_topics
from stream_apps.dispatch import Outgoing
from stream_apps.quixstreams_internals import (
    InternalProducer,
    delivery_callback,
    librdkafka_producer,
)

BUFFER_FULL_WAIT_S = 0.5
"""How long one wait for librdkafka's queue to drain lasts when it is full."""
BUFFER_FULL_WAITS = 120
"""Waits before giving up: a queue still full after a minute means the broker is gone."""


class CheckpointOutput:
    """Sends outgoing messages on the checkpoint's producer; output topics are created (with
    `partitions` partitions) the first time a message goes to them."""

    def __init__(
        self, producer: InternalProducer, kafka_config: dict[str, str], partitions: int
    ) -> None:
        self._internal = producer
        self._delivery_report = delivery_callback(producer)
        self._kafka_config = kafka_config
        self._partitions = partitions
        self._known: set[str] = set()
        # The librdkafka producer is created lazily by quixstreams (on the first checkpoint),
        # so it is looked up on the first send, not here.
        self._produce: Callable[..., None] | None = None
        self._poll: Callable[[float], int] | None = None

    def ensure(self, topics: Iterable[str]) -> None:
        """Create those of `topics` that do not exist yet (existing ones stay as they are) and
        remember them all; `send` does this for a topic it has not seen."""
        missing = [t for t in topics if t not in self._known]
        if missing:
            ensure_topics(self._kafka_config, [TopicSpec(t, self._partitions) for t in missing])
            self._known.update(missing)

    def _bind(self) -> Callable[..., None]:
        raw: Producer = librdkafka_producer(self._internal)
        self._poll = raw.poll
        self._produce = raw.produce
        return raw.produce

    def send(self, messages: Iterable[Outgoing], key: Any, timestamp: int | None) -> None:
        """Produce each message with the input's key and timestamp, as `to_topic` would."""
        produce = self._produce or self._bind()
        on_delivery = self._delivery_report
        timestamp = timestamp or 0  # 0: librdkafka stamps the message itself
        known = self._known
        for message in messages:
            if message.topic not in known:
                self.ensure((message.topic,))
            try:
                produce(
                    message.topic,
                    message.value,
                    key,
                    headers=message.headers,
                    timestamp=timestamp,
                    on_delivery=on_delivery,
                )
            except BufferError:
                self._wait_and_produce(message, key, timestamp, on_delivery)

    def _wait_and_produce(
        self, message: Outgoing, key: Any, timestamp: int, on_delivery: Callable[..., None]
    ) -> None:
        """librdkafka's queue is full: serve deliveries until there is room, then produce."""
        assert self._produce is not None and self._poll is not None
        for _ in range(BUFFER_FULL_WAITS):
            self._poll(BUFFER_FULL_WAIT_S)
            try:
                self._produce(
                    message.topic,
                    message.value,
                    key,
                    headers=message.headers,
                    timestamp=timestamp,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                continue
        raise PipelineError(
            f"producing to {message.topic}: the producer queue stayed full for "
            f"{BUFFER_FULL_WAIT_S * BUFFER_FULL_WAITS:.0f} s; is the broker reachable?"
        )
