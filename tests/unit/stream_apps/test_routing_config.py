"""Routing files: the default one loads, and every mistake is one message naming where it is."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from sensorstream.errors import ConfigError
from stream_apps.routing.config import (
    RoutingConfig,
    content_hash,
    load_routing,
    parse_routing,
)
from tests.routing_files import DEFAULT_ROUTES, FIELDS, compile_text, config_error

# ---- the default file -----------------------------------------------------------------------


def test_default_routes_load_against_the_curated_schema() -> None:
    routing = load_routing(DEFAULT_ROUTES, FIELDS)
    assert isinstance(routing.config, RoutingConfig)
    assert routing.config.input == "sensors.readings"
    assert routing.config.dead_letter_topic == "sensors.dlq"
    by_name = {route.name: route for route in routing.routes}
    assert list(by_name) == ["raw", "schematized", "filtered", "emergency", "regional"]
    assert {name for name, r in by_name.items() if r.passthrough} == {"raw", "regional"}
    assert by_name["regional"].topic.fields == ("_region",)
    assert by_name["filtered"].where.text == "anomaly_flag == false and status_code == 0"
    assert [a.name for a in by_name["emergency"].alerts] == ["anomaly", "overheat", "vibration"]
    assert routing.source == str(DEFAULT_ROUTES)
    assert routing.content_hash == content_hash(DEFAULT_ROUTES.read_text(encoding="utf-8"))


def test_content_hash_is_sha256_of_the_text() -> None:
    text = "version: 1\nroutes: [{name: raw, topic: sensors.raw}]\n"
    assert content_hash(text) == hashlib.sha256(text.encode()).hexdigest()
    assert compile_text(text).content_hash == content_hash(text)
    assert content_hash(text + " ") != content_hash(text)


def test_defaults_and_passthrough_override() -> None:
    routing = compile_text(
        """
        version: 1
        routes:
          - name: raw
            topic: sensors.raw
          - name: copy
            topic: sensors.copy
            passthrough: false
        """
    )
    assert routing.config.input == "sensors.readings"
    assert [r.passthrough for r in routing.routes] == [True, False]


# ---- errors name the file, the line, the route and the key -----------------------------------


def test_unknown_field_in_where_names_file_line_route_key(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    text = DEFAULT_ROUTES.read_text(encoding="utf-8").replace(
        'where: "anomaly_flag == false and status_code == 0"',
        'where: "anomaly_flag == false and status_cod == 0"',
    )
    path.write_text(text, encoding="utf-8")
    line = 1 + text.splitlines().index('    where: "anomaly_flag == false and status_cod == 0"')
    with pytest.raises(ConfigError) as info:
        load_routing(path, FIELDS)
    first = str(info.value).splitlines()[0]
    assert first == (
        f"{path}, line {line}, route 'filtered', key 'where': unknown field 'status_cod' "
        "(did you mean 'status_code'?)"
    )


def test_syntax_error_in_where_shows_the_caret() -> None:
    message = config_error(
        """
        version: 1
        routes:
          - name: hot
            topic: sensors.hot
            where: "temperature >> 90"
        """
    )
    lines = message.splitlines()
    assert lines[0].startswith("routes.yaml, line 6, route 'hot', key 'where': unexpected '>'")
    assert lines[2].index("^") == lines[1].index(">> 90") + 1


def test_source_name_of_control_topic_content() -> None:
    message = config_error(
        """
        version: 1
        routes:
          - name: hot
            topic: sensors.hot
            where: "temprature > 90"
        """,
        source="routing version 7",
    )
    assert message.startswith("routing version 7, line 6, route 'hot', key 'where': ")
    assert "did you mean 'temperature'?" in message


def test_bad_yaml() -> None:
    message = config_error("version: 1\nroutes:\n  - name: raw\n    topic: [sensors.raw\n")
    assert message.startswith("routes.yaml, line ")
    assert "invalid YAML" in message
    assert "invalid YAML: unsupported tag" in config_error("version: !!python/name:os.system 1")
    assert "top level must be a mapping" in config_error("- version: 1\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="routing file not found"):
        load_routing(tmp_path / "nope.yaml", FIELDS)


def test_duplicate_route_names() -> None:
    message = config_error(
        """
        version: 1
        routes:
          - name: raw
            topic: sensors.raw
          - name: raw
            topic: sensors.raw2
        """
    )
    assert message == (
        "routes.yaml, line 6, route 'raw', key 'name': duplicate route name 'raw' "
        "(route #1 has it too)"
    )


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("sensors/raw", "contains '/'"),
        ("sensors raw", "contains ' '"),
        ("'..'", "'..' is not allowed"),
        ("'.'", "'.' is not allowed"),
        ("x" * 250, "1 to 249 characters"),
        ("'sensors.{_region'", "unmatched"),
        ("'sensors.{_regoin}'", "unknown field '_regoin'"),
        ("'sensors.{a-b}'", "is not a field name"),
        ("'sensors/{_region}'", "contains '/'"),
        ("sensors.readings", "is the input topic"),
        ("sensors.dlq", "is the dead-letter topic"),
    ],
)
def test_unsafe_topics(topic: str, fragment: str) -> None:
    message = config_error(
        f"""
        version: 1
        routes:
          - name: out
            topic: {topic}
        """
    )
    assert message.startswith("routes.yaml, line 5, route 'out', key 'topic': ")
    assert fragment in message


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    message = config_error(
        """
        version: 1
        routes:
          - name: raw
            topic: sensors.raw
            wher: "anomaly_flag"
        """
    )
    assert message.startswith(
        "routes.yaml, line 6, route 'raw', key 'wher': unknown key 'wher' (did you mean 'where'?)"
    )
    nested = config_error(
        """
        version: 1
        routes:
          - name: strict
            topic: sensors.strict
            validate:
              requierd: [sensor_id]
        """
    )
    assert nested.startswith(
        "routes.yaml, line 7, route 'strict', key 'validate.requierd': unknown key 'requierd' "
        "(did you mean 'required'?)"
    )
    top = config_error("version: 1\nroute:\n  - {name: raw, topic: sensors.raw}\n")
    assert top.startswith("routes.yaml, line 2, key 'route': unknown key 'route'")


@pytest.mark.parametrize("version", ["2", "'1'", "null"])
def test_wrong_version(version: str) -> None:
    message = config_error(f"version: {version}\nroutes:\n  - {{name: raw, topic: sensors.raw}}\n")
    assert message.startswith("routes.yaml, line 1, key 'version': input should be 1")


def test_missing_keys() -> None:
    assert config_error("routes:\n  - {name: raw, topic: t}\n").startswith(
        "routes.yaml, key 'version': missing required key 'version'"
    )
    assert config_error("version: 1\nroutes:\n  - name: raw\n") == (
        "routes.yaml, line 3, route 'raw', key 'topic': missing required key 'topic'"
    )
    assert "at least 1 item" in config_error("version: 1\nroutes: []\n")
    assert "route '#1': must be a mapping" in config_error("version: 1\nroutes:\n  - raw\n")


@pytest.mark.parametrize(
    ("block", "key", "fragment"),
    [
        ("validate:\n  required: [sensorid]", "validate.required.0", "did you mean 'sensor_id'"),
        ("validate:\n  ranges: {temp: [0, 1]}", "validate.ranges.temp", "unknown field 'temp'"),
        ("validate:\n  ranges: {humidity: [9, 1]}", "validate.ranges.humidity", "low end 9"),
        ("validate:\n  ranges: {humidity: [0, .inf]}", "validate.ranges.humidity.1", "finite"),
        ("validate:\n  types: {model: text}", "validate.types.model", "'string'"),
        ("validate:\n  allowed: {model: []}", "validate.allowed.model", "allows no value"),
        ("transform:\n  drop: [serial]", "transform.drop.0", "unknown field 'serial'"),
        ("transform:\n  round: {latitude: 20}", "transform.round.latitude", "less than or equal"),
        (
            "transform:\n  drop: [instance_id]\n  hash: [instance_id]",
            "transform.hash.0",
            "cannot also be hashed",
        ),
        (
            "transform:\n  salt_env: SENSORSTREAM_TEST_NO_SUCH_VAR\n  hash: [instance_id]",
            "transform.salt_env",
            "SENSORSTREAM_TEST_NO_SUCH_VAR is not set",
        ),
        (
            "alerts:\n  - {name: hot, when: 'temperature > 1', severity: high}",
            "alerts.0.severity",
            "'info', 'warning' or 'critical'",
        ),
        (
            "alerts:\n  - {name: hot, when: 'temperature >', severity: info}",
            "alerts.0.when",
            "unexpected end of expression",
        ),
        (
            "alerts:\n  - {name: a, when: 'anomaly_flag', severity: info}\n"
            "  - {name: a, when: 'anomaly_flag', severity: info}",
            "alerts.1.name",
            "duplicate alert name 'a'",
        ),
        (
            "passthrough: true\ntransform:\n  drop: [serial_number]",
            "passthrough",
            "cannot be combined",
        ),
        ("where: 5", "where", "valid string"),
    ],
)
def test_route_block_errors(block: str, key: str, fragment: str) -> None:
    text = "version: 1\nroutes:\n  - name: r\n    topic: sensors.r\n" + textwrap.indent(
        block, "    "
    )
    with pytest.raises(ConfigError) as info:
        parse_routing(text, "routes.yaml", FIELDS)
    message = str(info.value)
    assert f"route 'r', key '{key}': " in message, message
    assert fragment in message, message
    assert message.startswith("routes.yaml, line ")


def test_salt_comes_from_the_environment_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    text = """
        version: 1
        routes:
          - name: f
            topic: sensors.f
            transform: {hash: [instance_id], salt_env: SENSORSTREAM_TEST_SALT}
        """
    monkeypatch.setenv("SENSORSTREAM_TEST_SALT", "pepper")
    routing = compile_text(text)
    record = {"instance_id": "inst-1"}
    digest = routing.route(record).outputs[0].record["instance_id"]
    assert digest == hashlib.sha256(b"inst-1pepper").hexdigest()
    monkeypatch.setenv("SENSORSTREAM_TEST_SALT", "")
    assert "pepper" not in config_error(text)


def test_alert_routes_refuse_inputs_that_already_have_the_alert_fields() -> None:
    text = """
        version: 1
        routes:
          - name: e
            topic: sensors.e
            alerts: [{name: a, when: 'anomaly_flag', severity: info}]
        """
    with pytest.raises(ConfigError, match="already have field 'severity'"):
        parse_routing(textwrap.dedent(text), "routes.yaml", FIELDS | {"severity"})


def test_config_error_is_a_usage_error() -> None:
    """ConfigError maps to exit code 2 in the CLI (DESIGN section 3)."""
    assert issubclass(ConfigError, ValueError)
