"""A sink batch as the Delta writer's unit tests feed it: rows with the Kafka coordinates the
writer's exactly-once filter reads, in one day partition."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

TOPIC = "sensors.raw"


def batch(first_offset: int, rows: int = 3) -> pa.Table:
    """`rows` records of partition 0 of `TOPIC` from `first_offset` on."""
    offsets = list(range(first_offset, first_offset + rows))
    return pa.table(
        {
            "x": pa.array(offsets, pa.int64()),
            "_kafka_topic": pa.array([TOPIC] * rows, pa.string()),
            "_kafka_partition": pa.array([0] * rows, pa.int32()),
            "_kafka_offset": pa.array(offsets, pa.int64()),
            "event_date": pa.array([date(2026, 11, 23)] * rows, pa.date32()),
        }
    )
