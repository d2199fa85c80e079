"""When a table's batch comes due (issue 6): a route's max latency counts from the record's
Kafka timestamp, so the producer's and router's time is made up for, but never more than half
of it, so a sink that is behind still writes whole batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from sinks.batch import TableBatch, upstream_seconds
from sinks.settings import TableSettings
from sinks.tables import TableTarget


@dataclass
class Message:
    """The parts of a confluent-kafka message a batch reads."""

    ts_ms: int
    offset_: int = 0

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes:
        return b"x" * 100

    def key(self) -> bytes:
        return b"sensor"

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts_ms)

    def headers(self) -> None:
        return None


def batch(max_latency_s: float, **policy: int) -> TableBatch:
    settings = TableSettings(max_latency_s=max_latency_s, **policy)
    return TableBatch(TableTarget("raw", None, "/tmp/raw", settings))


def test_time_spent_upstream_counts_from_the_oldest_kafka_timestamp() -> None:
    now = 1_700_000_000.0
    stamps = [int((now - 0.7) * 1000), int((now - 1.5) * 1000), int((now - 0.2) * 1000)]
    assert upstream_seconds(stamps, 30.0, now) == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [
        (3600.0, 15.0),  # a backlog: capped at half the latency, batches stay whole
        (-5.0, 0.0),  # a producer clock ahead of the sink's: nothing taken off
    ],
)
def test_time_upstream_is_capped(age_s: float, expected: float) -> None:
    now = 1_700_000_000.0
    assert upstream_seconds([int((now - age_s) * 1000)], 30.0, now) == expected


def test_records_without_a_timestamp_count_as_just_arrived() -> None:
    assert upstream_seconds([-1, 0], 30.0, 1_700_000_000.0) == 0.0


def test_a_batch_is_due_when_its_oldest_record_has_waited_the_route_latency() -> None:
    b = batch(max_latency_s=10.0)
    b.add("sensors.raw", [Message(int((time.time() - 2.0) * 1000))])
    start = time.monotonic()
    assert not b.due(start)
    assert not b.due(start + 7.5)
    assert b.due(start + 8.1)


def test_later_records_do_not_move_the_deadline() -> None:
    b = batch(max_latency_s=10.0)
    b.add("sensors.raw", [Message(int(time.time() * 1000), 0)])
    first_deadline = b.deadline
    b.add("sensors.raw", [Message(int((time.time() - 4) * 1000), 1)])
    assert b.deadline == first_deadline


def test_full_batches_are_due_at_once_and_a_taken_batch_starts_a_new_deadline() -> None:
    b = batch(max_latency_s=30.0, max_rows=2)
    b.add("sensors.raw", [Message(int(time.time() * 1000), 0)])
    assert not b.full()
    b.add("sensors.raw", [Message(int(time.time() * 1000), 1)])
    assert b.full() and b.due(time.monotonic())
    first_deadline = b.deadline
    b.take()
    assert not b.due(time.monotonic() + 3600)  # empty: nothing is due
    time.sleep(0.01)
    b.add("sensors.raw", [Message(int(time.time() * 1000), 2)])
    assert b.deadline > first_deadline
