"""Records Kafka deleted (topic retention) before a consumer of ours read them.

A router or sink that stays down longer than its input topic's retention resumes below the
partition's log start. Those records are gone and nothing can bring them back, but they must
not vanish without a word, as they did when the consumer's `auto.offset.reset` quietly moved
on to the oldest record still there. Each stage compares where it resumes with the log start
and reports a gap as an error, a count in `sensorstream_dead_letters_total` (reason
`expired`, one per offset: on a transactional topic a few of them held markers, not records)
and a dead letter naming the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def expired_records(
    topic: str, partition: int, resume: int, log_start: int
) -> ExpiredRecords | None:
    """The gap between where a consumer resumes (a real offset: committed, or after what its
    table holds) and the partition's log start, if there is one. A negative `resume` (no
    position yet: a new group) has nothing to miss."""
    if resume < 0 or log_start <= resume:
        return None
    return ExpiredRecords(topic, partition, resume, log_start)
