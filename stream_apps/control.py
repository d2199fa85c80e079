"""Routing versions on a compacted control topic: the one source of truth every router follows.

Each version is its own key (`version-00000042`), so compaction keeps the whole history: who
applied which content when. Routers read the latest version at start and then follow the topic,
so all instances converge on the same rules; `sensorstream routes apply` validates a file before
publishing it, so a version on the topic always compiles.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from sensorstream.errors import PipelineError
from sensorstream.topics import COMPACTED, TopicSpec, ensure_topics, read_to_end
from stream_apps.routing.config import content_hash


@dataclass(frozen=True)
class RoutingVersion:
    version: int
    content: str
    content_hash: str
    applied_by: str
    applied_at: str
    source: str

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RoutingVersion:
        return cls(**json.loads(data))


class RoutingControl:
    def __init__(self, kafka_config: dict[str, str], topic: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic

    def ensure_topic(self) -> None:
        ensure_topics(self.kafka_config, [TopicSpec(self.topic, 1, COMPACTED)])

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.kafka_config,
                "group.id": "sensorstream-routing-reader",  # assign() only; never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )

    def history(self, timeout: float = 30.0) -> list[RoutingVersion]:
        """Every version on the topic, oldest first."""
        versions: dict[int, RoutingVersion] = {}
        for message in read_to_end(self.kafka_config, self.topic, timeout=timeout):
            if message.value() is not None:
                version = RoutingVersion.from_bytes(message.value())
                versions[version.version] = version
        return [versions[v] for v in sorted(versions)]

    def latest(self) -> RoutingVersion | None:
        history = self.history()
        return history[-1] if history else None

    def publish(self, content: str, applied_by: str, source: str) -> tuple[RoutingVersion, bool]:
        """Publish `content` as the next version; (version, True) when it was new.

        Content identical to the latest version is not published again.
        """
        latest = self.latest()
        digest = content_hash(content)
        if latest is not None and latest.content_hash == digest:
            return latest, False
        version = RoutingVersion(
            version=(latest.version + 1) if latest else 1,
            content=content,
            content_hash=digest,
            applied_by=applied_by,
            applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source=source,
        )
        producer = Producer({**self.kafka_config, "enable.idempotence": True, "acks": "all"})
        failures: list[str] = []
        producer.produce(
            self.topic,
            key=f"version-{version.version:08d}".encode(),
            value=version.to_bytes(),
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
        if producer.flush(30) or failures:
            raise PipelineError(
                f"publishing routing version {version.version} to {self.topic} "
                f"failed: {failures or 'timed out'}"
            )
        return version, True


class ControlWatcher:
    """Follows the control topic in a background thread and reports each new version."""

    def __init__(
        self,
        control: RoutingControl,
        after_version: int,
        on_version: Callable[[RoutingVersion], None],
    ) -> None:
        self.control = control
        self.after_version = after_version
        self.on_version = on_version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routing-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = self.control._consumer()
        consumer.assign([TopicPartition(self.control.topic, 0, OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() or msg.value() is None:
                    continue
                version = RoutingVersion.from_bytes(msg.value())
                if version.version > self.after_version:
                    self.after_version = version.version
                    self.on_version(version)
        finally:
            consumer.close()
