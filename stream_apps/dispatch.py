"""One input message to its outgoing messages: every route it matches, and dead letters.

This is the router's per-message dispatch: it decodes the message's bytes, applies the routing
version in force (`stream_apps.routing`, which knows records, not bytes) and encodes what each
route gets. The quixstreams application (`stream_apps.app`) calls it once per input. It is kept
free of quixstreams so it can be reasoned about (and measured) alone.

Nothing here drops a message: a message that cannot be decoded, a route whose rule fails, a
record that cannot be encoded, each becomes a dead letter naming the stage, the error and the
source topic/partition/offset, with the original bytes as its value. So does a valid message
that is not a reading (its schema lacks the provenance fields producers add): routes are
written for readings, and `raw` would otherwise forward anything to the lake.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import NamedTuple

from schemas.avro_codec import AvroDecoder, UndecodableMessage
from schemas.dead_letter import DeadLetter
from schemas.registry import IncompatibleSchema
from schemas.route_headers import HEADER_ROUTE, HEADER_ROUTES_VERSION
from schemas.value_schema import missing_provenance
from sensorstream.failpoints import failpoint
from stream_apps.outputs import OutputEncoders
from stream_apps.routing.config import CompiledRouting

log = logging.getLogger("sensorstream.router")

STAGE = "router"
"""The router's name as a pipeline stage: in its dead letters' `dlq.stage` header and its
metrics' `stage` label (the producer and the sink name theirs)."""


class Outgoing(NamedTuple):
    """One message to produce. `headers` may be shared with other messages: do not mutate."""

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]


class ActiveRouting:
    """The routing version in force, and the next one waiting for a checkpoint boundary.

    A new version is staged by the control-topic thread and switched in by `activate()`, which
    the app calls when a checkpoint commits, or at once when no message has been routed since
    the last commit: every message of one Kafka transaction is routed by one version, and the
    outputs say which (a header).
    """

    def __init__(self, version: int, routing: CompiledRouting) -> None:
        self.version = version
        self.routing = routing
        self._pending: tuple[int, CompiledRouting] | None = None
        self._in_use = False  # a message of the open checkpoint was routed by this version
        self._lock = threading.Lock()

    def current(self) -> tuple[int, CompiledRouting]:
        """The version to route a message with; it stays in force until the checkpoint commits."""
        with self._lock:
            self._in_use = True
            return self.version, self.routing

    def stage(self, version: int, routing: CompiledRouting) -> None:
        with self._lock:
            if self._in_use:
                self._pending = (version, routing)
                return
            # Nothing routed since the last commit (an idle router commits no checkpoint, so
            # activate() would wait for the next message): in force at once.
            self._pending = None
            self.version, self.routing = version, routing
        log.info("routing version %d is now in force", version)

    def activate(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
            self._in_use = False
            if pending is not None:
                self.version, self.routing = pending
        if pending is None:
            return False
        log.info("routing version %d is now in force", pending[0])
        return True


class MessageRouter:
    def __init__(
        self,
        active: ActiveRouting,
        decoder: AvroDecoder,
        encoders: OutputEncoders,
        dead_letter_topic: str,
    ) -> None:
        self.active = active
        self.decoder = decoder
        self.encoders = encoders
        self.dead_letter_topic = dead_letter_topic
        self.routed = 0
        self.dead_letters = 0
        # The event time of the last message routed (None if it did not decode): the
        # end-to-end latency metric measures from it.
        self.last_event_time: datetime | int | None = None
        # Headers of a route's messages under one routing version, built once: librdkafka
        # copies them on produce, so one list serves every message.
        self._headers_version = -1
        self._headers: dict[str, list[tuple[str, bytes]]] = {}
        # Per writer schema id: why its records are not readings, or None when they are.
        self._foreign: dict[int, str | None] = {}

    def _route_headers(self, version: int) -> dict[str, list[tuple[str, bytes]]]:
        if version != self._headers_version:
            self._headers_version, self._headers = version, {}
        return self._headers

    def route(self, value: bytes | None, source: tuple[str, int, int]) -> list[Outgoing]:
        """The messages to produce for one input `value` read at (topic, partition, offset)."""
        failpoint("router.route")
        self.routed += 1  # every input counts, dead-lettered or not
        version, routing = self.active.current()
        try:
            schema_id, record = self.decoder.decode(value)
        except UndecodableMessage as exc:
            self.last_event_time = None
            return [self._dead_letter(value, source, f"decode: {exc}")]
        try:
            foreign = self._foreign[schema_id]
        except KeyError:
            foreign = self._foreign[schema_id] = self._not_a_reading(schema_id)
        if foreign is not None:
            self.last_event_time = None
            return [self._dead_letter(value, source, foreign)]
        self.last_event_time = record.get("timestamp")
        result = routing.route(record)
        route_headers = self._route_headers(version)
        outgoing: list[Outgoing] = []
        for output in result.outputs:
            if output.passthrough:
                payload = value
            else:
                try:
                    payload = self.encoders.encode(routing, version, output, schema_id, value)
                except IncompatibleSchema as exc:
                    outgoing.append(self._dead_letter(value, source, str(exc), output.route))
                    continue
                except (ValueError, TypeError, OverflowError) as exc:
                    reason = f"{output.route}: Avro encoding failed: {exc}"
                    outgoing.append(self._dead_letter(value, source, reason, output.route))
                    continue
            headers = route_headers.get(output.route)
            if headers is None:
                headers = route_headers[output.route] = [
                    (HEADER_ROUTE, output.route.encode()),
                    (HEADER_ROUTES_VERSION, str(version).encode()),
                ]
            outgoing.append(Outgoing(output.topic, payload, headers))
        for failure in result.dead_letters:
            outgoing.append(self._dead_letter(value, source, failure.reason, failure.route))
        return outgoing

    def _not_a_reading(self, schema_id: int) -> str | None:
        schema = self.decoder.writer_schema(schema_id)
        missing = missing_provenance(schema)
        if not missing:
            return None
        name = str(schema.get("name", "a record")) if isinstance(schema, dict) else "not a record"
        if isinstance(schema, dict) and schema.get("namespace") and "." not in name:
            name = f"{schema['namespace']}.{name}"
        return (
            f"decode: schema id {schema_id} ({name}) is not a reading: it lacks the provenance "
            f"field{'s' if len(missing) > 1 else ''} {', '.join(missing)} that producers add; "
            "only readings are routed (send other data to a topic of its own)"
        )

    def _dead_letter(
        self, value: bytes | None, source: tuple[str, int, int], reason: str, route: str = ""
    ) -> Outgoing:
        topic, partition, offset = source
        letter = DeadLetter(
            stage=STAGE,
            error=reason,
            source={"topic": topic, "partition": str(partition), "offset": str(offset)},
            value=value or b"",
        )
        headers = letter.headers(datetime.now(UTC).isoformat())
        headers.append((HEADER_ROUTES_VERSION, str(self.active.version).encode()))
        if route:
            headers.append((HEADER_ROUTE, route.encode()))
        self.dead_letters += 1
        return Outgoing(self.dead_letter_topic, value or b"", headers)
