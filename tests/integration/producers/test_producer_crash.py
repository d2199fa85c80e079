"""Exactly once across kill -9 and a broker restart: every SQLite row is in the topic once, as a
read_committed consumer sees it, however the producer or the broker was stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from infra.local_stack.kafka import KafkaServer as LocalKafka
from infra.local_stack.settings import StackSettings
from infra.local_stack.sqlite_probe import max_rowid
from producers.simulator import SimulatorSettings, run_simulator
from producers.tailer import EdgeTailer
from sensorstream.settings import ConnectionSettings
from tests.edge_nodes import node_settings
from tests.integration.producers.test_producer import (
    assert_exactly_once,
    simulate,
    sqlite_rows,
    topic_records,
)
from tests.kafka_helpers import read_topic
from tests.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def produce_env(kafka, schema_registry, tmp_path, unique) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_PRODUCER_SQLITE": str(tmp_path / "edge.db"),
        "SENSORSTREAM_PRODUCER_NODE_ID": f"node-{unique}",
        "SENSORSTREAM_PRODUCER_REGION": "eu-west-1",
        "SENSORSTREAM_PRODUCER_TOPIC": f"t.readings.{unique}",
        "SENSORSTREAM_PRODUCER_DEAD_LETTER_TOPIC": f"t.dlq.{unique}",
        "SENSORSTREAM_PRODUCER_CHECKPOINT_TOPIC": f"t.ckpt.{unique}",
        "SENSORSTREAM_PRODUCER_CHUNK_ROWS": "300",
    }


def produce(env: dict[str, str], *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "produce", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(env: dict[str, str]) -> None:
    """A clean `--once` run that must pick up exactly where the dead one left off."""
    proc = produce(env, "--once")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.mark.parametrize(
    "crash_point",
    ["producer.in_transaction", "producer.before_commit", "producer.after_commit"],
)
def test_kill_9_at_each_crash_point(crash_point, kafka, schema_registry, produce_env):
    db = produce_env["SENSORSTREAM_PRODUCER_SQLITE"]
    topic = produce_env["SENSORSTREAM_PRODUCER_TOPIC"]
    simulate(db, 2000)
    # The third transaction dies: two chunks (600 rows) are committed before it.
    doomed = produce({**produce_env, "SENSORSTREAM_FAILPOINTS": f"{crash_point}=3"}, "--once")
    doomed.communicate(timeout=120)
    assert doomed.returncode == -signal.SIGKILL

    committed = read_topic(kafka.bootstrap_servers, topic)
    expected_before = 900 if crash_point == "producer.after_commit" else 600
    assert len(committed) == expected_before
    if crash_point == "producer.before_commit":
        # The dead transaction's records did reach the log; only its abort hides them.
        everything = read_topic(kafka.bootstrap_servers, topic, isolation="read_uncommitted")
        assert len(everything) > len(committed)

    finish(produce_env)
    records = topic_records(kafka, schema_registry, topic)
    assert_exactly_once(records, sqlite_rows(db))


def test_random_kill_9_while_the_sensor_writes(kafka, schema_registry, produce_env):
    db = produce_env["SENSORSTREAM_PRODUCER_SQLITE"]
    simulate(db, 10)
    stop_writer = threading.Event()
    writer = threading.Thread(
        target=run_simulator,
        args=(SimulatorSettings(db=db, rate=2000, seed=5, sensors=8),),
        kwargs={"stop": stop_writer},
    )
    writer.start()
    rng = random.Random(20261123)
    try:
        for _ in range(5):
            victim = produce(produce_env)
            time.sleep(rng.uniform(0.4, 2.5))
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=30)
            assert victim.returncode == -signal.SIGKILL
        # Enough rows that the kills fell among rows in flight, however slow the machine.
        wait_until(lambda: max_rowid(Path(db)) > 5000)
    finally:
        stop_writer.set()
        writer.join(30)
    finish(produce_env)
    rows = sqlite_rows(db)
    assert len(rows) > 5000
    records = topic_records(kafka, schema_registry, produce_env["SENSORSTREAM_PRODUCER_TOPIC"])
    assert_exactly_once(records, rows)


def wait_until(condition, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.2)


@pytest.fixture
def private_kafka(tmp_path):
    """A broker of this test's own, so stopping it disturbs no other test."""
    broker = LocalKafka(
        StackSettings(
            dir=tmp_path / "stack",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
        )
    )
    broker.prepare()

    def start() -> None:
        broker.process.start(broker.command(), cwd=tmp_path)
        deadline = time.monotonic() + 120
        while not broker.is_ready():
            assert broker.process.is_running(), "private broker died on start"
            assert time.monotonic() < deadline, "private broker not ready"
            time.sleep(0.25)

    broker.start = start
    start()
    yield broker
    broker.process.stop()


def test_broker_restart_during_production(private_kafka, schema_registry, tmp_path, unique):
    db = tmp_path / "edge.db"
    simulate(db, 10)
    connection = ConnectionSettings(
        kafka_bootstrap_servers=private_kafka.bootstrap_servers,
        schema_registry_url=schema_registry.url,
    )
    settings = node_settings(
        db,
        unique,
        chunk_rows=500,
        retry_backoff_max_s=2,
        status_interval_s=2,
    )
    stop_writer, stop_tailer = threading.Event(), threading.Event()
    writer = threading.Thread(
        target=run_simulator,
        args=(SimulatorSettings(db=db, rate=2000, seed=6, sensors=8),),
        kwargs={"stop": stop_writer},
    )
    tailer = EdgeTailer(settings, connection, stop_tailer)
    runner = threading.Thread(target=tailer.run)
    writer.start()
    runner.start()
    try:
        wait_until(lambda: tailer.checkpoint is not None and tailer.checkpoint.rowid > 10)
        private_kafka.process.stop()
        # The sensor keeps writing; SQLite is the buffer: 10,000 rows of it, however slowly.
        wait_until(lambda: tailer._backlog() > 10_000)
        backlog_while_down = tailer._backlog()
        down_at = max_rowid(db)
        private_kafka.start()
        # The producer is back to streaming while the sensor still writes.
        wait_until(lambda: tailer.checkpoint.rowid > down_at)
    finally:
        stop_writer.set()
        writer.join(30)
    try:
        total = max(sqlite_rows(db))
        deadline = time.monotonic() + 120
        while tailer.checkpoint is None or tailer.checkpoint.rowid < total:
            assert time.monotonic() < deadline, "the producer did not catch up after the restart"
            time.sleep(0.2)
    finally:
        stop_tailer.set()
        runner.join(60)
    assert backlog_while_down > 10_000  # rows written while the broker was away

    messages = read_topic(private_kafka.bootstrap_servers, settings.topic)
    from tests.kafka_helpers import AvroDecoder

    decoder = AvroDecoder(schema_registry.url)
    records = [(m.key(), *decoder.decode(m.value())) for m in messages]
    assert_exactly_once(records, sqlite_rows(db))
    # In order: within each partition, rowids only go up.
    by_partition: dict[int, list[int]] = defaultdict(list)
    for message, (_, _, record) in zip(messages, records, strict=True):
        by_partition[message.partition()].append(record["_source_rowid"])
    for rowids in by_partition.values():
        assert rowids == sorted(rowids)
