"""The router against the real broker and registry: for known readings each route's topic holds
exactly the records it should, bad input ends in the dead-letter topic with its source, and a
kill -9 mid-stream leaves every output exactly once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from producers.simulator import create_readings_table
from producers.tailer import EdgeTailer
from schemas.avro_codec import AvroEncoder
from schemas.registry import SchemaRegistry
from stream_apps.app import DEFAULT_ROUTES, RouterApp
from stream_apps.settings import RouterSettings
from tests.edge_nodes import fleet_node_settings
from tests.integration.producers.test_producer import START, simulate, sqlite_rows
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

ROUTES = ("raw", "schematized", "filtered", "emergency")


def routing_file(tmp_path: Path, unique: str) -> Path:
    """The default routes, on topics of this test's own."""
    text = DEFAULT_ROUTES.read_text()
    text = text.replace("input: sensors.readings", f"input: t.{unique}.in")
    text = text.replace("dead_letter_topic: sensors.dlq", f"dead_letter_topic: t.{unique}.dlq")
    text = text.replace("sensors.regional.{_region}", f"t.{unique}.regional.{{_region}}")
    for route in ROUTES:
        text = text.replace(f"topic: sensors.{route}", f"topic: t.{unique}.{route}")
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def router_settings(routes: Path, unique: str, **overrides) -> RouterSettings:
    return RouterSettings(
        routes=routes,
        consumer_group=f"g-{unique}",
        control_topic=f"t.{unique}.control",
        once=True,
        **overrides,
    )


# Readings written to SQLite, named by what they should trigger.
READINGS = {
    "normal": dict(temperature=21.0, vibration=1.0, anomaly_flag=0, status_code=0),
    "anomaly": dict(
        temperature=25.0, vibration=1.0, anomaly_flag=1, status_code=1, anomaly_type="spike"
    ),
    "hot": dict(temperature=95.0, vibration=1.0, anomaly_flag=0, status_code=0),
    "out_of_range": dict(temperature=180.5, vibration=1.0, anomaly_flag=0, status_code=0),
    "shaking": dict(
        temperature=22.0, vibration=60.0, anomaly_flag=0, status_code=0, location=" hall 3 "
    ),
    "degraded": dict(temperature=22.0, vibration=1.0, anomaly_flag=0, status_code=2),
}
EXPECTED = {  # route -> names; regional gets every reading, under its node's region
    "raw": set(READINGS),
    "schematized": set(READINGS) - {"out_of_range"},
    "filtered": {"normal", "hot", "out_of_range", "shaking"},
    "emergency": {"anomaly", "hot", "out_of_range", "shaking"},
}
SEVERITY = {
    "anomaly": ("warning", ["anomaly"]),
    "hot": ("critical", ["overheat"]),
    "out_of_range": ("critical", ["overheat"]),
    "shaking": ("critical", ["vibration"]),
}


def write_node(db: Path, node: str) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    create_readings_table(conn)
    for i, (name, values) in enumerate(READINGS.items()):
        row = {
            "timestamp": f"2026-11-20T08:00:0{i}+00:00",
            "sensor_id": f"{node}-{name}",
            "humidity": 40.0,
            "pressure": 1.013,  # bar, as the default routes expect
            "voltage": 230.0,
            "latitude": 52.123456,
            "longitude": 4.987654,
            "serial_number": f"SN-{node}-{i}",
            "instance_id": f"i-{node}",
            "location": "hall 3",
            **values,
        }
        columns = ", ".join(row)
        conn.execute(
            f"INSERT INTO sensor_readings ({columns}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    conn.commit()
    conn.close()


def produce_nodes(tmp_path, connection, unique, nodes: dict[str, str]) -> None:
    for node, region in nodes.items():
        db = tmp_path / f"{node}.db"
        write_node(db, node)
        EdgeTailer(fleet_node_settings(db, node, region, unique), connection).run()


def outputs(kafka, schema_registry, topic: str) -> dict[str, dict]:
    decoder = AvroDecoder(schema_registry.url)
    found: dict[str, dict] = {}
    for message in read_topic(kafka.bootstrap_servers, topic):
        _, record = decoder.decode(message.value())
        assert record["sensor_id"] not in found, f"{record['sensor_id']} twice in {topic}"
        found[record["sensor_id"]] = record
        headers = dict(message.headers())
        assert headers["sensorstream.routes_version"] == b"1"
    return found


def test_each_route_holds_exactly_its_records(kafka, schema_registry, connection, tmp_path, unique):
    nodes = {"edge-a": "eu-west-1", "edge-b": "us-east-1"}
    produce_nodes(tmp_path, connection, unique, nodes)
    result = RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    assert (result.routed, result.routes_version) == (12, 1)
    assert result.dead_letters == 2  # out_of_range fails schematized, once per node

    for route, names in EXPECTED.items():
        got = outputs(kafka, schema_registry, f"t.{unique}.{route}")
        assert set(got) == {f"{node}-{name}" for node in nodes for name in names}, route
    for node, region in nodes.items():
        regional = outputs(kafka, schema_registry, f"t.{unique}.regional.{region}")
        assert set(regional) == {f"{node}-{name}" for name in READINGS}

    filtered = outputs(kafka, schema_registry, f"t.{unique}.filtered")
    record = filtered["edge-a-normal"]
    assert (record["latitude"], record["longitude"]) == (52.12, 4.99)
    assert "serial_number" not in record
    assert record["instance_id"] == hashlib.sha256(b"i-edge-a").hexdigest()

    emergency = outputs(kafka, schema_registry, f"t.{unique}.emergency")
    for node in nodes:
        for name, (severity, rules) in SEVERITY.items():
            got = emergency[f"{node}-{name}"]
            assert (got["severity"], got["matched_rules"]) == (severity, rules), name

    raw = outputs(kafka, schema_registry, f"t.{unique}.raw")
    assert raw["edge-b-hot"]["_region"] == "us-east-1"
    assert raw["edge-b-hot"]["serial_number"] == "SN-edge-b-2"  # raw is untouched

    # Schematized records keep every value; a clean record's body is forwarded under the
    # route's own schema id, a normalised one (the padded location) is re-encoded.
    schematized = outputs(kafka, schema_registry, f"t.{unique}.schematized")
    for name, record in schematized.items():
        assert record == {**raw[name], "location": raw[name]["location"].strip()}, name
    assert raw["edge-a-shaking"]["location"] == " hall 3 "
    assert schematized["edge-a-shaking"]["location"] == "hall 3"
    subject = f"t.{unique}.schematized-value"
    schematized_id = (
        SchemaRegistry(connection.schema_registry_config())
        .client.get_latest_version(subject)
        .schema_id
    )
    for message in read_topic(kafka.bootstrap_servers, f"t.{unique}.schematized"):
        assert message.value()[1:5] == schematized_id.to_bytes(4, "big")

    (letters) = read_topic(kafka.bootstrap_servers, f"t.{unique}.dlq")
    assert len(letters) == 2
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["dlq.stage"] == b"router"
        assert headers["sensorstream.route"] == b"schematized"
        assert b"temperature" in headers["dlq.error"] and b"180.5" in headers["dlq.error"]
        assert headers["dlq.source.topic"] == f"t.{unique}.in".encode()
        # The value is the input message itself, so the record can be replayed from here.
        _, record = AvroDecoder(schema_registry.url).decode(letter.value())
        assert record["sensor_id"].endswith("-out_of_range")


def test_bad_input_goes_to_the_dead_letter_topic(
    kafka, schema_registry, connection, tmp_path, unique
):
    produce_nodes(tmp_path, connection, unique, {"edge-a": "eu-west-1"})  # creates the input
    registry = SchemaRegistry(connection.schema_registry_config())
    reading_schema = registry.latest_value_schema(f"t.{unique}.in")
    schema_id = registry.register_value_schema(f"t.{unique}.in", reading_schema)
    decoder = AvroDecoder(schema_registry.url)
    sample = decoder.decode(read_topic(kafka.bootstrap_servers, f"t.{unique}.in")[0].value())[1]

    unsafe_region = AvroEncoder(reading_schema, schema_id).encode(
        {**sample, "_region": "eu/west", "sensor_id": "edge-a-unsafe"}
    )
    bad = {
        "not-avro": b"this is not avro",
        "unknown-id": b"\x00" + (987_654_321).to_bytes(4, "big") + b"\x02",
        "truncated": unsafe_region[:20],
        "trailing": unsafe_region + b"\x00\x00",
        "tombstone": None,
        "unsafe-region": unsafe_region,
    }
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for key, value in bad.items():
        producer.produce(f"t.{unique}.in", key=key.encode(), value=value, partition=0)
    assert producer.flush(30) == 0

    result = RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    assert result.routed == 6 + len(bad)  # nothing stopped the router

    letters = read_topic(kafka.bootstrap_servers, f"t.{unique}.dlq")
    by_key: dict[bytes, list] = {}
    inputs = read_topic(kafka.bootstrap_servers, f"t.{unique}.in")
    offsets = {(m.partition(), m.offset()): m.key() for m in inputs}  # offsets: per partition

    def source_key(headers: dict[str, bytes]) -> bytes:
        return offsets[(int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))]

    for letter in letters:
        headers = dict(letter.headers())
        assert headers["dlq.stage"] == b"router"
        by_key.setdefault(source_key(headers), []).append(headers)
    errors = {k.decode(): [h["dlq.error"].decode() for h in v] for k, v in by_key.items() if k}
    assert "not Avro in the Confluent wire format" in errors["not-avro"][0]
    assert "schema id 987654321 is not in the schema registry" in errors["unknown-id"][0]
    assert "does not match schema id" in errors["truncated"][0]
    assert "left over" in errors["trailing"][0]
    assert "tombstone" in errors["tombstone"][0]
    # An unsafe region fails only the regional route; the record still reaches the others.
    assert len(errors["unsafe-region"]) == 1
    assert "eu/west" in errors["unsafe-region"][0]
    raw = outputs(kafka, schema_registry, f"t.{unique}.raw")
    assert "edge-a-unsafe" in raw
    for letter in letters:  # the value is the message as it came, byte for byte
        key = source_key(dict(letter.headers()))
        if key and key.decode() in bad:
            assert letter.value() == (bad[key.decode()] or b"")


def test_kill_9_mid_stream_leaves_every_output_exactly_once(
    kafka, schema_registry, connection, tmp_path, unique
):
    db = tmp_path / "edge.db"
    simulate(db, 3000, start=START)
    EdgeTailer(fleet_node_settings(db, "edge-k", "eu-west-1", unique), connection).run()
    routes = routing_file(tmp_path, unique)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": f"g-{unique}",
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": f"t.{unique}.control",
        "SENSORSTREAM_ROUTER_COMMIT_INTERVAL_S": "0.2",
        # The restart fences the killed instance's open transaction at once.
        "SENSORSTREAM_ROUTER_INSTANCE_ID": "router-1",
    }
    cmd = [sys.executable, "-m", "sensorstream", "route", "--routes", str(routes), "--once"]
    doomed = subprocess.run(
        cmd,
        env={**env, "SENSORSTREAM_FAILPOINTS": "router.route=2000"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doomed.returncode == -signal.SIGKILL, doomed.stderr[-2000:]
    finish = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr[-2000:]

    rows = sqlite_rows(db)
    expected = {
        "raw": set(rows),
        "regional.eu-west-1": set(rows),
        "schematized": {i for i, r in rows.items() if in_ranges(r)},
        "filtered": {i for i, r in rows.items() if not r["anomaly_flag"] and r["status_code"] == 0},
        "emergency": {
            i
            for i, r in rows.items()
            if r["anomaly_flag"] or (r["temperature"] or 0) > 90 or (r["vibration"] or 0) > 50
        },
    }
    decoder = AvroDecoder(schema_registry.url)
    for route, rowids in expected.items():
        produced = Counter(
            decoder.decode(m.value())[1]["_source_rowid"]
            for m in read_topic(kafka.bootstrap_servers, f"t.{unique}.{route}")
        )
        assert not [r for r, n in produced.items() if n > 1], f"duplicates in {route}"
        assert set(produced) == rowids, route


RANGES = {
    "temperature": (-40, 125),
    "humidity": (0, 100),
    "voltage": (0, 480),
    "pressure": (0, 700),
    "vibration": (0, 200),
}


def in_ranges(row: dict) -> bool:
    return all(row[f] is None or lo <= row[f] <= hi for f, (lo, hi) in RANGES.items())


def test_input_past_retention_is_reported_once_not_skipped_silently(
    kafka, schema_registry, connection, tmp_path, unique
):
    """A router down longer than its input's retention: the deleted records are named in a
    dead letter, counted, and the rest is routed."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from sensorstream.metrics import MetricFamilies
    from stream_apps.metrics import RouterMetrics
    from tests.unit.sensorstream.test_metrics_router_sink import scrape, value

    produce_nodes(tmp_path, connection, unique, {"edge-a": "eu-west-1"})
    routes = routing_file(tmp_path, unique)
    assert RouterApp(router_settings(routes, unique), connection).run().routed == 6
    topic = f"t.{unique}.in"
    group = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"g-{unique}"})
    read = group.committed([TopicPartition(topic, 0)], timeout=30)[0].offset
    assert read >= 0

    # 20 more readings on partition 0 (copies of the first), then retention takes 12 of them
    inputs = read_topic(kafka.bootstrap_servers, topic)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for i in range(20):
        producer.produce(
            topic,
            key=inputs[i % len(inputs)].key(),
            value=inputs[i % len(inputs)].value(),
            partition=0,
        )
    assert producer.flush(30) == 0
    _, end = group.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
    cut = end - 20 + 12  # from the committed offset (a transaction marker may follow it) on
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, 0, cut)]).values():
        future.result(30)

    families = MetricFamilies()
    metrics = RouterMetrics(families)
    result = RouterApp(router_settings(routes, unique), connection, metrics).run()
    assert result.routed == 20 - 12
    dead = {"stage": "router", "reason": "expired"}
    assert value(scrape(families), "sensorstream_dead_letters_total", **dead) == cut - read

    def notices() -> list[dict]:
        letters = [
            dict(m.headers()) for m in read_topic(kafka.bootstrap_servers, f"t.{unique}.dlq")
        ]
        return [h for h in letters if b"retention" in h["dlq.error"]]

    [notice] = notices()
    assert notice["dlq.stage"] == b"router"
    assert notice["dlq.source.topic"] == topic.encode()
    assert notice["dlq.source.first_offset"] == str(read).encode()
    assert notice["dlq.source.last_offset"] == str(cut - 1).encode()
    named = f"offsets {read} to {cut - 1} of {topic}/0 ({cut - read} records"
    assert named.encode() in notice["dlq.error"]

    # The router committed past the gap: a restart finds nothing more to report.
    assert RouterApp(router_settings(routes, unique), connection).run().routed == 0
    assert len(notices()) == 1
    group.close()
