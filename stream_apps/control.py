"""Routing versions on a compacted control topic: the one source of truth every router follows.

Versions are serialized by a compare-and-set on the log itself. `publish` reads the latest
version N, produces N+1, then reads the topic again: the version is its own only if its
message is the FIRST valid message for N+1 in log order. Every reader applies the same
first-wins rule (`ControlLog`): `routes show` and `history`, a router starting, and a running
router's watcher, which skips any version not above the one it follows. So two applies at
the same moment agree on one winner, and the other is told to re-run (`ConcurrentPublish`).

Each message has a key of its own (`version-00000042/<random>`): compaction keeps the last
message per key, and with a shared key it would keep a losing apply in place of the winner.
A message that is not a routing version (not JSON, fields missing) is skipped by every reader
alike; a running router also logs, counts and dead-letters it (`ControlWatcher`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from sensorstream.errors import PipelineError
from sensorstream.topics import COMPACTED, TopicSpec, ensure_topics, read_to_end
from stream_apps.routing.config import content_hash

log = logging.getLogger("sensorstream.router")


class NotARoutingVersion(ValueError):
    """A control-topic message that no reader can take as a routing version."""


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
    def from_bytes(cls, data: bytes | None) -> RoutingVersion:
        """Decode a message value; NotARoutingVersion when it is not one. Fields a later
        release may add are ignored, so an older router keeps following newer publishers."""
        try:
            raw = json.loads(data) if data is not None else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotARoutingVersion(f"not a routing version: not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise NotARoutingVersion("not a routing version: not a JSON object")
        values = {}
        for f in fields(cls):
            value = raw.get(f.name)
            expected = int if f.name == "version" else str
            if type(value) is not expected:
                raise NotARoutingVersion(
                    f"not a routing version: field '{f.name}' is "
                    f"{'missing' if value is None else type(value).__name__}, "
                    f"not {expected.__name__}"
                )
            values[f.name] = value
        if values["version"] < 1:
            raise NotARoutingVersion("not a routing version: version below 1")
        return cls(**values)


def _version_key(version: int) -> bytes:
    return f"version-{version:08d}/{uuid.uuid4().hex[:12]}".encode()


@dataclass
class ControlLog:
    """The control topic read in log order under the first-wins rule."""

    winners: dict[int, tuple[int, RoutingVersion]] = field(default_factory=dict)
    """version -> (offset, version): the first valid message for each version number."""
    bad: list[tuple[int, str]] = field(default_factory=list)
    """(offset, reason) of every message that is not a routing version."""
    end: int = 0
    """The offset after the last message read: where a watcher goes on from."""

    def add(self, offset: int, value: bytes | None) -> RoutingVersion | None:
        """Take one message; the version if it won its number (None if lost or bad)."""
        self.end = max(self.end, offset + 1)
        if value is None:
            return None  # a tombstone: nothing to take
        try:
            version = RoutingVersion.from_bytes(value)
        except NotARoutingVersion as exc:
            self.bad.append((offset, str(exc)))
            return None
        if version.version in self.winners:
            return None
        self.winners[version.version] = (offset, version)
        return version

    def history(self) -> list[RoutingVersion]:
        return [self.winners[v][1] for v in sorted(self.winners)]

    def latest(self) -> RoutingVersion | None:
        return self.winners[max(self.winners)][1] if self.winners else None


class ConcurrentPublish(PipelineError):
    """Another publisher's message for the same version number came first: it is the version."""

    def __init__(self, version: int, winner: RoutingVersion, source: str) -> None:
        super().__init__(
            f"routing version {version} was published concurrently by {winner.applied_by} "
            f"(from {winner.source}, at {winner.applied_at}) just before {source}; {source} "
            "was not applied and no router follows it. Check `sensorstream routes show`, "
            "then re-run apply if it is still wanted"
        )
        self.version = version
        self.winner = winner


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

    def read(self, timeout: float = 30.0) -> ControlLog:
        """The whole topic, first-wins: the log every reader agrees on."""
        control_log = ControlLog()
        for message in read_to_end(self.kafka_config, self.topic, timeout=timeout):
            control_log.add(message.offset(), message.value())
        return control_log

    def history(self, timeout: float = 30.0) -> list[RoutingVersion]:
        """Every version on the topic, oldest first."""
        return self.read(timeout).history()

    def latest(self) -> RoutingVersion | None:
        return self.read().latest()

    def publish(self, content: str, applied_by: str, source: str) -> tuple[RoutingVersion, bool]:
        """Publish `content` as the next version; (version, True) when it was new.

        Content identical to the latest version is not published again. Raises
        ConcurrentPublish when another publisher's message for the same number came first
        (unless it carries the same content: then that version is this content).
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
        offset = self._produce(version)
        winner_offset, winner = self.read().winners[version.version]
        if winner_offset == offset:
            return version, True
        if winner.content_hash == digest:
            return winner, False  # the same content won: it is in force all the same
        raise ConcurrentPublish(version.version, winner, source)

    def rollback(self, target: int, applied_by: str) -> tuple[RoutingVersion, bool]:
        """Publish version `target`'s content as a new version (history is never rewritten)."""
        old = self.version(target)
        return self.publish(old.content, applied_by, f"rollback to version {target}")

    def version(self, number: int) -> RoutingVersion:
        """Version `number`; LookupError naming the versions there are when it does not exist."""
        control_log = self.read()
        if number in control_log.winners:
            return control_log.winners[number][1]
        there = sorted(control_log.winners)
        span = f"versions 1 to {there[-1]}" if there else "no version yet"
        raise LookupError(f"no routing version {number} on {self.topic} (it has {span})")

    def _produce(self, version: RoutingVersion) -> int:
        """Produce `version`; its offset once the broker has it."""
        producer = Producer({**self.kafka_config, "enable.idempotence": True, "acks": "all"})
        outcome: list[KafkaError | int] = []
        producer.produce(
            self.topic,
            key=_version_key(version.version),
            value=version.to_bytes(),
            on_delivery=lambda err, msg: outcome.append(err if err else msg.offset()),
        )
        if producer.flush(30) or not outcome or not isinstance(outcome[0], int):
            raise PipelineError(
                f"publishing routing version {version.version} to {self.topic} "
                f"failed: {outcome or 'timed out'}"
            )
        return outcome[0]


class ControlWatcher:
    """Follows the control topic in a background thread and reports each new version.

    It must outlive anything a message or a callback can do: a router whose watcher died
    keeps routing with a version every other reader has left behind, and says nothing. A
    message that is not a routing version goes to `on_bad` (from offset `report_from` on:
    earlier ones were reported when they arrived); a version `on_version` fails on (the
    registry away, say) is tried again every `retry_s` until it succeeds or a newer version
    supersedes it.
    """

    def __init__(
        self,
        control: RoutingControl,
        after_version: int,
        on_version: Callable[[RoutingVersion], None],
        on_bad: Callable[[Message, str], None],
        report_from: int = 0,
        retry_s: float = 5.0,
    ) -> None:
        self.control = control
        self.after_version = after_version
        self.on_version = on_version
        self.on_bad = on_bad
        self.report_from = report_from
        self.retry_s = retry_s
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
        pending: RoutingVersion | None = None
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                version = self._take(msg) if msg is not None else None
                if version is not None:
                    pending = version  # a newer version supersedes one still failing
                if pending is not None and self._deliver(pending):
                    pending = None
                elif pending is not None:
                    self._stop.wait(self.retry_s)
        finally:
            consumer.close()

    def _take(self, msg: Message) -> RoutingVersion | None:
        """The version `msg` brings if it is new under the first-wins rule, else None."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("reading routing control topic %s: %s", self.control.topic, error)
            return None
        if msg.value() is None:
            return None
        try:
            version = RoutingVersion.from_bytes(msg.value())
        except NotARoutingVersion as exc:
            if msg.offset() >= self.report_from:
                try:
                    self.on_bad(msg, str(exc))
                except Exception:
                    log.exception("reporting the bad control message at offset %d", msg.offset())
            return None
        # Not above the version followed: an older version, or a losing concurrent apply.
        if version.version <= self.after_version:
            return None
        self.after_version = version.version
        return version

    def _deliver(self, version: RoutingVersion) -> bool:
        try:
            self.on_version(version)
            return True
        except Exception:
            log.exception(
                "routing version %d could not be taken; trying again in %.0f s",
                version.version,
                self.retry_s,
            )
            return False
