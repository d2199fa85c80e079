"""Where routes may write, against the real broker: a templated topic that renders the router's
own input (which would route its outputs again, without end), the dead-letter topic, the
control topic or another route's topic sends that record to the DLQ instead; a file whose
literal topics do any of this, or that gives two routes one topic, is refused before anything
is published, by `routes apply` and by `route --routes` alike (exit 2, naming the file, the
line, the route and the key)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from stream_apps.control import RoutingControl
from tests.integration.stream_apps.test_router import READINGS, produce_nodes
from tests.integration.stream_apps.test_router_foreign_records import committed
from tests.kafka_helpers import AvroDecoder
from tests.processes import sensorstream_cli

pytestmark = pytest.mark.integration

DEADLINE_S = 180  # a router writing into its own input never finishes: this bounds the wait


def cli_env(kafka, schema_registry, unique: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": f"g-{unique}",
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": f"t.{unique}.control",
        "SENSORSTREAM_ROUTER_IDLE_TIMEOUT_S": "2",
    }


def write_routes(tmp_path: Path, unique: str, routes: str, name: str = "routes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"version: 1\ninput: t.{unique}.in\ndead_letter_topic: t.{unique}.dlq\nroutes:\n{routes}"
    )
    return path


def test_a_template_rendering_a_forbidden_topic_dead_letters_the_record(
    kafka, schema_registry, connection, tmp_path, unique
):
    # Each node's region makes the template render one topic: the router's input, its DLQ,
    # its control topic, the raw route's topic, and (allowed) a region's own topic.
    regions = {"in": "the input topic", "dlq": "the dead-letter topic"}
    regions |= {"control": "the routing control topic", "raw": "the topic of route 'raw'"}
    nodes = {f"edge-{region}": region for region in [*regions, "eu-west-1"]}
    produce_nodes(tmp_path, connection, unique, nodes)
    routes = write_routes(
        tmp_path,
        unique,
        f"  - name: raw\n    topic: t.{unique}.raw\n"
        f'  - name: mirror\n    topic: "t.{unique}.{{_region}}"\n',
    )
    env = cli_env(kafka, schema_registry, unique)
    done = sensorstream_cli(env, "route", "--routes", str(routes), "--once", timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr[-3000:]
    inputs = len(nodes) * len(READINGS)
    assert f"routed {inputs} records ({4 * len(READINGS)} dead letters)" in done.stdout

    decoder = AvroDecoder(schema_registry.url)

    def rowids(topic: str) -> Counter:
        records = [decoder.decode(m.value())[1] for m in committed(kafka, topic)]
        return Counter((r["_node_id"], r["_source_rowid"]) for r in records)

    everything = rowids(f"t.{unique}.in")
    assert len(everything) == inputs and set(everything.values()) == {1}  # nothing came back
    assert rowids(f"t.{unique}.raw") == everything  # each record once, none from `mirror`
    eu = {key for key in everything if key[0] == "edge-eu-west-1"}
    assert rowids(f"t.{unique}.eu-west-1") == dict.fromkeys(eu, 1)
    history = RoutingControl(connection.kafka_client_config(), f"t.{unique}.control").history()
    assert [v.version for v in history] == [1]  # nothing but the routing version

    letters = committed(kafka, f"t.{unique}.dlq")
    assert len(letters) == 4 * len(READINGS)
    refused: Counter = Counter()
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["dlq.stage"] == b"router"
        assert headers["sensorstream.route"] == b"mirror"
        region = decoder.decode(letter.value())[1]["_region"]
        error = headers["dlq.error"].decode()
        rendered = f"t.{unique}.{region}"
        assert f"_region value '{region}' renders '{rendered}', {regions[region]}" in error, error
        refused[region] += 1
    assert refused == {region: len(READINGS) for region in regions}


def test_forbidden_or_shared_literal_topics_are_refused_before_routing(
    kafka, schema_registry, tmp_path, unique, connection
):
    env = cli_env(kafka, schema_registry, unique)
    control = RoutingControl(connection.kafka_client_config(), f"t.{unique}.control")

    shared = write_routes(
        tmp_path,
        unique,
        f"  - name: raw\n    topic: t.{unique}.raw\n"
        f"  - name: copy\n    topic: t.{unique}.raw\n    where: anomaly_flag\n",
        "shared.yaml",
    )
    applied = sensorstream_cli(env, "routes", "apply", str(shared), timeout=DEADLINE_S)
    assert applied.returncode == 2, applied.stdout + applied.stderr[-3000:]
    assert (  # librdkafka may log lines of its own before it
        f"sensorstream: {shared}, line 8, route 'copy', key 'topic': "
        f"'t.{unique}.raw' is already the topic of route 'raw' (line 6)"
    ) in applied.stderr, applied.stderr
    assert control.history() == []

    into_control = write_routes(
        tmp_path,
        unique,
        f"  - name: raw\n    topic: t.{unique}.raw\n"
        f"  - name: audit\n    topic: t.{unique}.control\n",
        "into-control.yaml",
    )
    started = sensorstream_cli(
        env, "route", "--routes", str(into_control), "--once", timeout=DEADLINE_S
    )
    assert started.returncode == 2, started.stdout + started.stderr[-3000:]
    assert (
        f"{into_control}, line 8, route 'audit', key 'topic': 't.{unique}.control' is the "
        "routing control topic; a route cannot write there"
    ) in started.stderr, started.stderr
    assert control.history() == []

    # A version an older release published without these checks: the router refuses to start
    # with it (rather than route records twice), and says how to replace it.
    control.publish(shared.read_text(), "an older release", str(shared))
    following = sensorstream_cli(env, "route", "--once", timeout=DEADLINE_S)
    assert following.returncode == 2, following.stdout + following.stderr[-3000:]
    assert (
        f"sensorstream: routing version 1, line 8, route 'copy', key 'topic': 't.{unique}.raw' "
        f"is already the topic of route 'raw' (line 6)"
    ) in following.stderr, following.stderr
    assert "publish it with `sensorstream routes apply FILE`" in following.stderr
