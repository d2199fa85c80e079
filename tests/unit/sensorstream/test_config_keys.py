"""An unknown key anywhere in a config file stops the command with exit 2, naming the file, the
line and the key: a typo (`kafka_bootstrap_serverz:`) must never fall back to a default.

Each command runs as a subprocess against an unreachable broker, so a command that ignored
the typo and went on would fail differently (or not stop), never pass.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sensorstream.config_file import read_yaml
from sensorstream.errors import ConfigError
from sensorstream.settings import ConnectionSettings
from sinks.settings import SinkSettings
from stream_apps.settings import RouterSettings
from tests.processes import sensorstream_cli

UNREACHABLE = "127.0.0.1:1"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE,
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
        "SENSORSTREAM_ROUTER_RETRY_BUDGET_S": "5",
    }
    return sensorstream_cli(env, *args, cwd=cwd)


CASES = {
    # A typo at the top level used to be ignored: the default broker was used instead.
    "producer-top-level": (
        ["produce", "--sqlite", "edge.db", "--once", "--metrics-port", "0"],
        "# edge node\nkafka_bootstrap_serverz: broker:9092\nproducer:\n  node_id: n1\n",
        2,
        "kafka_bootstrap_serverz",
        "did you mean 'kafka_bootstrap_servers'",
    ),
    # A misspelt section name: the whole section would be ignored.
    "router-section-name": (
        ["route", "--once", "--metrics-port", "0"],
        "router:\n  consumer_group: g\nrouterr:\n  commit_interval_s: 2\n",
        3,
        "routerr",
        "did you mean 'router'",
    ),
    # Another command's section is checked too: one file often serves every command.
    "sink-other-section": (
        ["sink", "--once", "--metrics-port", "0"],
        "sink:\n  consumer_group: g\nproducer:\n  node_id: n1\n  chunk_rowz: 10\n",
        5,
        "producer.chunk_rowz",
        "did you mean 'chunk_rows'",
    ),
    # Nested mappings: a table's settings inside `sink: routes:`.
    "sink-nested": (
        ["sink", "--once", "--metrics-port", "0"],
        "sink:\n  routes:\n    emergency:\n      max_latency: 1\n",
        4,
        "sink.routes.emergency.max_latency",
        "did you mean 'max_latency_s'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unknown_key_anywhere_exits_2_naming_file_line_and_key(tmp_path, case):
    args, text, line, key, hint = CASES[case]
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    result = run_cli(*args, "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert f"{config}, line {line}, key '{key}': unknown setting" in result.stderr
    assert hint in result.stderr


def test_known_keys_at_every_level_pass(tmp_path):
    from sensorstream.settings import check_config_keys

    config = tmp_path / "config.yaml"
    config.write_text(
        "KAFKA_BOOTSTRAP_SERVERS: broker:9092\n"
        "schema_registry_url: http://registry:8081\n"
        "consumer_group: shared\n"  # a component field at the top level applies too
        "sink:\n  defaults: {max_rows: 10}\n  routes:\n    emergency: {hourly: true}\n"
        "router:\n  commit_interval_s: 1\n",
        encoding="utf-8",
    )
    sections = {"sink": SinkSettings, "router": RouterSettings}
    check_config_keys(
        read_yaml(config), top_level=[ConnectionSettings, *sections.values()], sections=sections
    )


def test_the_checker_names_the_section_of_a_nested_key(tmp_path):
    from sensorstream.settings import check_config_keys

    config = tmp_path / "config.yaml"
    config.write_text("sink:\n  defaults:\n    max_rows: 10\n    landingg: true\n")
    with pytest.raises(ConfigError, match=r"line 4, key 'sink.defaults.landingg'"):
        check_config_keys(
            read_yaml(config), top_level=[ConnectionSettings], sections={"sink": SinkSettings}
        )
