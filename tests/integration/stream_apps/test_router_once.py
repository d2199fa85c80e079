"""`sensorstream route --once` (DESIGN section 3): it routes every record that was in its input
when it started (each partition up to its end when it was assigned), then exits 0; it ends
while records keep arriving, waits out a slow group join, and a missing input topic is an
error naming it. Run as operators run it, against the real broker and registry (a broker with
Kafka's default 3 s `group.initial.rebalance.delay.ms` where joining matters)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from sensorstream.topics import TopicSpec, ensure_topics
from tests.integration.sinks.test_sink import Topics
from tests.integration.sinks.test_sink_once import Trickle, send_fast
from tests.integration.stream_apps.test_router import routing_file
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 240


def route_once(bootstrap: str, schema_registry, routes: Path, unique: str):
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": f"g-{unique}",
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": f"t.{unique}.control",
        "SENSORSTREAM_ROUTER_METRICS_PORT": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", "route", "--routes", str(routes), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def routed_rowids(bootstrap: str, schema_registry, topic: str) -> Counter:
    decoder = AvroDecoder(schema_registry.url)
    return Counter(
        decoder.decode(m.value())[1]["_source_rowid"] for m in read_topic(bootstrap, topic)
    )


def assert_routed_once(rowids: Counter, expected: set[int]) -> None:
    twice = [r for r, n in rowids.items() if n > 1]
    assert not twice, f"{len(twice)} records routed twice, e.g. {twice[:5]}"
    missing = expected - set(rowids)
    assert not missing, f"{len(missing)} records not routed, e.g. {sorted(missing)[:5]}"


def test_once_routes_everything_although_joining_the_group_takes_seconds(
    kafka_with_join_delay, schema_registry, tmp_path, unique
):
    bootstrap = kafka_with_join_delay.bootstrap_servers
    topics = Topics(kafka_with_join_delay, schema_registry.url, unique)
    source = topics.name("in")
    ensure_topics({"bootstrap.servers": bootstrap}, [TopicSpec(source, 3)])
    total = 6_000
    send_fast(bootstrap, topics, source, range(1, total + 1))
    done = route_once(bootstrap, schema_registry, routing_file(tmp_path, unique), unique)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"routed {total} records" in done.stdout, (done.stdout, done.stderr[-3000:])
    raw = routed_rowids(bootstrap, schema_registry, topics.name("raw"))
    assert_routed_once(raw, set(range(1, total + 1)))


def test_once_ends_while_records_keep_arriving(kafka, schema_registry, tmp_path, unique):
    topics = Topics(kafka, schema_registry.url, unique)
    source = topics.name("in")
    ensure_topics({"bootstrap.servers": kafka.bootstrap_servers}, [TopicSpec(source, 3)])
    before = 3_000
    send_fast(kafka.bootstrap_servers, topics, source, range(1, before + 1))
    trickle = Trickle(kafka.bootstrap_servers, topics, source, before + 1)
    try:
        done = route_once(
            kafka.bootstrap_servers, schema_registry, routing_file(tmp_path, unique), unique
        )
    finally:
        trickle.finish()
    assert done.returncode == 0, done.stderr[-3000:]
    raw = routed_rowids(kafka.bootstrap_servers, schema_registry, topics.name("raw"))
    assert_routed_once(raw, set(range(1, before + 1)))
    assert trickle.next - 1 > len(raw), "the run did not end before the input did"


def test_once_with_a_missing_input_topic_exits_1_naming_it(
    kafka, schema_registry, tmp_path, unique
):
    source = f"t.{unique}.in"
    done = route_once(
        kafka.bootstrap_servers, schema_registry, routing_file(tmp_path, unique), unique
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert f"input topic {source} does not exist" in done.stderr, done.stderr[-3000:]
    existing = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=30)
    assert source not in existing.topics, "the run created the topic it was to read"
