"""The sink's per-route table settings: layers that each change only the keys they set."""

from __future__ import annotations

import pytest

from sensorstream.errors import ConfigError
from sensorstream.settings import load_settings
from sinks.settings import SinkSettings, TableSettings


def test_shipped_flush_latencies():
    settings = SinkSettings()
    assert settings.table_settings("emergency").max_latency_s == 1.0
    assert settings.table_settings("dlq").max_latency_s == 5.0
    assert settings.table_settings("raw").max_latency_s == 3.0


def test_a_route_entry_keeps_the_built_in_values_it_does_not_set(tmp_path):
    config = tmp_path / "sink.yaml"
    config.write_text(
        "sink:\n"
        "  defaults: {max_rows: 5000, max_latency_s: 10}\n"
        "  routes:\n"
        "    emergency: {hourly: true}\n"
        "    raw: {max_rows: 7}\n"
    )
    settings = load_settings(SinkSettings, config_file=config, section="sink")
    emergency = settings.table_settings("emergency")
    assert (emergency.hourly, emergency.max_latency_s, emergency.max_rows) == (True, 1.0, 5000)
    raw = settings.table_settings("raw")
    assert (raw.max_rows, raw.max_latency_s) == (7, 10.0)
    assert settings.table_settings("dlq").max_latency_s == 5.0  # untouched by `defaults`


def test_a_route_may_override_a_built_in_value():
    settings = SinkSettings(routes={"emergency": TableSettings(max_latency_s=0.5)})
    assert settings.table_settings("emergency").max_latency_s == 0.5


def test_landing_with_a_route_uri_of_its_own_is_refused(tmp_path):
    config = tmp_path / "sink.yaml"
    config.write_text(
        "sink:\n  routes:\n    regional: {uri: 's3://eu-bucket/{region}', landing: true}\n"
    )
    with pytest.raises(ConfigError, match="route regional: landing with a table uri"):
        load_settings(SinkSettings, config_file=config, section="sink")
