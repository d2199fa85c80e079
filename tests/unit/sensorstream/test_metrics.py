"""The shared metric families, the bulk latency histogram and the /metrics endpoint."""

from __future__ import annotations

import logging
import math
import random
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import SettingsConfigDict

from producers.settings import ProducerSettings
from sensorstream.cli import main
from sensorstream.errors import ConfigError
from sensorstream.metrics import (
    LATENCY_BUCKETS,
    BulkHistogram,
    MetricFamilies,
    metrics_host_field,
    metrics_port_field,
    start_endpoint,
)
from sensorstream.settings import LayeredSettings, load_settings
from sinks.settings import SinkSettings
from stream_apps.settings import RouterSettings
from tests.processes import free_port


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- families --------------------------------------------------------------------------------


def test_each_registry_has_its_own_counters():
    first, second = MetricFamilies(), MetricFamilies()
    first.records_in.labels("producer").inc(5)
    assert (
        samples(first.registry)[
            ("sensorstream_records_in_total", frozenset({("stage", "producer")}))
        ]
        == 5
    )
    assert ("sensorstream_records_in_total", frozenset({("stage", "producer")})) not in samples(
        second.registry
    )


def test_every_family_is_named_sensorstream_and_documented():
    families = list(MetricFamilies().register_all().registry.collect())
    ours = [f for f in families if f.name.startswith("sensorstream_")]
    assert len(ours) == 28
    assert all(f.documentation for f in ours)
    assert {f.name for f in families} >= {"process_resident_memory_bytes", "python_info"}


SHARED_FAMILIES = {
    "sensorstream_records_in",
    "sensorstream_records_out",
    "sensorstream_dead_letters",
    "sensorstream_batch_duration_seconds",
    "sensorstream_commit_duration_seconds",
    "sensorstream_end_to_end_latency_seconds",
    "sensorstream_last_commit_timestamp_seconds",
}
STAGE_FAMILIES = {
    "producer": SHARED_FAMILIES
    | {
        "sensorstream_producer_backlog_rows",
        "sensorstream_producer_offline",
        "sensorstream_producer_outages",
        "sensorstream_producer_checkpoint_rowid",
        "sensorstream_producer_info",
    },
    "router": SHARED_FAMILIES
    | {
        "sensorstream_consumer_lag_records",
        "sensorstream_router_routing_version",
        "sensorstream_router_control_bad_messages",
    },
    "sink": SHARED_FAMILIES
    | {
        "sensorstream_consumer_lag_records",
        "sensorstream_sink_buffered_records",
        "sensorstream_sink_buffered_bytes",
        "sensorstream_sink_checkpoint_failures",
        "sensorstream_sink_checkpoint_duration_seconds",
    },
    # The compactor shares no family with the data path: it moves files, not records.
    "maintain": {
        "sensorstream_maintain_compactions",
        "sensorstream_maintain_files_removed",
        "sensorstream_maintain_files_added",
        "sensorstream_maintain_lease_busy",
        "sensorstream_maintain_active_files",
        "sensorstream_maintain_max_partition_files",
        "sensorstream_maintain_tables",
        "sensorstream_maintain_pass_duration_seconds",
        "sensorstream_maintain_last_pass_timestamp_seconds",
    },
}


def exported_families(stage: str) -> set[str]:
    """The sensorstream families a command's /metrics lists, as its stage's metrics class
    registers them when the command starts."""
    from producers.metrics import ProducerMetrics
    from sinks.maintain_metrics import MaintainMetrics
    from sinks.metrics import SinkMetrics
    from stream_apps.metrics import RouterMetrics

    families = MetricFamilies()
    {
        "producer": ProducerMetrics,
        "router": RouterMetrics,
        "sink": SinkMetrics,
        "maintain": MaintainMetrics,
    }[stage](families)
    text = generate_latest(families.registry).decode()
    return {
        family.name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("sensorstream_") and not family.name.endswith("_created")
    }


@pytest.mark.parametrize("stage", sorted(STAGE_FAMILIES))
def test_each_command_exports_its_own_families_only(stage):
    """A producer's /metrics listing the sink's buffer or the router's routing version (at 0)
    would tell an operator things about an edge node that are not true."""
    assert exported_families(stage) == STAGE_FAMILIES[stage]


def test_the_stages_together_export_every_family():
    every = {
        f.name
        for f in MetricFamilies().register_all().registry.collect()
        if f.name.startswith("sensorstream_")
    }
    assert set().union(*STAGE_FAMILIES.values()) == every


# -- the bulk histogram ----------------------------------------------------------------------


def test_bulk_observations_expose_what_one_by_one_observations_would():
    values = [random.Random(4).expovariate(0.01) for _ in range(5000)] + [0.05, 1.0, 86400.0]
    bulk_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("latency_seconds", "doc", ["route"], LATENCY_BUCKETS, bulk_registry)
    reference = Histogram(
        "latency_seconds", "doc", ["route"], buckets=LATENCY_BUCKETS, registry=reference_registry
    )
    bulk.labels(route="raw").observe_many(values[:3000])
    bulk.labels(route="raw").observe_many(values[3000:])
    bulk.labels(route="raw").observe(7.0)
    for v in [*values, 7.0]:
        reference.labels("raw").observe(v)
    got = samples(bulk_registry)
    expected = {k: v for k, v in samples(reference_registry).items() if "created" not in k[0]}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_cumulative_counts_must_cover_every_bucket():
    histogram = BulkHistogram("x_seconds", "doc", ["stage"], [1, 2], CollectorRegistry())
    child = histogram.labels(stage="sink")
    assert child.bounds == (1.0, 2.0, math.inf)
    child.add_cumulative([1, 2, 3], 4.5)
    with pytest.raises(ValueError, match="expected 3 cumulative counts, got 2"):
        child.add_cumulative([1, 2], 1.0)
    with pytest.raises(ValueError, match="takes the labels stage"):
        histogram.labels(route="raw")
    assert child.snapshot() == ([1, 2, 3], 4.5)


# -- the endpoint ----------------------------------------------------------------------------


class EndpointSettings(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    metrics_host: str = metrics_host_field()
    metrics_port: int = metrics_port_field(0)


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_the_endpoint_serves_the_registry_over_http_and_frees_its_port():
    families = MetricFamilies()
    families.records_out.labels("router", "emergency").inc(3)
    port = free_port()
    endpoint = start_endpoint(families.registry, EndpointSettings(metrics_port=port))
    assert endpoint is not None and endpoint.url == f"http://127.0.0.1:{port}/metrics"
    try:
        text = httpx.get(endpoint.url, timeout=10).text
    finally:
        endpoint.close()
    assert 'sensorstream_records_out_total{route="emergency",stage="router"} 3.0' in text
    with socket.socket() as sock:
        # Free again: nothing listens (SO_REUSEADDR only lets a closed connection's TIME_WAIT by).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_port_zero_serves_nothing():
    assert start_endpoint(MetricFamilies().registry, EndpointSettings()) is None


def test_a_port_in_use_that_was_asked_for_is_a_config_error_naming_it(busy_port):
    settings = EndpointSettings(metrics_port=busy_port)
    with pytest.raises(ConfigError) as raised:
        start_endpoint(MetricFamilies().registry, settings)
    message = str(raised.value)
    assert f"cannot serve metrics on 127.0.0.1:{busy_port}: Address already in use" in message
    assert "--metrics-port" in message and "EXAMPLE_METRICS_PORT" in message
    assert "0 disables" in message


def test_an_address_this_machine_does_not_have_is_a_config_error():
    settings = EndpointSettings(metrics_host="192.0.2.1", metrics_port=free_port())
    with pytest.raises(ConfigError, match=r"cannot serve metrics on 192\.0\.2\.1:\d+: "):
        start_endpoint(MetricFamilies().registry, settings)


def test_the_default_port_in_use_only_costs_the_endpoint(busy_port, caplog):
    class Defaulted(EndpointSettings):
        metrics_port: int = metrics_port_field(busy_port)

    with caplog.at_level(logging.WARNING, "sensorstream.metrics"):
        assert start_endpoint(MetricFamilies().registry, Defaulted()) is None
    assert f"127.0.0.1:{busy_port}" in caplog.text
    assert "running without a metrics endpoint" in caplog.text


@pytest.mark.parametrize(
    "command",
    [["produce", "--sqlite", "edge.db"], ["route"], ["sink"]],
    ids=["produce", "route", "sink"],
)
def test_each_command_stops_before_starting_when_its_port_is_taken(
    command, busy_port, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    code = main([*command, "--metrics-port", str(busy_port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{busy_port}" in err
    assert "--metrics-port" in err


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_cls", "section", "env", "default", "extra"),
    [
        (ProducerSettings, "producer", "SENSORSTREAM_PRODUCER_", 9464, {"sqlite": "edge.db"}),
        (RouterSettings, "router", "SENSORSTREAM_ROUTER_", 9465, {}),
        (SinkSettings, "sink", "SENSORSTREAM_SINK_", 9466, {}),
    ],
)
def test_metrics_settings_follow_the_one_precedence(
    settings_cls, section, env, default, extra, monkeypatch, tmp_path
):
    for name in ("METRICS_PORT", "METRICS_HOST"):
        monkeypatch.delenv(env + name, raising=False)
    settings = load_settings(settings_cls, overrides=extra)
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", default)
    config = tmp_path / "config.yaml"
    config.write_text(f"{section}:\n  metrics_port: 7001\n  metrics_host: 0.0.0.0\n")
    from_yaml = load_settings(settings_cls, config_file=config, section=section, overrides=extra)
    assert (from_yaml.metrics_host, from_yaml.metrics_port) == ("0.0.0.0", 7001)
    monkeypatch.setenv(env + "METRICS_PORT", "7002")
    from_env = load_settings(settings_cls, config_file=config, section=section, overrides=extra)
    assert from_env.metrics_port == 7002
    from_flag = load_settings(
        settings_cls,
        config_file=config,
        section=section,
        overrides={**extra, "metrics_port": 0},
    )
    assert from_flag.metrics_port == 0
    monkeypatch.setenv(env + "METRICS_PORT", "70000")
    with pytest.raises(ConfigError, match=f"environment variable {env}METRICS_PORT: .*65535"):
        load_settings(settings_cls, overrides=extra)


def test_a_port_set_in_the_environment_counts_as_asked_for(busy_port, monkeypatch):
    monkeypatch.setenv("SENSORSTREAM_SINK_METRICS_PORT", str(busy_port))
    settings = load_settings(SinkSettings)
    with pytest.raises(ConfigError, match="SENSORSTREAM_SINK_METRICS_PORT"):
        start_endpoint(MetricFamilies().registry, settings)
