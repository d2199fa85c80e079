"""Prometheus metrics of the long-running commands (DESIGN section 10): one set of families for
the whole product, labelled by `stage` (producer, router, sink) and `route` where it applies.

One set, not one per component, so a dashboard compares stages with one query
(`sum by (stage) (rate(sensorstream_records_in_total[1m]))`) and a new stage is a new label
value, not a new panel. Each command builds its own `MetricFamilies` on its own registry and
serves it with `serve_metrics`; tests build as many as they like without sharing counters.

Counters count *committed* work: the producer counts a chunk once its Kafka transaction commits,
the router once its checkpoint commits, the sink once its Delta commit lands. A record retried
after a crash or an aborted transaction is therefore counted once, and the rates of the stages
line up the way the exactly-once guarantee says they should. The names, labels and buckets are
documented in docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, overload
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import Field

from sensorstream.errors import ConfigError

log = logging.getLogger("sensorstream.metrics")

F = TypeVar("F")

Stage = Literal["producer", "router", "sink"]
STAGES: tuple[Stage, ...] = ("producer", "router", "sink")

DeadLetterReason = Literal["bad_row", "encode", "decode", "route", "schema", "expired"]
"""Why a record went to the dead letters, as a closed set: the error text itself names a
value and would make one time series per distinct bad value.
- bad_row: the producer could not turn a SQLite row into a record (NULL, NaN, bad timestamp...)
- encode: a record could not be Avro-encoded (producer, router)
- decode: a message is not Avro in the wire format, or its schema id is unknown (router, sink),
  or its record is not a reading: no provenance fields (router)
- route: one route could not take the record (validation, expression, unsafe topic, a topic
  it may not write) (router)
- schema: the record's schema does not fit its Delta table (sink)
- expired: the topic's retention deleted the record before the stage read it (router, sink);
  counted per offset, and one dead letter per gap names the offsets"""
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = (
    "bad_row",
    "encode",
    "decode",
    "route",
    "schema",
    "expired",
)

# A batch is one producer chunk (up to 5000 rows), one router checkpoint (0.5 s by default) or
# one sink table batch (up to 100k rows, or seconds of records): milliseconds to minutes.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A commit is a Kafka transaction commit, a consumer offset commit or a Delta commit on S3.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Writing a sink table's checkpoint: milliseconds for a young table, seconds for one holding a
# week of compaction's removals (docs/runbook.md, "Removals").
CHECKPOINT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Event time to commit: about 1 s for the emergency route when all is well, hours or days for
# the backlog of an edge node that was offline; both ends need buckets.
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    4 * 3600,
    86400,
    7 * 86400,
)

DEFAULT_METRICS_HOST = "127.0.0.1"
PRODUCER_METRICS_PORT = 9464
ROUTER_METRICS_PORT = 9465
SINK_METRICS_PORT = 9466
MAINTAIN_METRICS_PORT = 9467


def metrics_host_field() -> Any:
    """The `metrics_host` setting of a long-running command (loopback unless told otherwise:
    an edge node should not publish its metrics to every network it is on by accident)."""
    return Field(
        DEFAULT_METRICS_HOST,
        min_length=1,
        description="address the Prometheus endpoint listens on (0.0.0.0: every interface)",
    )


def metrics_port_field(default: int) -> Any:
    """The `metrics_port` setting of a long-running command; 0 turns the endpoint off."""
    return Field(
        default,
        ge=0,
        le=65535,
        description="port of the Prometheus endpoint (/metrics); 0 disables it",
    )


class LatencyCounts:
    """One labelled child of a `BulkHistogram`: cumulative bucket counts and a sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, the last one +Inf
        self._cumulative = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Add many observations at once: one sort and a bisect per bucket, not a lock and a
        scan of the buckets per value as `prometheus_client.Histogram.observe` does."""
        ordered = sorted(values)
        if not ordered:
            return
        counts = [bisect_right(ordered, bound) for bound in self.bounds[:-1]]
        counts.append(len(ordered))
        self.add_cumulative(counts, math.fsum(ordered))

    def add_cumulative(self, counts: Sequence[int], total: float) -> None:
        """Add pre-bucketed observations: `counts[i]` of them are <= `bounds[i]` (so the last
        is how many there were), `total` is their sum. For callers that bucket in bulk, e.g.
        with Arrow compute over a column of event times."""
        if len(counts) != len(self.bounds):
            raise ValueError(f"expected {len(self.bounds)} cumulative counts, got {len(counts)}")
        with self._lock:
            for i, count in enumerate(counts):
                self._cumulative[i] += count
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._cumulative), self._sum


class BulkHistogram(Collector):
    """A histogram family whose observations arrive thousands at a time.

    End-to-end latency is observed for every record a commit covers (up to 100k per sink
    batch); observing them one by one through `prometheus_client.Histogram` costs about a
    microsecond each under a lock. The exposition is the same: `_bucket`, `_sum`, `_count`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = (*sorted(float(b) for b in buckets), math.inf)
        self._children: dict[tuple[str, ...], LatencyCounts] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, **labels: str) -> LatencyCounts:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
        key = tuple(str(labels[name]) for name in self.labelnames)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = LatencyCounts(self.bounds)
        return child

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            counts, total = child.snapshot()
            buckets = [
                (floatToGoString(bound), count)
                for bound, count in zip(self.bounds, counts, strict=True)
            ]
            family.add_metric(list(key), buckets, total)
        return [family]


class lazy_family(Generic[F]):
    """A metric family of `MetricFamilies`, registered on the instance's registry the first time
    a stage uses it. A command then exports its own stage's families and no other: a producer's
    /metrics never lists the sink's buffer or the router's routing version (at a misleading 0).
    Each stage's metrics class touches all of its families when it starts, so they show 0
    rather than "no data" from the first scrape."""

    def __init__(self, build: Callable[[CollectorRegistry], F]) -> None:
        self.build = build
        self.name = build.__name__

    @overload
    def __get__(self, instance: None, owner: type) -> lazy_family[F]: ...
    @overload
    def __get__(self, instance: MetricFamilies, owner: type) -> F: ...
    def __get__(self, instance: MetricFamilies | None, owner: type) -> F | lazy_family[F]:
        if instance is None:
            return self
        with instance._lock:  # two threads' first use must not register the family twice
            built = instance.__dict__.get(self.name)
            if built is None:
                built = instance.__dict__[self.name] = self.build(instance.registry)
        return built


class MetricFamilies:
    """Every metric family of sensorstream, each registered on this one registry when a stage
    first uses it (`lazy_family`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self._lock = threading.Lock()
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory...
        PlatformCollector(registry=registry)  # python_info

    def register_all(self) -> MetricFamilies:
        """Register every family now: the product's whole catalogue, for checks of the docs
        and the dashboard (a command registers only its own stage's)."""
        for name, attribute in vars(type(self)).items():
            if isinstance(attribute, lazy_family):
                getattr(self, name)
        return self

    @lazy_family
    def records_in(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_records_in",
            "Records a stage took in and finished with (committed): SQLite rows for the "
            "producer, input messages for the router and the sink, dead-lettered ones included.",
            ["stage"],
            registry=registry,
        )

    @lazy_family
    def records_out(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_records_out",
            "Records a stage committed to its outputs, per route (the producer has one route, "
            "'readings'; the sink's routes are its tables).",
            ["stage", "route"],
            registry=registry,
        )

    @lazy_family
    def dead_letters(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_dead_letters",
            "Records sent to the dead-letter topic or table instead of their output.",
            ["stage", "reason"],
            registry=registry,
        )

    @lazy_family
    def consumer_lag(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_consumer_lag_records",
            "Records in a partition after the group's committed offset (sink) or after the "
            "consumed position (router: its exactly-once commits are not visible to the "
            "consumer), from librdkafka statistics.",
            ["stage", "topic", "partition"],
            registry=registry,
        )

    @lazy_family
    def batch_duration(registry: CollectorRegistry) -> Histogram:
        return Histogram(
            "sensorstream_batch_duration_seconds",
            "Time to assemble one batch before its commit: a producer chunk (read, encode, "
            "send), a router checkpoint (first record to commit), a sink table batch (decode "
            "and Delta write).",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    @lazy_family
    def commit_duration(registry: CollectorRegistry) -> Histogram:
        return Histogram(
            "sensorstream_commit_duration_seconds",
            "Time to commit one batch: Kafka transaction (producer, router) or consumer "
            "offsets after the Delta commits (sink).",
            ["stage"],
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )

    @lazy_family
    def end_to_end_latency(registry: CollectorRegistry) -> BulkHistogram:
        return BulkHistogram(
            "sensorstream_end_to_end_latency_seconds",
            "From a reading's event time to the commit of the stage that just handled it.",
            ["stage", "route"],
            LATENCY_BUCKETS,
            registry,
        )

    @lazy_family
    def last_commit(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_last_commit_timestamp_seconds",
            "Unix time of the stage's last commit that carried records.",
            ["stage"],
            registry=registry,
        )

    @lazy_family
    def producer_backlog(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_producer_backlog_rows",
            "Rows in the SQLite table after the producer's committed checkpoint (rowid "
            "difference: deleted rows count too).",
            registry=registry,
        )

    @lazy_family
    def producer_offline(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_producer_offline",
            "1 while Kafka or the schema registry is unreachable and SQLite buffers the rows.",
            registry=registry,
        )

    @lazy_family
    def producer_outages(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_producer_outages",
            "Times the producer lost Kafka or the schema registry.",
            registry=registry,
        )

    @lazy_family
    def producer_checkpoint_rowid(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_producer_checkpoint_rowid",
            "The last SQLite rowid covered by a committed transaction.",
            registry=registry,
        )

    @lazy_family
    def producer_info(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_producer_info",
            "Always 1; its labels say which edge node, region and table this producer tails.",
            ["node_id", "region", "table"],
            registry=registry,
        )

    @lazy_family
    def router_routing_version(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_router_routing_version",
            "The routing version in force.",
            registry=registry,
        )

    @lazy_family
    def router_control_bad_messages(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_router_control_bad_messages",
            "Routing control messages this router could not take, by reason: undecodable "
            "(not a routing version; dead-lettered) or refused (a version that does not "
            "compile here, or cannot switch in live).",
            ["reason"],
            registry=registry,
        )

    @lazy_family
    def sink_buffered(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_sink_buffered_records",
            "Records consumed and held in memory until their table's next flush.",
            registry=registry,
        )

    @lazy_family
    def sink_checkpoint_failures(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_sink_checkpoint_failures",
            "Checkpoints of a sink table that could not be written, per route: the table then "
            "opens from its previous checkpoint, replaying more commits, and keeps its expired "
            "log until the next checkpoint is written.",
            ["route"],
            registry=registry,
        )

    @lazy_family
    def sink_checkpoint_duration(registry: CollectorRegistry) -> Histogram:
        return Histogram(
            "sensorstream_sink_checkpoint_duration_seconds",
            "Time to write one checkpoint of a sink table, per route (beside the commits: no "
            "batch waits for it). It grows with the removals the table keeps for "
            "delta.deletedFileRetentionDuration: with continuous compaction, over the table's "
            "first week.",
            ["route"],
            buckets=CHECKPOINT_BUCKETS,
            registry=registry,
        )

    @lazy_family
    def maintain_compactions(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_maintain_compactions",
            "OPTIMIZE commits of `sensorstream maintain`, per table and tier (small, target: a "
            "partition the sink still writes; closed: one it has left).",
            ["table", "tier"],
            registry=registry,
        )

    @lazy_family
    def maintain_files_removed(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_maintain_files_removed",
            "Files its compactions replaced, per table.",
            ["table"],
            registry=registry,
        )

    @lazy_family
    def maintain_files_added(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_maintain_files_added",
            "Files its compactions wrote, per table.",
            ["table"],
            registry=registry,
        )

    @lazy_family
    def maintain_lease_busy(registry: CollectorRegistry) -> Counter:
        return Counter(
            "sensorstream_maintain_lease_busy",
            "Passes that left a table alone because another compaction held its lease.",
            ["table"],
            registry=registry,
        )

    @lazy_family
    def maintain_active_files(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_maintain_active_files",
            "Files of the table's current version, after the last pass (all partitions).",
            ["table"],
            registry=registry,
        )

    @lazy_family
    def maintain_partition_files(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_maintain_max_partition_files",
            "Files of the table's partition with the most, after the last pass.",
            ["table"],
            registry=registry,
        )

    @lazy_family
    def maintain_tables(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_maintain_tables",
            "Delta tables found in the lake on the last pass.",
            registry=registry,
        )

    @lazy_family
    def maintain_pass_duration(registry: CollectorRegistry) -> Histogram:
        return Histogram(
            "sensorstream_maintain_pass_duration_seconds",
            "One pass over every table of the lake: planning, compactions, vacuums.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    @lazy_family
    def maintain_last_pass(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_maintain_last_pass_timestamp_seconds",
            "Unix time the last pass over the lake ended.",
            registry=registry,
        )

    @lazy_family
    def sink_buffered_bytes(registry: CollectorRegistry) -> Gauge:
        return Gauge(
            "sensorstream_sink_buffered_bytes",
            "Bytes of the records held in memory (buffered, and in the batches being written), "
            "as the sink's max_buffered_bytes bound counts them.",
            registry=registry,
        )


class MetricsEndpointSettings(Protocol):
    """What `serve_metrics` reads from a command's settings (a pydantic settings model)."""

    metrics_host: str
    metrics_port: int
    model_fields_set: set[str]


@dataclass
class MetricsEndpoint:
    """A running /metrics endpoint; `close()` frees its port."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _where_to_change(settings: MetricsEndpointSettings) -> str:
    prefix = type(settings).model_config.get("env_prefix", "")  # type: ignore[attr-defined]
    return (
        f"the --metrics-port / --metrics-host flags, {prefix.upper()}METRICS_PORT / "
        f"{prefix.upper()}METRICS_HOST, or metrics_port / metrics_host in the config file"
    )


def start_endpoint(
    registry: CollectorRegistry, settings: MetricsEndpointSettings
) -> MetricsEndpoint | None:
    """Serve `registry` at http://<metrics_host>:<metrics_port>/metrics; None when the port is
    0.

    A port or address that was asked for (flag, environment or file) and cannot be had is a
    configuration error naming the port and the settings to change, raised before the command
    has done anything. The *default* port being taken is not: a second producer on one edge
    node, or two sink instances on one machine, are normal, and the data path must not stop
    over its metrics; that instance runs without an endpoint and says so in a warning.
    """
    host, port = settings.metrics_host, settings.metrics_port
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # EADDRINUSE, EADDRNOTAVAIL, or an unknown host name
        problem = f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        if not settings.model_fields_set & {"metrics_port", "metrics_host"}:
            log.warning(
                "%s; running without a metrics endpoint. Give this instance its own port with %s",
                problem,
                _where_to_change(settings),
            )
            return None
        raise ConfigError(
            f"{problem}. Choose another port (0 disables the endpoint) with "
            f"{_where_to_change(settings)}"
        ) from None
    endpoint = MetricsEndpoint(host, port, server, thread)
    log.info("metrics at %s", endpoint.url)
    return endpoint


@contextlib.contextmanager
def serve_metrics(
    registry: CollectorRegistry, settings: MetricsEndpointSettings
) -> Iterator[MetricsEndpoint | None]:
    """`start_endpoint` for the length of a `with` block."""
    endpoint = start_endpoint(registry, settings)
    try:
        yield endpoint
    finally:
        if endpoint is not None:
            endpoint.close()
