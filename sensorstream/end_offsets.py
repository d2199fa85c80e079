"""`--once`: read every partition a consumer owns up to where it ended when it was assigned.

DESIGN section 3: `--once` processes everything that was available when the command started,
then exits 0, and never exits 0 having skipped available records. Waiting for an idle moment
does not mean that: joining a new consumer group on a real broker waits out
`group.initial.rebalance.delay.ms` (3 s by default), so an idle timeout had expired before the
first record arrived and the run exited having done nothing; and on a topic that never goes
quiet the run never ended. So each partition's end is taken when it is assigned (for a
read_committed consumer, its last stable offset), and the run is done when the consumer's
position has reached it on every partition it owns. The position moves past transaction
markers and aborted records too, so a transactional topic's end is reached.

Used by the router (through quixstreams' consumer) and the sink (a confluent-kafka consumer):
both have the same `committed`, `get_watermark_offsets` and `position` calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

QUERY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PartitionEnd:
    start: int
    """Where reading starts: the position until the first record arrives."""
    end: int
    """The partition's end when it was assigned: reading is done at this offset."""


def key(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


class EndOffsets:
    """The partitions a `--once` run owns, and how far each still has to be read."""

    def __init__(self) -> None:
        self._owned: dict[tuple[str, int], PartitionEnd] = {}
        self._reached: set[tuple[str, int]] = set()
        self.ever_owned = False
        """Some partition was assigned at some point (a run that never got one did nothing)."""

    def assigned(self, consumer: Any, partitions: Iterable[TopicPartition]) -> None:
        """Take the end of each newly assigned partition, and where reading it starts: the
        offset assigned, else the committed one, else the log start (the commands reset to
        the earliest offset)."""
        new = [tp for tp in partitions if key(tp) not in self._owned]
        if not new:
            return
        unknown = [
            TopicPartition(tp.topic, tp.partition)
            for tp in new
            if tp.offset < 0 and tp.offset != OFFSET_BEGINNING
        ]
        committed = (
            {key(tp): tp.offset for tp in consumer.committed(unknown, timeout=QUERY_TIMEOUT_S)}
            if unknown
            else {}
        )
        for tp in new:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=QUERY_TIMEOUT_S, cached=False
            )
            start = tp.offset if tp.offset >= 0 else committed.get(key(tp), -1)
            self._owned[key(tp)] = PartitionEnd(start if start >= 0 else low, high)
            self.ever_owned = True

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions now someone else's: what is left of them is theirs to read."""
        for tp in partitions:
            self._owned.pop(key(tp), None)
            self._reached.discard(key(tp))

    def owned(self) -> set[tuple[str, int]]:
        return set(self._owned)

    def remaining(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Offsets still to read per owned partition (only those not at their end yet)."""
        pending = [TopicPartition(t, p) for (t, p) in self._owned if (t, p) not in self._reached]
        if not pending:
            return {}
        left: dict[tuple[str, int], int] = {}
        for tp in consumer.position(pending):
            mark = self._owned[key(tp)]
            at = tp.offset if tp.offset >= 0 else mark.start
            if at >= mark.end:
                self._reached.add(key(tp))
            else:
                left[key(tp)] = mark.end - at
        return left

    def reached(self, consumer: Any) -> bool:
        """Every partition owned has been read to its end (and some partition was owned)."""
        return self.ever_owned and not self.remaining(consumer)
