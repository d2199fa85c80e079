"""The topics every component agrees on (DESIGN section 2), and creating them when missing.

Components create the topics they write to, with the settings the contract needs (compaction
for checkpoint and control topics), rather than relying on broker auto-creation, which would
give them one partition and the broker's retention.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from sensorstream.errors import PipelineError

READINGS = "sensors.readings"
DEAD_LETTERS = "sensors.dlq"
PRODUCER_CHECKPOINTS = "sensors.producer.checkpoints"

COMPACTED = {
    "cleanup.policy": "compact",
    # Keep the uncompacted tail short: a restarting producer reads it to find its checkpoint.
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def ensure_topics(
    kafka_config: dict[str, str], specs: list[TopicSpec], timeout: float = 10
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient(kafka_config)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, config=s.config) for s in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another instance created it first
            raise PipelineError(f"creating topic {name}: {exc.args[0].str()}") from exc


def read_to_end(
    kafka_config: dict[str, str],
    topic: str,
    *,
    isolation: str = "read_committed",
    timeout: float = 60.0,
) -> list[Message]:
    """Every message of `topic`, all partitions, from the beginning to the end at call time.

    For small topics read whole at start (checkpoints, routing versions). The end is where
    each partition reports EOF: with read_committed that is the last stable offset, so an
    open transaction would hold it back; callers that may race one must have it aborted first.
    """
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": "sensorstream-topic-reader",  # assign() only: never commits
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    try:
        deadline = time.monotonic() + timeout
        while True:  # a topic created a moment ago may not have its metadata (leader) yet
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is not None and metadata.error is None:
                break
            if time.monotonic() > deadline:
                raise PipelineError(f"topic {topic} is not available")
            time.sleep(0.2)
        pending = set()
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout, cached=False
            )
            if high > low:
                pending.add(partition)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise PipelineError(f"reading topic {topic} timed out")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise PipelineError(f"reading topic {topic}: {message.error()}")
            messages.append(message)
        return messages
    finally:
        consumer.close()
