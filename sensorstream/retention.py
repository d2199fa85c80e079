"""Records Kafka deleted (topic retention) before a consumer of ours read them.

A router or sink that stays down longer than its input topic's retention resumes below the
partition's log start. Those records are gone and nothing can bring them back, but they must
not vanish without a word, as they did when the consumer's `auto.offset.reset` quietly moved
on to the oldest record still there. Each stage compares where it resumes with the log start
and reports a gap as an error, a count in `sensorstream_dead_letters_total` (reason
`expired`, one per offset: on a transactional topic a few of them held markers, not records)
and a dead letter naming the offsets.

This module is the whole of that concept that the router and the sink share: what a gap is,
how it is found against Kafka, and how its dead letter names it. Each stage only sends what it
is given here the way it sends its other dead letters: the router to the dead-letter topic
(`stream_apps.expired`), the sink as a row of its dead-letter table (`sinks.records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

QUERY_TIMEOUT_S = 30.0
HEADER_FIRST = "dlq.expired.first_offset"
HEADER_LAST = "dlq.expired.last_offset"


@dataclass(frozen=True)
class ExpiredRecords:
    """Offsets [first, log_start) of one topic-partition: past retention, never read."""

    topic: str
    partition: int
    first: int
    log_start: int

    @property
    def count(self) -> int:
        return self.log_start - self.first

    @property
    def last(self) -> int:
        return self.log_start - 1

    def reason(self, reader: str) -> str:
        """What happened, for the log and the dead letter; `reader` is the stage that missed
        them ("sink", "router")."""
        return (
            f"offsets {self.first} to {self.last} of {self.topic}/{self.partition} "
            f"({self.count} records, or fewer where transaction markers took offsets) were "
            f"deleted by the topic's retention before the {reader} read them"
        )

    def source(self) -> dict[str, str]:
        """Where the records were, as a dead letter's source: the gap's last offset stands
        for the message (a dead letter names one), the first and last offsets the range."""
        return {
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.last),
            "first_offset": str(self.first),
            "last_offset": str(self.last),
        }

    def headers(self) -> list[tuple[str, bytes]]:
        """The range as headers, for a dead letter whose source names one offset only."""
        return [(HEADER_FIRST, str(self.first).encode()), (HEADER_LAST, str(self.last).encode())]


def expired_records(
    topic: str, partition: int, resume: int, log_start: int
) -> ExpiredRecords | None:
    """The gap between where a consumer resumes (a real offset: committed, or after what its
    table holds) and the partition's log start, if there is one. A negative `resume` (no
    position yet: a new group) has nothing to miss."""
    if resume < 0 or log_start <= resume:
        return None
    return ExpiredRecords(topic, partition, resume, log_start)


def log_start(consumer: Consumer, topic: str, partition: int) -> int:
    """The partition's oldest offset still in Kafka, asked of the broker (never cached: a
    cached one may predate the deletion)."""
    start, _ = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=QUERY_TIMEOUT_S, cached=False
    )
    return start


def expired_since_commit(
    kafka_config: dict[str, Any], group: str, topic: str
) -> list[ExpiredRecords]:
    """The gaps between `group`'s committed offsets on `topic` and its partitions' log
    starts. The consumer only reads offsets: it never joins the group."""
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.list_topics(topic, timeout=QUERY_TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None:
            return []
        partitions = [TopicPartition(topic, p) for p in sorted(found.partitions)]
        gaps = []
        for tp in consumer.committed(partitions, timeout=QUERY_TIMEOUT_S):
            if tp.offset < 0:
                continue  # nothing committed: a new group has nothing to miss
            start = log_start(consumer, topic, tp.partition)
            gap = expired_records(topic, tp.partition, tp.offset, start)
            if gap is not None:
                gaps.append(gap)
        return gaps
    finally:
        consumer.close()
