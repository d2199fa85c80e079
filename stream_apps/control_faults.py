"""What a running router does with a routing control message it cannot take as a version.

The control topic is read by every router for as long as it runs; a message there that is not
a routing version (written by hand, by another tool, or truncated) must neither stop the
router from following later versions nor vanish: it is logged, counted and sent to the
dead-letter topic with the reason and its offset, like any record the pipeline cannot read.
Each running router reports the messages that arrive while it runs, so with N routers the
dead-letter topic holds N letters for one bad message, each naming the same offset.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from confluent_kafka import Message, Producer

from schemas.dead_letter import DeadLetter
from sensorstream.errors import PipelineError
from stream_apps.dispatch import STAGE
from stream_apps.metrics import RouterMetrics

log = logging.getLogger("sensorstream.router")


class ControlFaults:
    def __init__(
        self, kafka_config: dict[str, str], dead_letter_topic: str, metrics: RouterMetrics
    ) -> None:
        self.kafka_config = kafka_config
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self._producer: Producer | None = None

    def bad_message(self, msg: Message, reason: str) -> None:
        """`msg` is not a routing version: log, count and dead-letter it."""
        log.error(
            "routing control topic %s, offset %d: %s; skipped (dead-lettered to %s); the "
            "router keeps following the topic",
            msg.topic(),
            msg.offset(),
            reason,
            self.dead_letter_topic,
        )
        self.metrics.control_message_bad("undecodable")
        letter = DeadLetter(
            stage=STAGE,
            error=f"routing control message: {reason}",
            source={
                "topic": msg.topic(),
                "partition": str(msg.partition()),
                "offset": str(msg.offset()),
            },
            value=msg.value() or b"",
            key=msg.key(),
        )
        self._send(letter)

    def refused(self) -> None:
        """A valid version this router cannot apply (it logs why itself)."""
        self.metrics.control_message_bad("refused")

    def _send(self, letter: DeadLetter) -> None:
        if self._producer is None:
            self._producer = Producer(
                {**self.kafka_config, "enable.idempotence": True, "acks": "all"}
            )
        failures: list[str] = []
        self._producer.produce(
            self.dead_letter_topic,
            key=letter.key,
            value=letter.value,
            headers=letter.headers(datetime.now(UTC).isoformat()),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
        if self._producer.flush(30) or failures:
            raise PipelineError(
                f"dead-lettering a routing control message to {self.dead_letter_topic} "
                f"failed: {failures or 'timed out'}"
            )
