"""Consumer lag from librdkafka's own statistics, without a single extra broker request.

librdkafka already knows, for each partition it fetches, the partition's end (high watermark,
or last stable offset under read_committed) and the group's committed offset: it reports both,
and their difference `consumer_lag`, in the JSON it hands to `stats_cb` every
`statistics.interval.ms`. Asking the broker for watermarks and committed offsets instead would
add requests per partition per scrape. The callback runs inside `poll()`/`consume()`, on the
thread that consumes, so a stalled consumer also stops refreshing its lag: the gauge keeps its
last value and `sensorstream_last_commit_timestamp_seconds` shows the stall.

quixstreams 3.28 takes `stats_cb` in `consumer_extra_config`: it keeps its own callback (for
broker state) and calls ours after it.

Two bases, because the statistics only see the commits the consumer itself makes:
- `committed` (the sink, which commits its offsets after its Delta commits): end offset minus
  the group's committed offset, i.e. records not yet landed, buffered ones included;
- `consumed` (the router): under exactly-once the offsets are committed by the transactional
  producer (`send_offsets_to_transaction`), which the consumer's statistics never see (its
  `committed_offset` stays at what it fetched on assignment). The consumed position is used
  instead; it runs ahead of the committed offsets by at most one checkpoint.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal

from prometheus_client import Gauge

log = logging.getLogger("sensorstream.metrics")

STATS_INTERVAL_MS = 5000
"""Often enough for a dashboard scraped every 15 s; the JSON is small for a few partitions."""

UNASSIGNED_PARTITION = -1  # librdkafka's internal "UA" partition of each topic

LagBasis = Literal["committed", "consumed"]


def _consumed_lag(p: Mapping[str, Any]) -> int:
    """End offset minus the consumed position, or -1 when either is unknown.

    The position is `app_offset` (the offset after the last message handed to the application,
    control records skipped); before the first message it is unset, and the fetcher's
    `next_offset` stands in once fetching is active: an empty partition then has lag 0.
    """
    end = p.get("ls_offset", -1)  # read_committed consumers can only reach the stable end
    if end < 0:
        end = p.get("hi_offset", -1)
    position = p.get("app_offset", -1)
    if position < 0 and p.get("fetch_state") == "active":
        position = p.get("next_offset", -1)
    return end - position if end >= 0 and position >= 0 else -1


def partition_lags(
    stats: Mapping[str, Any], basis: LagBasis = "committed"
) -> dict[tuple[str, int], int]:
    """The lag of each partition this consumer is assigned, from one statistics document.

    With `committed`, librdkafka's `consumer_lag`; before the group has committed anything
    for a partition that is -1, and the consumed position's lag stands in. Partitions whose
    end is not known yet are left out rather than reported as 0.
    """
    lags: dict[tuple[str, int], int] = {}
    for topic, topic_stats in (stats.get("topics") or {}).items():
        for key, p in (topic_stats.get("partitions") or {}).items():
            partition = int(p.get("partition", key))
            if partition == UNASSIGNED_PARTITION or not p.get("desired", True):
                continue
            lag = p.get("consumer_lag", -1) if basis == "committed" else -1
            if lag is None or lag < 0:
                lag = _consumed_lag(p)
            if lag >= 0:
                lags[(topic, partition)] = lag
    return lags


class ConsumerLag:
    """Keeps `sensorstream_consumer_lag_records{stage,topic,partition}` equal to the lag of the
    partitions a consumer holds now: a partition given away in a rebalance loses its series
    instead of showing its last lag forever."""

    def __init__(self, gauge: Gauge, stage: str, basis: LagBasis = "committed") -> None:
        self.gauge = gauge
        self.stage = stage
        self.basis = basis
        self._reported: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def consumer_config(self, interval_ms: int = STATS_INTERVAL_MS) -> dict[str, Any]:
        """librdkafka settings that make a consumer (or a quixstreams Application, through
        `consumer_extra_config`) report its lag here."""
        return {"statistics.interval.ms": interval_ms, "stats_cb": self.on_stats}

    def on_stats(self, stats_json: str) -> None:
        try:
            lags = partition_lags(json.loads(stats_json), self.basis)
        except (ValueError, TypeError, AttributeError) as exc:
            # A metrics problem must never stop the consumer that delivers the statistics.
            log.warning("unreadable librdkafka statistics, lag not updated: %s", exc)
            return
        self.update(lags)

    def update(self, lags: Mapping[tuple[str, int], int]) -> None:
        with self._lock:
            for topic, partition in self._reported - set(lags):
                self.gauge.remove(self.stage, topic, str(partition))
            for (topic, partition), lag in lags.items():
                self.gauge.labels(self.stage, topic, str(partition)).set(lag)
            self._reported = set(lags)
