"""How far each stage of a running pipeline has got, read from Kafka as an operator would.

Reading, not watermarks: every topic here is written transactionally, and each commit leaves a
control record that takes an offset but is never delivered, so end offsets overcount and a
caught-up group still sits short of the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from typing import Any

from infra.local_stack.pipeline import (
    CHECKPOINTS,
    DEAD_LETTERS,
    READINGS,
    ROUTE_TOPICS,
    ROUTER_GROUP,
    SINK_GROUP,
    EdgeNode,
    regional_topic,
)
from infra.local_stack.sqlite_probe import SOURCE_TABLE


class KafkaProbe:
    """Counts this run's records in the pipeline's topics, and how far each group is behind.

    One read_committed consumer follows every topic from where it ended when the run started
    and remembers the last real record per partition; a group has caught up when its
    committed offset is past that record. The producers' checkpoints, read from the same
    consumer, say exactly which rowid each node has in Kafka.
    """

    def __init__(self, kafka_config: dict[str, str], nodes: list[EdgeNode]) -> None:
        from confluent_kafka import Consumer

        self._nodes = {f"{n.node_id}/{SOURCE_TABLE}": n.node_id for n in nodes}
        regional = [regional_topic(r) for r in sorted({n.region for n in nodes})]
        self.regional_topics = tuple(regional)
        self.topics = [READINGS, *ROUTE_TOPICS, *regional, DEAD_LETTERS, CHECKPOINTS]
        # The probe looks on from outside: a broker away for a moment (a restart) is the
        # stages' business to report, not the probe's, so its clients log nowhere.
        quiet = logging.getLogger("sensorstream.pipeline-probe")
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
            quiet.propagate = False
        kafka_config = {**kafka_config, "logger": quiet}
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": "sensorstream-pipeline-probe",  # assign() only, never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        # Consumers in the router's and sink's groups, used only to read committed offsets;
        # they never subscribe, so they never join the groups.
        self._groups = {
            group: Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
            for group in (ROUTER_GROUP, SINK_GROUP)
        }
        self.counts: Counter[str] = Counter()
        self.last: dict[tuple[str, int], int] = {}
        self.checkpoints: dict[str, int] = {}  # node id -> last rowid in Kafka
        self.started: dict[tuple[str, int], int] = {}  # (topic, partition) -> end at start
        self._missing: set[str] = set()
        self._next_discovery = 0.0
        self._lags: dict[str, dict[str, int]] = {}

    def start(self) -> None:
        """Start every topic at its current end: what comes after is this run's."""
        from confluent_kafka import TopicPartition

        topics = self._consumer.list_topics(timeout=15).topics
        assignment = []
        for name in self.topics:
            if name not in topics:
                self._missing.add(name)
                continue
            for partition in topics[name].partitions:
                high = self._end_offset(TopicPartition(name, partition))
                self.started[(name, partition)] = high
                assignment.append(TopicPartition(name, partition, high))
        self._consumer.assign(assignment)

    def _end_offset(self, tp: Any, patience_s: float = 30.0) -> int:
        """A partition's end offset, waiting out a topic created a moment ago: on a broker
        that has just started, its partitions may not have a leader yet (retriable)."""
        from confluent_kafka import KafkaError, KafkaException

        settling = {  # not always flagged retriable by the client, but they pass in seconds
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
        }
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return self._consumer.get_watermark_offsets(tp, timeout=15, cached=False)[1]
            except KafkaException as exc:
                error = exc.args[0]
                transient = error.retriable() or error.code() in settling
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _discover(self) -> None:
        """Follow topics created during the run (a region's topic on its first record)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        self._next_discovery = time.monotonic() + 2.0
        try:
            topics = self._consumer.list_topics(timeout=10).topics
        except KafkaException:  # the broker is away (restarting): look again next time
            return
        found = [name for name in self._missing if name in topics]
        if found:
            self._consumer.incremental_assign(
                [
                    TopicPartition(name, p, OFFSET_BEGINNING)
                    for name in found
                    for p in topics[name].partitions
                ]
            )
            self._missing -= set(found)

    def drain(self, until: float) -> None:
        """Read whatever arrives until the monotonic time `until`."""
        while (remaining := until - time.monotonic()) > 0:
            if self._missing and time.monotonic() >= self._next_discovery:
                self._discover()
            for message in self._consumer.consume(10_000, timeout=min(remaining, 0.25)):
                if message.error():
                    continue
                topic = message.topic()
                self.counts[topic] += 1
                self.last[(topic, message.partition())] = message.offset()
                if topic == CHECKPOINTS and message.value():
                    self._on_checkpoint(message.key(), message.value())

    def _on_checkpoint(self, key: bytes | None, value: bytes) -> None:
        node_id = self._nodes.get((key or b"").decode(errors="replace"))
        if node_id is None:
            return
        with contextlib.suppress(ValueError, KeyError):
            self.checkpoints[node_id] = int(json.loads(value)["rowid"])

    def lag(self, group: str, topics: tuple[str, ...]) -> dict[str, int]:
        """Records per topic this run that `group` has not committed yet."""
        from confluent_kafka import KafkaException, TopicPartition

        wanted = [TopicPartition(t, p) for (t, p) in self.last if t in topics]
        lag = dict.fromkeys(topics, 0)
        if not wanted:
            return lag
        try:
            committed = self._groups[group].committed(wanted, timeout=10)
        except KafkaException:
            return self._lags.get(group, lag)  # the coordinator is busy: keep the last answer
        for tp in committed:
            done = max(tp.offset, 0)  # no commit yet: the group starts from the beginning
            lag[tp.topic] += max(0, self.last[(tp.topic, tp.partition)] + 1 - done)
        self._lags[group] = lag
        return lag

    def close(self) -> None:
        for consumer in (self._consumer, *self._groups.values()):
            with contextlib.suppress(Exception):
                consumer.close()
