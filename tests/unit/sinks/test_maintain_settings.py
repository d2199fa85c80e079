"""`sensorstream maintain`'s settings: one precedence (flag > environment > YAML `maintain:` >
defaults), unknown YAML keys refused, and a metrics endpoint with only its own families."""

from __future__ import annotations

import pytest

from sensorstream.cli import main
from sensorstream.errors import ConfigError
from sensorstream.metrics import MAINTAIN_METRICS_PORT, MetricFamilies
from sensorstream.settings import load_settings
from sinks.maintain_metrics import MaintainMetrics
from sinks.maintain_settings import MaintainSettings


def test_precedence(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("maintain:\n  interval_s: 3\n  window_s: 30\n  max_files_per_tier: 7\n")
    monkeypatch.setenv("SENSORSTREAM_MAINTAIN_WINDOW_S", "40")
    monkeypatch.setenv("SENSORSTREAM_MAINTAIN_INTERVAL_S", "4")
    settings = load_settings(
        MaintainSettings, config_file=config, section="maintain", overrides={"interval_s": 5}
    )
    assert (settings.interval_s, settings.window_s, settings.max_files_per_tier) == (5, 40, 7)
    assert settings.lease_s == 900 and settings.metrics_port == MAINTAIN_METRICS_PORT
    assert settings.open_tier_bytes == [2**20, 16 * 2**20, 128 * 2**20]


def test_tiers_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("SENSORSTREAM_MAINTAIN_OPEN_TIER_BYTES", "[16000, 64000]")
    assert load_settings(MaintainSettings).open_tier_bytes == [16000, 64000]


def test_unknown_yaml_key_exits_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("maintain:\n  interval_s: 3\n  max_files_per_teir: 7\n")
    assert main(["maintain", "--once", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "max_files_per_teir" in err and "max_files_per_tier" in err


def test_tier_sizes_must_grow():
    with pytest.raises(ConfigError, match="grow tier by tier"):
        load_settings(MaintainSettings, overrides={"open_tier_bytes": [2**20, 2**19]})
    with pytest.raises(ConfigError, match="grow tier by tier"):
        load_settings(MaintainSettings, overrides={"open_tier_bytes": [2**31]})


def test_metrics_only_its_own_families():
    families = MetricFamilies()
    MaintainMetrics(families)
    names = {m.name for m in families.registry.collect()}
    ours = {n for n in names if n.startswith("sensorstream_")}
    assert ours and all(n.startswith("sensorstream_maintain_") for n in ours)
