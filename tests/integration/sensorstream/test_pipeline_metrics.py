"""The router's and the sink's Prometheus endpoints, scraped over HTTP after real readings went
through them: the counters are the records each stage committed, per route."""

from __future__ import annotations

import pytest

from sensorstream.metrics import MetricFamilies, serve_metrics
from sinks.app import DeltaSink
from sinks.metrics import SinkMetrics
from stream_apps.app import RouterApp
from stream_apps.metrics import RouterMetrics
from tests.integration.producers.test_producer_metrics import scrape, value
from tests.integration.sinks.test_sink import sink_settings
from tests.integration.stream_apps.test_router import (
    EXPECTED,
    READINGS,
    produce_nodes,
    router_settings,
    routing_file,
)
from tests.processes import free_port

pytestmark = pytest.mark.integration

NODES = {"edge-a": "eu-west-1", "edge-b": "us-east-1"}


def test_router_metrics_count_what_each_route_received(connection, tmp_path, unique):
    produce_nodes(tmp_path, connection, unique, NODES)
    settings = router_settings(
        routing_file(tmp_path, unique), unique, metrics_port=free_port(), metrics_host="127.0.0.1"
    )
    families = MetricFamilies()
    with serve_metrics(families.registry, settings) as endpoint:
        result = RouterApp(settings, connection, RouterMetrics(families)).run()
        samples = scrape(endpoint.url)

    inputs = len(NODES) * len(READINGS)
    assert result.routed == inputs
    assert value(samples, "sensorstream_records_in_total", stage="router") == inputs
    for route, names in {**EXPECTED, "regional": set(READINGS)}.items():
        expected = len(NODES) * len(names)
        assert value(samples, "sensorstream_records_out_total", stage="router", route=route) == (
            expected
        ), route
        # Every routed record's latency from its event time (readings of 2026-11-20: days).
        count = value(
            samples, "sensorstream_end_to_end_latency_seconds_count", stage="router", route=route
        )
        assert count == expected, route
    # out_of_range fails schematized's validation, once per node.
    dead = value(samples, "sensorstream_dead_letters_total", stage="router", reason="route")
    assert dead == len(NODES) == result.dead_letters
    assert value(samples, "sensorstream_router_routing_version") == 1
    assert value(samples, "sensorstream_commit_duration_seconds_count", stage="router") >= 1


def test_sink_metrics_count_the_rows_each_table_received(connection, tmp_path, unique):
    produce_nodes(tmp_path, connection, unique, NODES)
    RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    routed = [f"t.{unique}.{route}" for route in (*EXPECTED, "dlq")]
    settings = sink_settings(unique, metrics_port=free_port(), metrics_host="127.0.0.1").model_copy(
        update={"topics": [*routed, f"^t\\.{unique}\\.regional\\..+"]}
    )
    families = MetricFamilies()
    with serve_metrics(families.registry, settings) as endpoint:
        result = DeltaSink(settings, connection, metrics=SinkMetrics(families)).run()
        samples = scrape(endpoint.url)

    per_route = {route: len(NODES) * len(names) for route, names in EXPECTED.items()}
    per_route["regional"] = len(NODES) * len(READINGS)
    dead = len(NODES)  # out_of_range, dead-lettered by the router's schematized validation
    assert value(samples, "sensorstream_records_in_total", stage="sink") == (
        sum(per_route.values()) + dead
    )
    for route, rows in per_route.items():
        assert value(samples, "sensorstream_records_out_total", stage="sink", route=route) == rows
        count = value(
            samples, "sensorstream_end_to_end_latency_seconds_count", stage="sink", route=route
        )
        assert count == rows, route
    assert value(samples, "sensorstream_records_out_total", stage="sink", route="dlq") == dead
    assert sum(result.rows.values()) == sum(per_route.values()) + dead
    assert value(samples, "sensorstream_commit_duration_seconds_count", stage="sink") >= 1
    assert value(samples, "sensorstream_sink_buffered_records") == 0
