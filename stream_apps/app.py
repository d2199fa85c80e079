"""`sensorstream route`: the quixstreams application that routes readings, exactly once.

The router's front door (`RouterApp`): it wires the quixstreams application, its consumer and
producer, the routing control topic and the checkpoint boundary around the per-message
dispatch (`stream_apps.dispatch`), and runs it through broker outages.

The input is read as raw bytes: decoding happens in `MessageRouter`, so a message quixstreams
could not deserialize becomes a dead letter rather than an exception that stops the app. One
callback per input routes it and produces every outgoing message (each with its own topic and
headers, regional topics included) through the producer of quixstreams' checkpoint
(`CheckpointOutput`): with `processing_guarantee="exactly-once"` the outputs and the input
offsets commit in one Kafka transaction per checkpoint (every `commit_interval_s`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quixstreams import Application, message_context
from quixstreams.sinks import BaseSink

from schemas.avro_codec import AvroDecoder
from schemas.registry import SchemaRegistry
from sensorstream.backoff import Backoff
from sensorstream.errors import ConfigError, PipelineError
from sensorstream.settings import ConnectionSettings
from sensorstream.topics import TopicSpec, ensure_topics
from stream_apps.checkpoint_output import CheckpointOutput
from stream_apps.control import ControlWatcher, RoutingControl, RoutingVersion
from stream_apps.control_faults import ControlFaults
from stream_apps.dispatch import ActiveRouting, MessageRouter
from stream_apps.expired import ExpiredReporter
from stream_apps.metrics import RouterMetrics, event_time_s, observe_checkpoints
from stream_apps.once import ReadToEnd, input_exists
from stream_apps.outputs import OutputEncoders
from stream_apps.quixstreams_internals import (
    checkpoint_producer,
    processing_context,
    skip_signal_handlers,
)
from stream_apps.reconnect import Outage, outage_error
from stream_apps.routing.config import CompiledRouting, content_hash
from stream_apps.settings import RouterSettings
from stream_apps.versions import checked_routing_file, compile_version

if TYPE_CHECKING:
    from quixstreams.processing import ProcessingContext

log = logging.getLogger("sensorstream.router")

DEFAULT_ROUTES = Path(__file__).with_name("routes.yaml")


class _CheckpointBoundary(BaseSink):
    """quixstreams flushes every registered sink when a checkpoint commits: the moment to
    switch routing versions. No record is ever added to it (see `_never`)."""

    def __init__(self, active: ActiveRouting) -> None:
        super().__init__()
        self.active = active

    def add(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        self.active.activate()


def _never(value: Any) -> bool:
    """Keeps every record away from `_CheckpointBoundary`: only its flush matters."""
    return False


def live_switch_refusal(running: CompiledRouting, new: CompiledRouting) -> str | None:
    """Why a running router cannot switch to `new` at a checkpoint (None: it can).

    The input topic is its consumer's subscription, and the dead-letter topic is where its
    open transaction already sends records; both are fixed for the life of the process. A
    version changing either is refused as a whole, loudly, so no router runs half of it.
    """
    old, cfg = running.config, new.config
    if cfg.input != old.input:
        return f"it changes the input topic ({old.input} -> {cfg.input})"
    if cfg.dead_letter_topic != old.dead_letter_topic:
        return (
            f"it changes the dead-letter topic ({old.dead_letter_topic} -> {cfg.dead_letter_topic})"
        )
    return None


@dataclass(frozen=True)
class RouterResult:
    routed: int
    dead_letters: int
    routes_version: int
    seconds: float


class RouterApp:
    def __init__(
        self,
        settings: RouterSettings,
        connection: ConnectionSettings,
        metrics: RouterMetrics | None = None,
        router_type: type[MessageRouter] = MessageRouter,
    ) -> None:
        """`router_type` routes each message; the router benchmark passes a subclass that
        times `route()`, the per-message work, inside the running application."""
        self.settings = settings
        self.metrics = metrics or RouterMetrics()
        self.router_type = router_type
        self.connection = connection
        self.kafka_config = connection.kafka_client_config()
        self.registry = SchemaRegistry(connection.schema_registry_config())
        self.control = RoutingControl(self.kafka_config, settings.control_topic)
        self.expired = ExpiredReporter(self.kafka_config, self.metrics)
        self.app: Application | None = None
        self.context: ProcessingContext | None = None  # the app's, set with it by build()
        self.router: MessageRouter | None = None
        self.input_topic = ""
        self._stop_requested = threading.Event()

    def initial_version(self) -> RoutingVersion:
        """The version to start with: --routes FILE published if it was never published,
        else the latest.

        A file that was published before and has been superseded since (by `routes apply`)
        is not published again: a router restarted with the flag it was first deployed with
        would otherwise revert every later change, for all routers.
        """
        s = self.settings
        history = self.control.history()
        latest = history[-1] if history else None
        if s.routes is not None:
            path = s.routes
            text = checked_routing_file(path, self.registry, s.control_topic)  # before publishing
            digest = content_hash(text)
            earlier = next((v for v in reversed(history) if v.content_hash == digest), None)
            if earlier is not None and latest is not None and earlier is not latest:
                log.warning(
                    "%s is routing version %d, superseded by version %d (%s by %s at %s): "
                    "routing with version %d; `sensorstream routes apply %s` goes back to it",
                    path,
                    earlier.version,
                    latest.version,
                    latest.source,
                    latest.applied_by,
                    latest.applied_at,
                    latest.version,
                    path,
                )
                return latest
            version, new = self.control.publish(text, s.applied_by, str(path))
            if new:
                log.info("published %s as routing version %d", path, version.version)
            return version
        if latest is not None:
            return latest
        text = DEFAULT_ROUTES.read_text(encoding="utf-8")
        version, _ = self.control.publish(text, s.applied_by, "default routes.yaml")
        log.info("no routing version yet: published the default routes as version 1")
        return version

    def build(self) -> Application:
        s = self.settings
        self.control.ensure_topic()
        version = self.initial_version()
        control_log = self.control.read()
        for offset, reason in control_log.bad:
            log.warning(
                "routing control topic %s, offset %d: %s; skipped, as every reader does",
                self.control.topic,
                offset,
                reason,
            )
        routing = compile_version(version, self.registry, s.control_topic)
        active = ActiveRouting(version.version, routing)
        self.metrics.follow_routing_version(lambda: active.version)
        config = routing.config
        if s.once and not input_exists(self.kafka_config, config.input):
            raise PipelineError(
                f"input topic {config.input} does not exist: there is nothing to route. Run a "
                "producer first, or check `input:` in the routing file (routing version "
                f"{version.version}, from {version.source})"
            )
        ensure_topics(
            self.kafka_config,
            [TopicSpec(config.input, s.output_partitions), TopicSpec(config.dead_letter_topic, 1)],
        )
        self.expired.check(s.consumer_group, config.input, config.dead_letter_topic)
        extra = {k: v for k, v in self.kafka_config.items() if k != "bootstrap.servers"}
        app = Application(
            broker_address=self.connection.kafka_bootstrap_servers,
            consumer_group=s.consumer_group,
            auto_offset_reset="earliest",
            processing_guarantee=s.processing_guarantee,
            commit_interval=s.commit_interval_s,
            consumer_extra_config=self._consumer_config(extra),
            producer_extra_config=self._producer_config(extra),
            use_changelog_topics=False,
            state_dir=Path(tempfile.gettempdir()) / "sensorstream-router-state",
            loglevel=None,
        )
        sdf = app.dataframe(
            app.topic(config.input, key_deserializer="bytes", value_deserializer="bytes")
        )
        context = processing_context(sdf)
        observe_checkpoints(context, self.metrics)
        decoder = AvroDecoder(self.registry)
        router = self.router_type(
            active, decoder, OutputEncoders(self.registry, decoder), config.dead_letter_topic
        )
        producer = checkpoint_producer(context)
        output = CheckpointOutput(producer, self.kafka_config, s.output_partitions)
        output.ensure((config.dead_letter_topic,))
        send, routed = output.send, self.metrics.routed

        def route_input(value: bytes, key: Any, timestamp: int, headers: Any) -> None:
            ctx = message_context()
            outgoing = router.route(value, (ctx.topic, ctx.partition, ctx.offset))
            routed(outgoing, event_time_s(router.last_event_time))
            send(outgoing, key, timestamp)

        sdf = sdf.update(route_input, metadata=True)
        sdf.filter(_never).sink(_CheckpointBoundary(active))

        faults = ControlFaults(self.kafka_config, config.dead_letter_topic, self.metrics)

        def on_version(version: RoutingVersion) -> None:
            try:
                compiled = compile_version(version, self.registry, s.control_topic)
            except ConfigError as exc:
                log.error(
                    "routing version %d (%s by %s) does not compile here; keeping version %d: %s",
                    version.version,
                    version.source,
                    version.applied_by,
                    active.version,
                    exc,
                )
                faults.refused()
                return
            refusal = live_switch_refusal(routing, compiled)
            if refusal is not None:
                log.error(
                    "routing version %d cannot be applied while running: %s; restart the "
                    "routers to apply it; keeping version %d",
                    version.version,
                    refusal,
                    active.version,
                )
                faults.refused()
                return
            log.info(
                "routing version %d (%s by %s) staged for the next checkpoint",
                version.version,
                version.source,
                version.applied_by,
            )
            active.stage(version.version, compiled)

        self.watcher = ControlWatcher(
            self.control,
            version.version,
            on_version,
            faults.bad_message,
            report_from=control_log.end,
        )
        self.app, self.context, self.router = app, context, router
        self.input_topic = config.input
        log.info(
            "routing %s with version %d (%d routes), %s",
            config.input,
            version.version,
            len(config.routes),
            s.processing_guarantee,
        )
        return app

    def _consumer_config(self, extra: dict[str, str]) -> dict[str, Any]:
        config: dict[str, Any] = {
            **extra,
            "session.timeout.ms": 15000,
            **self.metrics.consumer_config(),
        }
        if self.settings.instance_id:
            # Static membership: a restarted instance takes its old place in the group at
            # once instead of waiting for the dead member's session to expire.
            config["group.instance.id"] = self.settings.instance_id
        return config

    def _producer_config(self, extra: dict[str, str]) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {
            **extra,
            "linger.ms": 5,
            "compression.type": "lz4",
            # Successful deliveries need no Python callback (4 per input); a failed one still
            # reaches quixstreams' callback, and the checkpoint's flush raises it before any
            # commit. quixstreams uses successful reports only for state changelogs: none here.
            "delivery.report.only.error": True,
            "transaction.timeout.ms": int(s.transaction_timeout_s * 1000),
        }
        if s.instance_id:
            config["transactional.id"] = f"{s.consumer_group}.{s.instance_id}"
        return config

    def run(self) -> RouterResult:
        """Route until stopped (with `once`: until every partition owned is routed to where
        it ended when it was assigned); through a broker outage, start the application again
        with backoff until the outage outlasts the retry budget."""
        started = time.monotonic()
        outage = Outage(self.settings.retry_budget_s, self.connection.kafka_bootstrap_servers)
        backoff = Backoff(initial_s=1.0, max_s=15.0)
        earlier = (0, 0)  # routed and dead-lettered by applications given up on
        while True:
            run_started = time.monotonic()
            try:
                self._run_application()
                break
            except Exception as exc:
                error = outage_error(exc)
                if error is None or self._stop_requested.is_set():
                    raise
                lasted = outage.failed(error, time.monotonic() - run_started)
                log.warning(
                    "Kafka at %s unreachable (%s); starting the router's clients again from "
                    "the committed offsets (outage so far %.0f s of a %.0f s retry budget)",
                    outage.where,
                    error.str(),
                    lasted,
                    outage.budget_s,
                )
                if self.router is not None:
                    earlier = (
                        earlier[0] + self.router.routed,
                        earlier[1] + self.router.dead_letters,
                    )
                self.app = self.context = self.router = None
                if backoff.wait(self._stop_requested):
                    break
        return RouterResult(
            routed=earlier[0] + (self.router.routed if self.router else 0),
            dead_letters=earlier[1] + (self.router.dead_letters if self.router else 0),
            routes_version=self.router.active.version if self.router else 0,
            seconds=time.monotonic() - started,
        )

    def _run_application(self) -> None:
        app = self.app or self.build()
        context = self.context
        assert context is not None  # build() sets it with the app
        if threading.current_thread() is not threading.main_thread():
            # quixstreams installs SIGINT/SIGTERM handlers in run(), which Python allows in
            # the main thread only; a router run in another thread is stopped with stop().
            skip_signal_handlers(app)
        self.watcher.start()
        finished = threading.Event()
        stopper = threading.Thread(
            target=self._forward_stop, args=(app, finished), name="router-stop", daemon=True
        )
        stopper.start()
        s = self.settings
        ends = (
            ReadToEnd(app, context, s.join_timeout_s, self.input_topic, s.consumer_group)
            if s.once
            else None
        )
        try:
            app.run()
        finally:
            finished.set()
            self.watcher.stop()
        if ends is not None and ends.failure is not None:
            raise ends.failure

    def _forward_stop(self, app: Application, finished: threading.Event) -> None:
        # quixstreams' run() clears a stop() that comes before its loop has started, so a
        # stop() is repeated until run() returns.
        while not finished.is_set():
            if self._stop_requested.wait(0.2):
                app.stop()
                finished.wait(0.2)

    def stop(self) -> None:
        """Ask run() to finish its checkpoint and return; from any thread, at any time."""
        self._stop_requested.set()
        if self.app is not None:
            self.app.stop()
