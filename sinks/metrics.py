"""What the sink reports to Prometheus (families in `sensorstream.metrics`).

A table batch is reported when its Delta commit has landed (`batch_landed`: records in, rows
out, batch time, and the end-to-end latency of every row, bucketed with Arrow compute over the
event-time column rather than row by row); the consumer-offset commit that follows is timed on
its own (`offsets_committed`). Both may be called from the flush thread and the loop's thread.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sensorstream.kafka_stats import STATS_INTERVAL_MS, ConsumerLag
from sensorstream.metrics import DEAD_LETTER_REASONS, DeadLetterReason, MetricFamilies
from sinks.records import EVENT_TIME, DeadRow

STAGE = "sink"
_MICROS = 1_000_000


def dead_row_reason(row: DeadRow) -> DeadLetterReason:
    """`schema` for a record whose schema does not fit its table (see `readings_table`),
    `decode` for everything else the sink cannot read (not Avro, unknown schema id, a body
    that does not match its schema, no event time)."""
    return "schema" if "does not fit table" in row.reason else "decode"


def latency_buckets(
    event_times: pa.Array | pa.ChunkedArray, bounds: Sequence[float], now_s: float
) -> tuple[list[int], float] | None:
    """Cumulative counts of `now_s - event time` per bound (the last bound +Inf) and their sum
    in seconds, for a timestamp column; None when it has no non-null value."""
    unit = pa.timestamp("us", getattr(event_times.type, "tz", None))
    micros = pc.drop_null(pc.cast(pc.cast(event_times, unit), pa.int64()))
    n = len(micros)
    if n == 0:
        return None
    latency_us = pc.subtract(pa.scalar(int(now_s * _MICROS), pa.int64()), micros)
    counts = [
        pc.sum(pc.less_equal(latency_us, pa.scalar(int(b * _MICROS), pa.int64()))).as_py() or 0
        for b in bounds[:-1]
    ]
    counts.append(n)
    total = pc.sum(pc.cast(latency_us, pa.float64())).as_py() / _MICROS
    return counts, total


class SinkMetrics:
    def __init__(self, families: MetricFamilies | None = None) -> None:
        self.families = families = families or MetricFamilies()
        self.lag = ConsumerLag(families.consumer_lag, STAGE)
        self._in = families.records_in.labels(STAGE)
        self._dead = {r: families.dead_letters.labels(STAGE, r) for r in DEAD_LETTER_REASONS}
        self._batch = families.batch_duration.labels(STAGE)
        self._commit = families.commit_duration.labels(STAGE)
        self._last_commit = families.last_commit.labels(STAGE)
        # Registered now, so the first scrape lists every sink family (per-route children come
        # with the tables' first batches).
        families.sink_buffered.set(0)
        families.sink_buffered_bytes.set(0)
        _ = (
            families.records_out,
            families.end_to_end_latency,
            families.sink_checkpoint_failures,
            families.sink_checkpoint_duration,
        )

    def consumer_config(self, interval_ms: int = STATS_INTERVAL_MS) -> dict[str, Any]:
        """Add to the sink consumer's configuration to get the consumer lag."""
        return self.lag.consumer_config(interval_ms)

    def batch_landed(
        self,
        route: str,
        *,
        messages: int,
        rows: int,
        seconds: float,
        table: pa.Table | None,
    ) -> None:
        """A batch of `messages` consumed records has landed: `rows` new rows committed to
        `route`'s table (fewer on a replay, whose rows the table already holds; the dead rows
        are reported by `dead_rows`), after `seconds` of decoding and writing. `table` is what
        was written; its event-time column gives the latencies (the dead-letter table has none:
        its rows carry no reading time)."""
        self._in.inc(messages)
        self.families.records_out.labels(STAGE, route).inc(rows)
        self._batch.observe(seconds)
        if table is not None and EVENT_TIME in table.column_names:
            latency = self.families.end_to_end_latency.labels(stage=STAGE, route=route)
            buckets = latency_buckets(table.column(EVENT_TIME), latency.bounds, time.time())
            if buckets is not None:
                latency.add_cumulative(*buckets)

    def dead_rows(self, rows: Sequence[DeadRow]) -> None:
        """Records of a batch that went to the dead-letter table instead of their own."""
        for reason, count in Counter(dead_row_reason(r) for r in rows).items():
            self._dead[reason].inc(count)

    def expired(self, records: int) -> None:
        """Records the topic's retention deleted before the sink read them (a retention gap)."""
        self._dead["expired"].inc(records)

    def offsets_committed(self, seconds: float) -> None:
        """The consumer offsets after a landed batch were committed in `seconds`."""
        self._commit.observe(seconds)
        self._last_commit.set(time.time())

    def checkpoint_failed(self, route: str) -> None:
        """A checkpoint of `route`'s table could not be written (`sinks.log_keeper`)."""
        self.families.sink_checkpoint_failures.labels(route).inc()

    def checkpoint_written(self, route: str, seconds: float) -> None:
        """A checkpoint of `route`'s table was written in `seconds` (`sinks.log_keeper`)."""
        self.families.sink_checkpoint_duration.labels(route).observe(seconds)

    def buffered(self, records: int, size: int = 0) -> None:
        """`records` held in memory, of `size` bytes as the memory bound counts them."""
        self.families.sink_buffered.set(records)
        self.families.sink_buffered_bytes.set(size)
