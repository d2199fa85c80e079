"""A routing file's fields are checked against ITS input topic, the same way at router start-up
(`route --routes`), by `routes apply` and by a running router's live switch: a field only that
topic's records carry is accepted (and routes on its values), and a field they do not carry
is refused by all three (exit 2 naming the file, the field, the topic and the remedy; the live
switch keeps the version in force and says why), never accepted to route nothing."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from schemas.avro_codec import AvroEncoder
from schemas.registry import SchemaRegistry
from schemas.value_schema import PROVENANCE_FIELDS
from sensorstream.metrics import MetricFamilies
from sensorstream.topics import TopicSpec, ensure_topics
from stream_apps.app import RouterApp
from stream_apps.control import RoutingControl
from stream_apps.metrics import RouterMetrics
from tests.integration.stream_apps.test_router_foreign_records import committed
from tests.integration.stream_apps.test_router_live import (
    Names,
    Running,
    router_settings,
    wait_until,
)
from tests.integration.stream_apps.test_router_topic_safety import DEADLINE_S, cli_env
from tests.kafka_helpers import AvroDecoder
from tests.processes import sensorstream_cli

pytestmark = pytest.mark.integration

REMEDY = "correct the field name, or set `input:` to the topic whose records carry it"


def gust_field(names: Names) -> str:
    """A field only this test's input topic has: never a field of sensors.readings."""
    return f"gust_{names.unique}"


def register_wind_readings(connection, names: Names) -> tuple[dict, int]:
    """The input topic's value schema: readings of wind sensors (a gust speed, no vibration,
    none of the curated reading's measurements). Returns the schema and its id."""
    schema = {
        "type": "record",
        "name": "WindReading",
        "namespace": "sensorstream.test",
        "fields": [
            {"name": "sensor_id", "type": "string"},
            {"name": gust_field(names), "type": ["null", "double"], "default": None},
            *PROVENANCE_FIELDS,
        ],
    }
    registry = SchemaRegistry(connection.schema_registry_config())
    return schema, registry.register_value_schema(names.input, schema)


def routing_file(tmp_path, names: Names, where: str, name: str):
    """A routing file reading this test's input: every record to raw, `where` to gusty."""
    path = tmp_path / name
    path.write_text(
        f"version: 1\ninput: {names.input}\ndead_letter_topic: {names.dlq}\nroutes:\n"
        f"  - name: raw\n    topic: {names.topic('raw')}\n"
        f'  - name: gusty\n    topic: {names.topic("gusty")}\n    where: "{where}"\n',
        encoding="utf-8",
    )
    return path


def assert_refused_loudly(message: str, path, names: Names) -> None:
    assert str(path) in message, message
    assert "route 'gusty', key 'where': unknown field 'vibration'" in message, message
    assert f"input topic {names.input}" in message, message
    assert REMEDY in message, message


def test_routes_apply_checks_fields_against_the_files_input_topic(
    kafka, schema_registry, connection, tmp_path, unique
):
    names = Names(unique)
    register_wind_readings(connection, names)
    env = cli_env(kafka, schema_registry, unique)
    control = RoutingControl(connection.kafka_client_config(), names.control)

    # vibration is a field of sensors.readings, not of this input topic's records.
    shaking = routing_file(tmp_path, names, "vibration > 50", "shaking.yaml")
    refused = sensorstream_cli(env, "routes", "apply", str(shaking))
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    assert_refused_loudly(refused.stderr, shaking, names)
    assert control.history() == []

    gusty = routing_file(tmp_path, names, f"{gust_field(names)} > 20", "gusty.yaml")
    applied = sensorstream_cli(env, "routes", "apply", str(gusty))
    assert applied.returncode == 0, applied.stdout + applied.stderr[-3000:]
    assert f"applied {gusty} as routing version 1" in applied.stdout
    assert [v.content for v in control.history()] == [gusty.read_text()]


def test_router_start_checks_fields_against_the_files_input_topic(
    kafka, schema_registry, connection, tmp_path, unique
):
    names = Names(unique)
    schema, schema_id = register_wind_readings(connection, names)
    env = cli_env(kafka, schema_registry, unique)
    control = RoutingControl(connection.kafka_client_config(), names.control)

    shaking = routing_file(tmp_path, names, "vibration > 50", "shaking.yaml")
    refused = sensorstream_cli(env, "route", "--routes", str(shaking), "--once")
    assert refused.returncode == 2, refused.stdout + refused.stderr[-3000:]
    assert_refused_loudly(refused.stderr, shaking, names)
    assert control.history() == []

    # Two readings on the input: one gust above the threshold, one below.
    ensure_topics(connection.kafka_client_config(), [TopicSpec(names.input, 1)])
    encoder = AvroEncoder(schema, schema_id)
    provenance = {"_node_id": f"wind-{unique}", "_region": "eu-north-1", "_source_table": "wind"}
    producer = Producer({**connection.kafka_client_config(), "acks": "all"})
    for rowid, gust in ((1, 31.5), (2, 4.0)):
        record = {"sensor_id": "w1", gust_field(names): gust, **provenance, "_source_rowid": rowid}
        producer.produce(names.input, key=b"w1", value=encoder.encode(record))
    assert producer.flush(60) == 0

    gusty = routing_file(tmp_path, names, f"{gust_field(names)} > 20", "gusty.yaml")
    routed = sensorstream_cli(env, "route", "--routes", str(gusty), "--once", timeout=DEADLINE_S)
    assert routed.returncode == 0, routed.stdout + routed.stderr[-3000:]
    assert "routed 2 records (0 dead letters)" in routed.stdout, routed.stdout
    decoder = AvroDecoder(schema_registry.url)
    out = [decoder.decode(m.value())[1] for m in committed(kafka, names.topic("gusty"))]
    assert [(r["_source_rowid"], r[gust_field(names)]) for r in out] == [(1, 31.5)]


def test_live_switch_checks_fields_against_the_versions_input_topic(
    kafka, schema_registry, connection, tmp_path, unique, caplog
):
    names = Names(unique)
    register_wind_readings(connection, names)
    first = routing_file(tmp_path, names, "sensor_id == 'w1'", "first.yaml")
    families = MetricFamilies()
    app = RouterApp(router_settings(names, first), connection, RouterMetrics(families))
    control = RoutingControl(connection.kafka_client_config(), names.control)
    running = Running(app).start()
    try:
        wait_until(lambda: app.router is not None, 180, "the router to start")
        assert app.router.active.version == 1

        shaking = routing_file(tmp_path, names, "vibration > 50", "shaking.yaml")
        gusty = routing_file(tmp_path, names, f"{gust_field(names)} > 20", "gusty.yaml")
        with caplog.at_level("ERROR", logger="sensorstream.router"):
            # Published as an older release would have: without checking the fields.
            control.publish(shaking.read_text(), "operator", str(shaking))
            control.publish(gusty.read_text(), "operator", str(gusty))
            wait_until(lambda: app.router.active.version == 3, 120, "version 3 in force")
        assert running.alive()
    finally:
        running.stop()

    refused = families.registry.get_sample_value(
        "sensorstream_router_control_bad_messages_total", {"reason": "refused"}
    )
    assert refused == 1  # version 2, never in force
    refusals = [r.getMessage() for r in caplog.records if "routing version 2" in r.getMessage()]
    assert len(refusals) == 1, caplog.text
    assert "keeping version 1" in refusals[0], refusals[0]
    assert_refused_loudly(refusals[0], shaking, names)


def test_a_published_version_naming_a_field_its_input_lacks_is_refused_at_start_and_rollback(
    kafka, schema_registry, connection, tmp_path, unique
):
    """A version an older release published unchecked: a router refuses to start with it and
    `routes rollback` refuses to bring it back, both naming the field, the topic and the
    remedy."""
    names = Names(unique)
    register_wind_readings(connection, names)
    ensure_topics(connection.kafka_client_config(), [TopicSpec(names.input, 1)])
    env = cli_env(kafka, schema_registry, unique)
    control = RoutingControl(connection.kafka_client_config(), names.control)
    control.ensure_topic()
    shaking = routing_file(tmp_path, names, "vibration > 50", "shaking.yaml")
    control.publish(shaking.read_text(), "an older release", str(shaking))

    started = sensorstream_cli(env, "route", "--once", timeout=DEADLINE_S)
    assert started.returncode == 2, started.stdout + started.stderr[-3000:]
    assert "routing version 1, line 9, route 'gusty', key 'where'" in started.stderr
    assert_refused_loudly(started.stderr.replace("routing version 1", str(shaking)), shaking, names)
    assert "publish it with `sensorstream routes apply FILE`" in started.stderr

    gusty = routing_file(tmp_path, names, f"{gust_field(names)} > 20", "gusty.yaml")
    assert sensorstream_cli(env, "routes", "apply", str(gusty)).returncode == 0
    rolled = sensorstream_cli(env, "routes", "rollback", "1")
    assert rolled.returncode == 2, rolled.stdout + rolled.stderr[-3000:]
    assert "routing version 1, line 9, route 'gusty', key 'where'" in rolled.stderr
    assert f"input topic {names.input}" in rolled.stderr and REMEDY in rolled.stderr
    assert [v.version for v in control.history()] == [1, 2]
