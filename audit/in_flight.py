"""Rows still on their way to the lake: sent by a producer, not yet landed, and not lost.

On a running fleet a row the producer's checkpoint covers can be absent from the lake for two
very different reasons:

- in flight: a stage has not passed it on yet. Its record is in the router's input topic at or
  past the router group's committed offset, or in a routed topic (or the dead-letter topic) at
  or past the sink group's committed offset. Each stage resumes from exactly there, so the row
  lands: it is late, not lost;
- missing: every stage has committed past it and it is in no table. That breaks exactly-once.

Read after the checkpoints and before the lake's tables are opened: a row past a group's
committed offset when this is read is either still past it or, since a sink commits its Delta
version before its offsets, in the tables opened afterwards. So a row the audit calls missing
was missing, never merely late.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from audit.lake import DEAD_LETTERS, NODE, ROWID, TABLE

READ_TIMEOUT_S = 180.0  # a busy machine may need long to read what a lagging stage owes

RowKey = tuple[str, str, int]
"""(node id, source table, source rowid): one source row."""


@dataclass(frozen=True)
class Stage:
    """A consumer group and a topic it reads (a name, or a pattern starting with ^).

    `lands` says into which table the group writes the topic's records: None for the router,
    whose input is on its way to every table; a callable (topic -> table name) for the sink.
    """

    topic: str
    group: str
    lands: Callable[[str], str] | None = None
    dead_letters: bool = False  # the topic holds dead letters: source rows named by headers


@dataclass
class InFlight:
    """Rows the stages still hold, per table they are on their way to (None: every table)."""

    rows: dict[str | None, set[RowKey]] = field(default_factory=lambda: defaultdict(set))
    records: int = 0  # records read past the committed offsets

    def holds(self, key: RowKey, tables: Iterable[str]) -> bool:
        """Is this source row still on its way to one of `tables`?"""
        return key in self.rows.get(None, ()) or any(key in self.rows.get(t, ()) for t in tables)

    def rowids(self, node_id: str, source_table: str, tables: Iterable[str]) -> set[int]:
        """The rowids of one node's source table on their way to any of `tables`."""
        found: set[int] = set()
        for table in (None, *tables):
            found |= {
                r for n, t, r in self.rows.get(table, ()) if n == node_id and t == source_table
            }
        return found


def record_decoder(registry_config: dict[str, str]) -> Callable[[bytes | None], dict | None]:
    """A message value -> the record it holds, None for what is not a record (schemas are
    fetched from the registry once each)."""
    from schemas.avro_codec import AvroDecoder, UndecodableMessage
    from schemas.registry import SchemaRegistry

    decoder = AvroDecoder(SchemaRegistry(registry_config))

    def decode(value: bytes | None) -> dict[str, Any] | None:
        try:
            return decoder.decode(value)[1]
        except UndecodableMessage:
            return None  # not a reading: no source row of ours

    return decode


def _key_of_record(record: dict[str, Any]) -> RowKey | None:
    node, table, rowid = record.get(NODE), record.get(TABLE), record.get(ROWID)
    if isinstance(node, str) and isinstance(table, str) and isinstance(rowid, int):
        return node, table, rowid
    return None


def _key_of_letter(headers: dict[str, bytes], value: bytes | None, decode) -> RowKey | None:
    """A dead letter's source row: the producer names it in headers, the router's letter
    keeps the record itself."""
    node, table, rowid = (headers.get(f"dlq.source.{k}") for k in ("node_id", "table", "rowid"))
    if node and table and rowid:
        try:
            return node.decode(), table.decode(), int(rowid)
        except ValueError:
            return None
    record = decode(value)
    return None if record is None else _key_of_record(record)


def read_in_flight(
    kafka_config: dict[str, str],
    registry_config: dict[str, str],
    stages: list[Stage],
    timeout: float = READ_TIMEOUT_S,
) -> InFlight:
    """Every source row whose record some stage has not committed past (read_committed)."""
    decode = record_decoder(registry_config)
    deadline = time.monotonic() + timeout
    found = InFlight()
    for stage in stages:
        for topic, message in _not_committed(kafka_config, stage, deadline):
            found.records += 1
            if stage.dead_letters:
                headers = {k: v for k, v in (message.headers() or []) if v is not None}
                key = _key_of_letter(headers, message.value(), decode)
                table = DEAD_LETTERS
            else:
                record = decode(message.value())
                key = None if record is None else _key_of_record(record)
                table = None if stage.lands is None else stage.lands(topic)
            if key is not None:
                found.rows[table].add(key)
    return found


def _topics(consumer: Any, pattern: str) -> list[str]:
    names = consumer.list_topics(timeout=30).topics
    if pattern.startswith("^"):
        return sorted(n for n in names if re.match(pattern, n))
    return [pattern] if pattern in names else []


def _not_committed(kafka_config: dict[str, str], stage: Stage, deadline: float):
    """(topic, message) for each committed record of the stage's topics at or past the
    group's committed offset (a partition without a commit: from its start)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from sensorstream.errors import PipelineError

    offsets = Consumer({**kafka_config, "group.id": stage.group, "enable.auto.commit": False})
    reader = Consumer(
        {
            **kafka_config,
            "group.id": "sensorstream-audit",  # assign() only, never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )

    def retried(call: Callable[[], Any], what: str) -> Any:
        """A broker call, again while the broker says to retry (a coordinator moving, a
        leader election) until the deadline."""
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = getattr(error, "retriable", lambda: False)()
                if not retriable or time.monotonic() > deadline:
                    raise PipelineError(f"audit: {what} failed: {exc}") from None
                time.sleep(1.0)

    try:
        assignment = []
        for topic in _topics(reader, stage.topic):
            partitions = reader.list_topics(topic, timeout=30).topics[topic].partitions
            wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
            committed = retried(
                lambda w=wanted: offsets.committed(w, timeout=30),
                f"reading the committed offsets of group {stage.group} on {topic}",
            )
            for tp in committed:
                low, high = retried(
                    lambda tp=tp: reader.get_watermark_offsets(tp, timeout=30, cached=False),
                    f"reading the offsets of {topic}[{tp.partition}]",
                )
                begin = max(tp.offset, low)  # no commit yet (negative): from the start
                if begin < high:
                    assignment.append(TopicPartition(topic, tp.partition, begin))
        pending = {(tp.topic, tp.partition) for tp in assignment}
        if not pending:
            return
        reader.assign(assignment)
        while pending:
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"audit: reading what group {stage.group} has not committed of "
                    f"{stage.topic} took over {READ_TIMEOUT_S:.0f} s; check the broker"
                )
            message: Any = reader.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                continue
            yield message.topic(), message
    finally:
        offsets.close()
        reader.close()


def table_named(topic: str, topic_prefix: str) -> str:
    """The table a sink lands a routed topic in, under the lake (`sensors.regional.eu-west-1`
    -> `regional/eu-west-1`): the sink's naming rule for tables at their default place."""
    name = topic.removeprefix(topic_prefix)
    route, _, region = name.partition(".")
    return f"{route}/{region}" if route == "regional" and region else name


def pipeline_stages(
    *,
    input_topic: str,
    router_group: str,
    sink_topics: list[str],
    sink_group: str,
    dead_letter_topic: str,
    table_of: Callable[[str], str],
) -> list[Stage]:
    """Where a fleet's rows wait: the router's input, then each topic the sinks land."""
    stages = [Stage(input_topic, router_group)]
    for topic in sink_topics:
        letters = topic == dead_letter_topic
        stages.append(Stage(topic, sink_group, None if letters else table_of, letters))
    return stages
