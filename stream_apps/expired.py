"""The router's report of input records the topic's retention deleted before it read them.

What a gap is, how it is found and how its dead letter names it are `sensorstream.retention`'s;
this module sends the router's gaps to the dead-letter topic.

Checked from the group's committed offsets each time the router builds its application: that
is when a router that was down longer than the retention comes back. Each gap is logged,
counted and sent to the dead-letter topic as one notice naming the offsets, which the sink
lands in the dead-letter table. A process reports a gap once; routers of one group starting
at the same moment may each report it, so a notice can be repeated, never missed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from schemas.dead_letter import DeadLetter
from sensorstream.errors import PipelineError
from sensorstream.retention import ExpiredRecords, expired_since_commit
from stream_apps.dispatch import STAGE
from stream_apps.metrics import RouterMetrics

log = logging.getLogger("sensorstream.router")

TIMEOUT_S = 30.0


def notice(gap: ExpiredRecords) -> DeadLetter:
    """The dead letter for a gap: no value (the records are gone), the offsets as its source."""
    return DeadLetter(
        stage=STAGE,
        error=f"{gap.reason(STAGE)}; they were not routed",
        source=gap.source(),
        value=b"",
    )


class ExpiredReporter:
    """Reports each gap once per process (the application is rebuilt after a broker outage,
    and the committed offsets stay below the log start until a checkpoint passes it)."""

    def __init__(self, kafka_config: dict[str, Any], metrics: RouterMetrics) -> None:
        self.kafka_config = kafka_config
        self.metrics = metrics
        self._reported: set[ExpiredRecords] = set()

    def check(self, group: str, topic: str, dead_letter_topic: str) -> list[ExpiredRecords]:
        """Find the gaps of `group` on `topic`; log, count and dead-letter the new ones."""
        found = expired_since_commit(self.kafka_config, group, topic)
        gaps = [g for g in found if g not in self._reported]
        if not gaps:
            return []
        producer = Producer({**self.kafka_config, "enable.idempotence": True})
        failed_at = datetime.now(UTC).isoformat()
        for gap in gaps:
            letter = notice(gap)
            log.error("%s", letter.error)
            producer.produce(
                dead_letter_topic, value=letter.value, headers=letter.headers(failed_at)
            )
        if producer.flush(TIMEOUT_S):
            raise PipelineError(
                f"could not send the retention notices to {dead_letter_topic} within "
                f"{TIMEOUT_S:.0f} s"
            )
        for gap in gaps:
            self.metrics.expired(gap.count)
            self._reported.add(gap)
        return gaps
