"""What the edge tailer reports to Prometheus (families in `sensorstream.metrics`).

Everything a chunk contributes is published after its transaction commits, in one call: a
chunk that is aborted and resent after an outage is counted once, like its rows in Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from sensorstream.metrics import DEAD_LETTER_REASONS, DeadLetterReason, MetricFamilies

STAGE = "producer"
ROUTE = "readings"
"""The producer's one output, the readings topic; it is a route for the records_out family."""


class ProducerMetrics:
    def __init__(self, families: MetricFamilies | None = None) -> None:
        self.families = families = families or MetricFamilies()
        # Children created up front: a dashboard shows 0, not "no data", before the first row.
        self._in = families.records_in.labels(STAGE)
        self._out = families.records_out.labels(STAGE, ROUTE)
        self._dead = {r: families.dead_letters.labels(STAGE, r) for r in DEAD_LETTER_REASONS}
        self._batch = families.batch_duration.labels(STAGE)
        self._commit = families.commit_duration.labels(STAGE)
        self._latency = families.end_to_end_latency.labels(stage=STAGE, route=ROUTE)
        self._last_commit = families.last_commit.labels(STAGE)
        self._offline = False
        families.producer_offline.set(0)
        # Registered now, so the first scrape lists every producer family.
        _ = (
            families.producer_backlog,
            families.producer_outages,
            families.producer_checkpoint_rowid,
            families.producer_info,
        )

    def tailing(self, node_id: str, region: str, table: str) -> None:
        self.families.producer_info.labels(node_id, region, table).set(1)

    def chunk_committed(
        self,
        *,
        rows: int,
        dead_letters: Mapping[DeadLetterReason, int],
        event_times_s: Sequence[float],
        batch_s: float,
        commit_s: float,
        last_rowid: int,
    ) -> None:
        """One committed chunk: `rows` read from SQLite, of which `dead_letters` went to the
        dead-letter topic and the rest (with `event_times_s`) to the readings topic."""
        now = time.time()
        dead = sum(dead_letters.values())
        self._in.inc(rows)
        self._out.inc(rows - dead)
        for reason, count in dead_letters.items():
            self._dead[reason].inc(count)
        self._latency.observe_many(now - t for t in event_times_s)
        self._batch.observe(batch_s)
        self._commit.observe(commit_s)
        self._last_commit.set(now)
        self.families.producer_checkpoint_rowid.set(last_rowid)

    def backlog(self, rows: int) -> None:
        """Rows after the checkpoint; a negative value (SQLite unreadable) leaves the last."""
        if rows >= 0:
            self.families.producer_backlog.set(rows)

    def offline(self, is_offline: bool) -> None:
        if is_offline and not self._offline:
            self.families.producer_outages.inc()
        self._offline = is_offline
        self.families.producer_offline.set(1 if is_offline else 0)
