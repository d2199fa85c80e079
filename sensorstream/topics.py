"""The topics every component agrees on (DESIGN section 2), and creating them when missing.

Components create the topics they write to, with the settings the contract needs (compaction
for checkpoint and control topics), rather than relying on broker auto-creation, which would
give them one partition and the broker's retention.
"""

from __future__ import annotations

import logging
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
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from sensorstream.errors import ConfigError, PipelineError

_log = logging.getLogger(__name__)

READINGS = "sensors.readings"
DEAD_LETTERS = "sensors.dlq"
PRODUCER_CHECKPOINTS = "sensors.producer.checkpoints"
ROUTING_CONTROL = "sensors.routing.control"
KAFKA_INTERNAL_PREFIX = "__"
"""Kafka's own topics (`__consumer_offsets`, `__transaction_state`) start with it."""

COMPACTED = {
    "cleanup.policy": "compact",
    # Keep the uncompacted tail short: a restarting producer reads it to find its checkpoint.
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


def internal_topics(control_topic: str = ROUTING_CONTROL) -> dict[str, str]:
    """The pipeline's own state topics, each with what it is: no route may write into them.

    A reading in the checkpoint topic would be read back as a producer's checkpoint, one in the
    control topic as a routing version. The default control topic stays on the list when a
    router follows another one (e.g. a replay router), so it cannot write into the shared one.
    """
    return {
        ROUTING_CONTROL: "the routing control topic",
        control_topic: "the routing control topic",
        PRODUCER_CHECKPOINTS: "the producers' checkpoint topic",
    }


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def ensure_topics(
    kafka_config: dict[str, str], specs: list[TopicSpec], timeout: float = 10
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are, but a
    topic whose spec is compacted must be compacted (see `require_compacted`)."""
    admin = AdminClient(kafka_config)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if missing:
        _create(admin, missing, timeout)
    compacted = [s.name for s in specs if s.config.get("cleanup.policy") == "compact"]
    if compacted:
        require_compacted(admin, compacted, timeout)


def _create(admin: AdminClient, missing: list[TopicSpec], timeout: float) -> None:
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


def require_compacted(admin: AdminClient, topics: list[str], timeout: float = 10) -> None:
    """Refuse to go on with an internal topic that retention may empty.

    A producer's checkpoint and a routing version are each written once and then read at
    every start, for as long as the node or the version lives. Under `delete` (or
    `compact,delete`) a quiet node's checkpoint would age out and the node would stream its
    whole database again; old routing versions, and the history with them, would vanish.
    Checked on every start, not only at creation: the topic may predate the product, or
    have been altered since.
    """
    for name in topics:
        policy = _cleanup_policy(admin, name, timeout)
        if policy != "compact":
            raise ConfigError(
                f"topic {name} has cleanup.policy={policy}, but it must be compacted "
                "(cleanup.policy=compact): it holds records written once and read at every "
                "start (producers' checkpoints, routing versions), which retention would "
                "delete, and a quiet node whose checkpoint is gone streams its whole database "
                "again. Remedy: kafka-configs.sh --bootstrap-server <broker> --alter "
                f"--entity-type topics --entity-name {name} --add-config cleanup.policy=compact"
            )


def _cleanup_policy(admin: AdminClient, topic: str, timeout: float) -> str:
    """The topic's cleanup.policy, waiting out a topic created a moment ago.

    A broker answers describe_configs for a topic it has just created with
    UNKNOWN_TOPIC_OR_PART until the topic's metadata has reached it; that is not an answer,
    so ask again until `timeout` has passed.
    """
    deadline = time.monotonic() + timeout
    resource = ConfigResource(ResourceType.TOPIC, topic)
    while True:
        future = admin.describe_configs([resource], request_timeout=timeout)[resource]
        try:
            return future.result(timeout)["cleanup.policy"].value
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise PipelineError(
                    f"reading the configuration of topic {topic}: {error.str()}"
                ) from exc
        time.sleep(0.2)


def read_to_end(
    kafka_config: dict[str, str],
    topic: str,
    *,
    isolation: str = "read_committed",
    timeout: float = 120.0,
    await_open_transactions: bool = True,
) -> list[Message]:
    """Every message of `topic`, all partitions, from the beginning to the end at call time.

    For small topics read whole at start (checkpoints, routing versions). With read_committed,
    a partition's readable end is its last stable offset, which stops at the first transaction
    still open, anyone's: on a topic several producers write transactionally (the checkpoint
    topic, shared by every node) another node's open or abandoned transaction would hide
    records committed after it, and a producer would resume from a stale checkpoint and send
    rows twice. So the end is the high watermark at call time, and the read waits until every
    transaction open at that moment has been committed or aborted (an abandoned one is aborted
    by the broker after its transaction timeout: hence the default `timeout`).
    `await_open_transactions=False` reads only what is committed now, up to the first open
    transaction (for a look at a topic whose writer may have died mid-transaction).
    """
    consumer = Consumer(_reader_config(kafka_config, isolation))
    try:
        deadline = time.monotonic() + timeout
        partitions = _partitions(consumer, topic, deadline)
        if await_open_transactions:
            ends = _high_watermarks(kafka_config, topic, partitions, deadline)
        else:
            ends = _watermarks(consumer, topic, partitions, deadline)
        pending = {p for p, (low, high) in ends.items() if high > low}
        if isolation == "read_committed" and await_open_transactions:
            _await_stable(consumer, topic, {p: ends[p][1] for p in pending}, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        messages: list[Message] = []
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


def _reader_config(kafka_config: dict[str, str], isolation: str) -> dict[str, object]:
    return {
        **kafka_config,
        "group.id": "sensorstream-topic-reader",  # assign() only: never commits
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
    }


def _partitions(consumer: Consumer, topic: str, deadline: float) -> list[int]:
    while True:  # a topic created a moment ago may not have its metadata (leader) yet
        remaining = max(deadline - time.monotonic(), 1.0)
        metadata = consumer.list_topics(topic, timeout=remaining).topics.get(topic)
        if metadata is not None and metadata.error is None:
            return sorted(metadata.partitions)
        if time.monotonic() > deadline:
            raise PipelineError(f"topic {topic} is not available")
        time.sleep(0.2)


def _high_watermarks(
    kafka_config: dict[str, str], topic: str, partitions: list[int], deadline: float
) -> dict[int, tuple[int, int]]:
    """(low, high) per partition, high counting records of transactions still open."""
    probe = Consumer(_reader_config(kafka_config, "read_uncommitted"))
    try:
        return _watermarks(probe, topic, partitions, deadline)
    finally:
        probe.close()


def _watermarks(
    consumer: Consumer, topic: str, partitions: list[int], deadline: float
) -> dict[int, tuple[int, int]]:
    """(low, high) per partition as `consumer`'s isolation level sees them."""
    remaining = max(deadline - time.monotonic(), 1.0)
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=remaining, cached=False)
        for p in partitions
    }


def _await_stable(
    consumer: Consumer, topic: str, high_watermarks: dict[int, int], deadline: float
) -> None:
    """Wait until each partition's last stable offset reaches its high watermark at call time."""
    waiting = dict(high_watermarks)
    told = False
    while waiting:
        for partition, high in list(waiting.items()):
            remaining = max(deadline - time.monotonic(), 1.0)
            _, stable = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=remaining, cached=False
            )
            if stable >= high:
                del waiting[partition]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise PipelineError(
                f"reading topic {topic}: transactions open on partitions {sorted(waiting)} "
                "did not finish in time (a producer that died mid-transaction is aborted by "
                "the broker after its transaction timeout)"
            )
        if not told:
            _log.info(
                "topic %s: waiting for the transactions open on partitions %s to finish",
                topic,
                sorted(waiting),
            )
            told = True
        time.sleep(0.2)
