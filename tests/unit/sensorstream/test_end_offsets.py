"""`--once` bookkeeping: each partition's end taken at assignment, where reading starts before
the first record, and when a run may stop (a fake consumer: pure logic)."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, TopicPartition

from sensorstream.end_offsets import EndOffsets

T = "sensors.raw"


class FakeConsumer:
    def __init__(self, watermarks: dict[int, tuple[int, int]], committed: dict[int, int]):
        self.watermarks = watermarks
        self.committed_offsets = committed
        self.positions: dict[int, int] = {}

    def committed(self, partitions, timeout=None):
        return [
            TopicPartition(T, tp.partition, self.committed_offsets.get(tp.partition, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return self.watermarks[tp.partition]

    def position(self, partitions):
        return [
            TopicPartition(T, tp.partition, self.positions.get(tp.partition, OFFSET_INVALID))
            for tp in partitions
        ]


def test_not_done_before_any_partition_was_assigned():
    consumer = FakeConsumer({}, {})
    assert not EndOffsets().reached(consumer)


def test_done_when_each_position_reaches_its_end_at_assignment():
    consumer = FakeConsumer({0: (0, 100), 1: (10, 50), 2: (0, 0)}, {1: 20})
    ends = EndOffsets()
    ends.assigned(
        consumer,
        [TopicPartition(T, 0, 40), TopicPartition(T, 1), TopicPartition(T, 2, OFFSET_BEGINNING)],
    )
    # nothing read yet: 0 starts at 40 (assigned), 1 at 20 (committed), 2 is empty
    assert ends.remaining(consumer) == {(T, 0): 60, (T, 1): 30}
    consumer.positions = {0: 100, 1: 49}
    assert ends.remaining(consumer) == {(T, 1): 1}
    consumer.watermarks[1] = (10, 80)  # records arriving meanwhile are not waited for
    consumer.positions[1] = 50
    assert ends.reached(consumer)


def test_a_partition_starting_at_its_end_is_done_without_a_record():
    consumer = FakeConsumer({0: (0, 30)}, {0: 30})
    ends = EndOffsets()
    ends.assigned(consumer, [TopicPartition(T, 0)])
    assert ends.reached(consumer)


def test_no_committed_offset_starts_at_the_log_start():
    consumer = FakeConsumer({0: (25, 30)}, {})
    ends = EndOffsets()
    ends.assigned(consumer, [TopicPartition(T, 0)])
    assert ends.remaining(consumer) == {(T, 0): 5}


def test_revoked_partitions_are_not_waited_for_and_reassigned_ones_get_a_new_end():
    consumer = FakeConsumer({0: (0, 100), 1: (0, 100)}, {})
    ends = EndOffsets()
    ends.assigned(consumer, [TopicPartition(T, 0), TopicPartition(T, 1)])
    consumer.positions = {0: 100}
    ends.revoked([TopicPartition(T, 1)])
    assert ends.reached(consumer)
    consumer.watermarks[1] = (0, 150)
    ends.assigned(consumer, [TopicPartition(T, 1, 120)])
    assert ends.remaining(consumer) == {(T, 1): 30}
