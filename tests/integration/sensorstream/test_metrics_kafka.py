"""Consumer lag from librdkafka statistics and the router's checkpoint hook, against the real
broker: the fields the lag is read from are the ones librdkafka really sends, and quixstreams
really passes our `stats_cb` through and commits through the wrapped checkpoint."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from quixstreams import Application

from sensorstream.kafka_stats import ConsumerLag
from sensorstream.metrics import MetricFamilies
from sensorstream.topics import TopicSpec, ensure_topics
from stream_apps.dispatch import HEADER_ROUTE, Outgoing
from stream_apps.metrics import RouterMetrics, observe_checkpoints
from stream_apps.quixstreams_internals import processing_context

pytestmark = pytest.mark.integration


def samples(families: MetricFamilies) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(families.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def lags(families: MetricFamilies, stage: str) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["topic"], dict(labels)["partition"]): value
        for (name, labels), value in samples(families).items()
        if name == "sensorstream_consumer_lag_records" and dict(labels)["stage"] == stage
    }


def produce_in_one_transaction(bootstrap: str, topic: str, count: int, unique: str) -> None:
    """Like the edge producer: transactional, so the log ends with a commit marker."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{unique}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(count):
        producer.produce(topic, key=b"sensor-%d" % (i % 4), value=b"reading %d" % i)
    producer.commit_transaction(30)


def test_committed_lag_of_a_consumer_that_commits_itself(kafka, unique):
    topic = f"t.lag.{unique}"
    ensure_topics({"bootstrap.servers": kafka.bootstrap_servers}, [TopicSpec(topic, 1)])
    produce_in_one_transaction(kafka.bootstrap_servers, topic, 50, unique)
    families = MetricFamilies()
    lag = ConsumerLag(families.consumer_lag, "sink")
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"g-{unique}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **lag.consumer_config(interval_ms=200),
        }
    )
    try:
        consumer.subscribe([topic])
        consumed = []
        deadline = time.monotonic() + 60
        while len(consumed) < 20:
            assert time.monotonic() < deadline
            consumed += [m for m in consumer.consume(20 - len(consumed), 1) if not m.error()]
        consumer.commit(offsets=[TopicPartition(topic, 0, 20)], asynchronous=False)

        def lag_reaches(expected: float) -> None:
            while lags(families, "sink").get((topic, "0")) != expected:
                assert time.monotonic() < deadline, lags(families, "sink")
                consumed.extend(m for m in consumer.consume(100, 0.2) if not m.error())

        # 50 records and the transaction's commit marker after the committed offset 20.
        lag_reaches(31)
        consumer.commit(offsets=[TopicPartition(topic, 0, 50)], asynchronous=False)
        lag_reaches(1)  # at rest, the marker: what kafka-consumer-groups.sh shows too
    finally:
        consumer.close()
    assert len(consumed) == 50


def test_router_metrics_through_a_real_quixstreams_application(kafka, unique, tmp_path):
    source, target = f"t.qx.in.{unique}", f"t.qx.out.{unique}"
    ensure_topics(
        {"bootstrap.servers": kafka.bootstrap_servers},
        [TopicSpec(source, 2), TopicSpec(target, 2)],
    )
    produce_in_one_transaction(kafka.bootstrap_servers, source, 40, unique)
    families = MetricFamilies()
    metrics = RouterMetrics(families)
    app = Application(
        broker_address=kafka.bootstrap_servers,
        consumer_group=f"g-{unique}",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=0.2,
        consumer_extra_config=metrics.consumer_config(interval_ms=200),
        use_changelog_topics=False,
        state_dir=tmp_path / "state",
        loglevel=None,
    )
    event_time = time.time() - 1.0

    def route(value: bytes) -> bytes:
        metrics.routed([Outgoing(target, value, [(HEADER_ROUTE, b"raw")])], event_time)
        return value

    sdf = app.dataframe(app.topic(source, key_deserializer="bytes", value_deserializer="bytes"))
    observe_checkpoints(processing_context(sdf), metrics)
    sdf.apply(route).to_topic(app.topic(target, key_serializer="bytes", value_serializer="bytes"))

    # Run until the 40 records are routed and the lag seen at 0, not for a fixed idle time:
    # a loaded machine may pause longer than any short timer between polls.
    def drained() -> bool:
        routed = samples(families).get(("sensorstream_records_out_total", out), 0)
        return routed == 40 and lags(families, "router") == {(source, "0"): 0, (source, "1"): 0}

    def stop_when_drained() -> None:
        deadline = time.monotonic() + 120
        while not drained() and time.monotonic() < deadline:
            time.sleep(0.1)
        app.stop()

    out = frozenset({("stage", "router"), ("route", "raw")})
    watcher = threading.Thread(target=stop_when_drained, daemon=True)
    watcher.start()
    app.run(collect=False)
    watcher.join(60)

    got = samples(families)
    assert got[("sensorstream_records_in_total", frozenset({("stage", "router")}))] == 40
    assert got[("sensorstream_records_out_total", out)] == 40
    assert got[("sensorstream_end_to_end_latency_seconds_count", out)] == 40
    commits = got[("sensorstream_commit_duration_seconds_count", frozenset({("stage", "router")}))]
    assert commits >= 1
    assert got[("sensorstream_batch_duration_seconds_count", frozenset({("stage", "router")}))] == (
        commits
    )
    # Both partitions consumed to their end, markers included: nothing left.
    assert lags(families, "router") == {(source, "0"): 0, (source, "1"): 0}
