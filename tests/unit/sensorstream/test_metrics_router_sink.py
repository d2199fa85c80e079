"""The router's and the sink's instrumentation: what they publish, and when."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.avro_codec import AvroDecoder
from schemas.dead_letter import DeadLetter
from schemas.registry import SchemaRegistry
from sensorstream.errors import PipelineError
from sensorstream.metrics import MetricFamilies
from sinks.metrics import SinkMetrics, dead_row_reason, latency_buckets
from sinks.records import DeadRow, SinkMessage
from stream_apps.dispatch import (
    HEADER_ROUTE,
    HEADER_ROUTES_VERSION,
    ActiveRouting,
    MessageRouter,
    Outgoing,
)
from stream_apps.metrics import RouterMetrics, event_time_s, observe_checkpoints

E2E = "sensorstream_end_to_end_latency_seconds"


def scrape(families: MetricFamilies) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(families.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# -- router ----------------------------------------------------------------------------------


def output(route: str, topic: str) -> Outgoing:
    return Outgoing(topic, b"avro", [(HEADER_ROUTE, route.encode()), (HEADER_ROUTES_VERSION, b"1")])


def route_failure(route: str) -> Outgoing:
    letter = DeadLetter("router", f"{route}: temperature 300 above 125", {"offset": "9"}, b"v")
    headers = [*letter.headers("2026-11-23T08:00:00+00:00"), (HEADER_ROUTE, route.encode())]
    return Outgoing("sensors.dlq", b"v", headers)


@pytest.fixture
def router() -> MessageRouter:
    """A router whose decoder never reaches a registry: for messages that are not Avro."""
    decoder = AvroDecoder(SchemaRegistry({"url": "http://127.0.0.1:1"}))
    return MessageRouter(ActiveRouting(1, None), decoder, None, "sensors.dlq")  # type: ignore[arg-type]


def test_router_counts_publish_when_the_checkpoint_commits(router):
    families = MetricFamilies()
    metrics = RouterMetrics(families)
    now = time.time()
    metrics.routed(
        [
            output("raw", "sensors.raw"),
            output("emergency", "sensors.emergency"),
            output("regional", "sensors.regional.eu-west-1"),
        ],
        event_time=now - 2.0,
    )
    metrics.routed(
        [output("raw", "sensors.raw"), output("regional", "sensors.regional.us-east-1")],
        event_time=now - 0.2,
    )
    metrics.routed([output("raw", "sensors.raw"), route_failure("schematized")], now - 0.2)
    junk = router.route(b"not avro", ("sensors.readings", 0, 41))
    metrics.routed(junk, event_time=None)

    before = scrape(families)
    assert value(before, "sensorstream_records_in_total", stage="router") == 0
    assert (
        "sensorstream_records_out_total",
        frozenset({("stage", "router"), ("route", "raw")}),
    ) not in before

    metrics.checkpoint_committed(0.03)
    after = scrape(families)
    assert value(after, "sensorstream_records_in_total", stage="router") == 4
    out = {
        dict(labels)["route"]: v
        for (name, labels), v in after.items()
        if name == "sensorstream_records_out_total"
    }
    assert out == {"raw": 3, "emergency": 1, "regional": 2}
    dead = {"stage": "router"}
    assert value(after, "sensorstream_dead_letters_total", **dead, reason="route") == 1
    assert value(after, "sensorstream_dead_letters_total", **dead, reason="decode") == 1
    assert value(after, f"{E2E}_count", stage="router", route="raw") == 3
    assert value(after, f"{E2E}_bucket", stage="router", route="raw", le="1.0") == 2
    assert value(after, f"{E2E}_bucket", stage="router", route="emergency", le="1.0") == 0
    assert value(after, f"{E2E}_bucket", stage="router", route="emergency", le="2.0") == 0
    assert value(after, f"{E2E}_bucket", stage="router", route="emergency", le="5.0") == 1
    assert value(after, "sensorstream_commit_duration_seconds_sum", stage="router") == 0.03
    assert value(after, "sensorstream_batch_duration_seconds_count", stage="router") == 1
    assert value(after, "sensorstream_last_commit_timestamp_seconds", stage="router") >= now

    metrics.checkpoint_committed(0.01)  # an empty checkpoint: nothing to publish
    assert (
        value(scrape(families), "sensorstream_commit_duration_seconds_count", stage="router") == 1
    )


def test_a_failed_checkpoint_is_not_counted():
    families = MetricFamilies()
    metrics = RouterMetrics(families)
    metrics.routed([output("raw", "sensors.raw")], time.time())
    metrics.checkpoint_failed()
    metrics.routed([output("raw", "sensors.raw")], time.time())  # routed again after restart
    metrics.checkpoint_committed(0.02)
    samples = scrape(families)
    assert value(samples, "sensorstream_records_in_total", stage="router") == 1
    assert value(samples, "sensorstream_records_out_total", stage="router", route="raw") == 1


def test_router_version_and_event_times():
    families = MetricFamilies()
    active = ActiveRouting(4, None)  # type: ignore[arg-type]
    RouterMetrics(families).follow_routing_version(lambda: active.version)
    assert value(scrape(families), "sensorstream_router_routing_version") == 4
    active.stage(5, None)  # type: ignore[arg-type]
    assert value(scrape(families), "sensorstream_router_routing_version") == 5
    moment = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert event_time_s(moment) == moment.timestamp()
    assert event_time_s(int(moment.timestamp()) * 1_000_000) == moment.timestamp()
    assert event_time_s(None) is None


# -- sink ------------------------------------------------------------------------------------


def message(offset: int) -> SinkMessage:
    return SinkMessage("sensors.raw", 0, offset, 0, None, b"x", None)


def test_sink_publishes_table_writes_dead_rows_and_offset_commits():
    families = MetricFamilies()
    metrics = SinkMetrics(families)
    now = datetime.now(UTC)
    times = pa.chunked_array(
        [
            pa.array(
                [now - timedelta(seconds=s) for s in (0.3, 0.7, 40, 7200)],
                pa.timestamp("us", "UTC"),
            )
        ]
    )
    metrics.batch_landed(
        "raw", messages=6, rows=4, seconds=1.5, table=pa.table({"timestamp": times})
    )
    letters = pa.table({"message_time": times.slice(0, 2)})  # the dead-letter table's columns
    metrics.batch_landed("dlq", messages=2, rows=2, seconds=0.2, table=letters)
    metrics.batch_landed("filtered", messages=1, rows=0, seconds=0.1, table=None)
    metrics.dead_rows(
        [
            DeadRow(message(1), "not Avro in the Confluent wire format: magic byte 0x7b"),
            DeadRow(message(2), "schema id 7 does not fit table s3://lake/raw: co2 is a string"),
            DeadRow(message(3), "no event time (timestamp is null)"),
        ]
    )
    metrics.offsets_committed(0.004)
    metrics.buffered(1200, 530_000)
    metrics.checkpoint_failed("emergency")
    metrics.checkpoint_failed("emergency")
    metrics.checkpoint_written("raw", 0.04)
    metrics.checkpoint_written("raw", 1.6)
    samples = scrape(families)
    assert value(samples, "sensorstream_records_in_total", stage="sink") == 9
    assert value(samples, "sensorstream_records_out_total", stage="sink", route="raw") == 4
    assert value(samples, "sensorstream_records_out_total", stage="sink", route="dlq") == 2
    dead = {"stage": "sink"}
    assert value(samples, "sensorstream_dead_letters_total", **dead, reason="decode") == 2
    assert value(samples, "sensorstream_dead_letters_total", **dead, reason="schema") == 1
    raw = {"stage": "sink", "route": "raw"}
    assert value(samples, f"{E2E}_count", **raw) == 4
    assert value(samples, f"{E2E}_bucket", **raw, le="0.5") == 1
    assert value(samples, f"{E2E}_bucket", **raw, le="1.0") == 2
    assert value(samples, f"{E2E}_bucket", **raw, le="60.0") == 3
    assert value(samples, f"{E2E}_bucket", **raw, le="3600.0") == 3
    assert value(samples, f"{E2E}_bucket", **raw, le="14400.0") == 4
    assert 7241 < value(samples, f"{E2E}_sum", **raw) < 7300
    assert (E2E + "_count", frozenset({("stage", "sink"), ("route", "dlq")})) not in samples
    assert value(samples, "sensorstream_records_out_total", stage="sink", route="filtered") == 0
    assert value(samples, "sensorstream_batch_duration_seconds_count", stage="sink") == 3
    assert value(samples, "sensorstream_commit_duration_seconds_sum", stage="sink") == 0.004
    assert value(samples, "sensorstream_sink_buffered_records") == 1200
    assert value(samples, "sensorstream_sink_buffered_bytes") == 530_000
    failures = "sensorstream_sink_checkpoint_failures_total"
    assert value(samples, failures, route="emergency") == 2
    checkpoint = "sensorstream_sink_checkpoint_duration_seconds"
    assert value(samples, f"{checkpoint}_count", route="raw") == 2
    assert value(samples, f"{checkpoint}_bucket", route="raw", le="0.05") == 1
    assert value(samples, f"{checkpoint}_bucket", route="raw", le="2.5") == 2


def test_latency_buckets_skip_nulls_and_take_any_unit():
    now = 1_800_000_000.0
    millis = pa.array([int((now - 3) * 1000), None], pa.timestamp("ms"))
    counts, total = latency_buckets(millis, (1.0, 5.0, float("inf")), now)
    assert (counts, total) == ([0, 1, 1], 3.0)
    assert (
        latency_buckets(pa.array([None], pa.timestamp("us", "UTC")), (float("inf"),), now) is None
    )


def test_dead_row_reasons():
    assert (
        dead_row_reason(DeadRow(message(1), "the message has no value (a tombstone)")) == "decode"
    )
    assert (
        dead_row_reason(DeadRow(message(1), "schema id 3 does not fit table ./lake/raw: x"))
        == "schema"
    )


def test_checkpoint_timing_refuses_a_quixstreams_without_the_hook():
    with pytest.raises(PipelineError, match=r"processing context has no commit_checkpoint\(\)"):
        observe_checkpoints(object(), RouterMetrics())  # type: ignore[arg-type]
