"""Which of this run's rows the stopped pipeline still holds on their way to the raw table.

A row written to SQLite that is not in the raw table is one of two very different things:

- in flight: some stage has not passed it on yet. It is still only in SQLite, after its
  producer's checkpoint; or in `sensors.readings` at or after the router's committed offset; or
  in `sensors.raw` at or after the sink's committed offset. It lands when the pipeline runs
  again (each stage resumes from exactly there), so it is late, not lost;
- missing: every stage has committed past it and it is nowhere. That breaks exactly-once.

Read after the demo stopped its processes, from the same places the stages resume from (the
checkpoint topic, the groups' committed offsets), so the answer is exact, row by row.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.local_stack.pipeline import CHECKPOINTS, READINGS, ROUTER_GROUP, SINK_GROUP, EdgeNode
from infra.local_stack.sqlite_probe import SOURCE_TABLE

RAW = "sensors.raw"
READ_TIMEOUT_S = 180.0  # a busy machine may need long to read a few thousand records


@dataclass(frozen=True)
class InFlight:
    """Where the pipeline still holds rows, per node: past its checkpoint, or in a topic."""

    checkpoints: dict[str, int] = field(default_factory=dict)  # node id -> last rowid in Kafka
    in_kafka: dict[str, set[int]] = field(default_factory=dict)  # node id -> rowids not passed on

    def holds(self, node_id: str, rowid: int) -> bool:
        """Does the pipeline still hold this row on its way to the raw table?"""
        return rowid > self.checkpoints.get(node_id, 0) or rowid in self.in_kafka.get(node_id, ())


def read_in_flight(
    kafka_config: dict[str, str],
    registry_config: dict[str, str],
    nodes: list[EdgeNode],
    started: Mapping[tuple[str, int], int],
) -> InFlight:
    """What the stopped pipeline holds of this run's rows; `started` is where each partition
    ended when the run began (records before it are not this run's)."""
    from schemas.avro_codec import AvroDecoder, UndecodableMessage
    from schemas.registry import SchemaRegistry
    from sensorstream.topics import read_to_end

    deadline = time.monotonic() + READ_TIMEOUT_S
    keys = {f"{n.node_id}/{SOURCE_TABLE}".encode(): n.node_id for n in nodes}
    checkpoints: dict[str, int] = {}
    for message in read_to_end(kafka_config, CHECKPOINTS, timeout=READ_TIMEOUT_S):
        node_id = keys.get(message.key() or b"")
        if node_id is not None and message.value():
            with contextlib.suppress(ValueError, KeyError):
                checkpoints[node_id] = int(json.loads(message.value())["rowid"])

    decoder = AvroDecoder(SchemaRegistry(registry_config))
    in_kafka: dict[str, set[int]] = {n.node_id: set() for n in nodes}
    for topic, group in ((READINGS, ROUTER_GROUP), (RAW, SINK_GROUP)):
        for value in _not_committed(kafka_config, topic, group, started, deadline):
            try:
                _, record = decoder.decode(value)
            except UndecodableMessage:
                continue  # not a reading: the router dead-letters it, it is no row of ours
            rowids = in_kafka.get(record.get("_node_id") or "")
            if rowids is not None and isinstance(record.get("_source_rowid"), int):
                rowids.add(record["_source_rowid"])
    return InFlight(checkpoints, in_kafka)


def _not_committed(
    kafka_config: dict[str, str],
    topic: str,
    group: str,
    started: Mapping[tuple[str, int], int],
    deadline: float,
) -> list[bytes]:
    """The values of `topic`'s committed records that `group` has not committed past, this
    run's only."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from sensorstream.errors import PipelineError

    offsets = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    reader = Consumer(
        {
            **kafka_config,
            "group.id": "sensorstream-pipeline-probe",  # assign() only, never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = reader.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []  # never created: nothing reached it
        wanted = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        assignment = []
        for tp in offsets.committed(wanted, timeout=30):
            low, high = reader.get_watermark_offsets(tp, timeout=30, cached=False)
            # No commit yet (a negative offset): the group would start at this run's start.
            begin = max(tp.offset, started.get((topic, tp.partition), low), low)
            if begin < high:
                assignment.append(TopicPartition(topic, tp.partition, begin))
        pending = {tp.partition for tp in assignment}
        reader.assign(assignment)
        values: list[bytes] = []
        while pending:
            if time.monotonic() > deadline:
                raise PipelineError(f"reading what {group} has not committed of {topic} timed out")
            message: Any = reader.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue
            values.append(message.value())
        return values
    finally:
        offsets.close()
        reader.close()
