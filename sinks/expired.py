"""Records Kafka deleted (topic retention) before the sink read them.

A sink that stays down longer than a topic's retention resumes below the partition's log
start. Those records are gone and nothing can bring them back, but they must not vanish
without a word, as they did when the consumer's `auto.offset.reset` quietly moved on to the
oldest record still there. On assignment the sink compares where it would resume with the
log start; a gap becomes an error in the log, a count in `sensorstream_dead_letters_total`
(reason `expired`) and one row in the dead-letter table naming the offsets, so that whoever
queries the lake sees the hole.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.batch import SinkMessage
from sinks.records import DeadRow

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

    @property
    def reason(self) -> str:
        return (
            f"{self.count} records of {self.topic}/{self.partition} (offsets {self.first} to "
            f"{self.last}) were deleted by the topic's retention before the sink read them; "
            "they are not in the table"
        )

    def dead_row(self, now_ms: int) -> DeadRow:
        """The dead-letter row for the gap: at its last offset, which is also the txn version
        it is written with, so that writing it again is a no-op."""
        headers = [(HEADER_FIRST, str(self.first).encode()), (HEADER_LAST, str(self.last).encode())]
        message = SinkMessage(
            topic=self.topic,
            partition=self.partition,
            offset=self.last,
            timestamp_ms=now_ms,
            key=None,
            value=None,
            headers=headers,
        )
        return DeadRow(message, self.reason)


def expired_records(
    topic: str, partition: int, resume: int, log_start: int
) -> ExpiredRecords | None:
    """The gap between where the sink resumes (a real offset: committed, or after the table's
    txn version) and the partition's log start, if there is one. A negative `resume` (no
    position yet: a new group on a new table) has nothing to miss."""
    if resume < 0 or log_start <= resume:
        return None
    return ExpiredRecords(topic, partition, resume, log_start)
