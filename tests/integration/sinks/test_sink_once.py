"""`sensorstream sink --once` (DESIGN section 3): it lands every record that was available when
it started (each partition's end when it was assigned), then exits 0; it never exits 0 having
skipped available records, never waits forever, and a failure exits 1 with its message.

Run as the command operators run, against real Kafka (a broker with Kafka's default 3 s
`group.initial.rebalance.delay.ms` where joining matters), the registry and S3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from schemas.avro_codec import AvroEncoder
from schemas.value_schema import curated_schema
from sensorstream.topics import TopicSpec, ensure_topics
from tests.integration.sinks.test_sink import Topics, reading, table_rows
from tests.integration.sinks.test_sink_concurrency import (
    committed_offsets,
    end_offsets,
    s3_proxy,
    table_count,
    wait_for,
)

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 180


def sink_env(bootstrap: str, schema_registry, unique: str, lake_uri: str, **extra: str) -> dict:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_LAKE_URI": lake_uri,
        "SENSORSTREAM_SINK_CONSUMER_GROUP": f"sink-{unique}",
        "SENSORSTREAM_SINK_TOPICS": json.dumps([f"t.{unique}.raw"]),
        "SENSORSTREAM_SINK_TOPIC_PREFIX": f"t.{unique}.",
        "SENSORSTREAM_SINK_DEAD_LETTER_TOPIC": f"t.{unique}.dlq",
        "SENSORSTREAM_SINK_METRICS_PORT": "0",
        **extra,
    }


def sink_once(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", "sink", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def send_fast(bootstrap: str, topics: Topics, topic: str, ids: range) -> None:
    """Readings `ids` to `topic`, encoded once per sensor and spread over its partitions."""
    schema = curated_schema()
    encoder = AvroEncoder(schema, topics.registry.register_value_schema(topic, schema))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in ids:
        record = reading(i)
        producer.produce(topic, encoder.encode(record), record["sensor_id"].encode())
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def raw_topic(kafka, schema_registry, unique: str, ids: range) -> tuple[Topics, str]:
    """Topic `raw` of three partitions, holding readings `ids`; its `Topics` and its name."""
    topics = Topics(kafka, schema_registry.url, unique)
    topic = topics.name("raw")
    ensure_topics({"bootstrap.servers": kafka.bootstrap_servers}, [TopicSpec(topic, 3)])
    send_fast(kafka.bootstrap_servers, topics, topic, ids)
    return topics, topic


def s3_sink_env(kafka, schema_registry, s3, unique: str, lake_uri: str, port: int, **extra):
    """`sink_env` for a lake on S3 reached at 127.0.0.1:`port` (a stand-in for the S3 server
    or a proxy in front of it), with a retry budget of 5 s."""
    return sink_env(
        kafka.bootstrap_servers,
        schema_registry,
        unique,
        lake_uri,
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_REGION=s3.region,
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        SENSORSTREAM_SINK_RETRY_BUDGET_S="5",
        **extra,
    )


def assert_rows_once(uri: str, expected: set[int]) -> list[int]:
    rowids = Counter(table_rows(uri, None).column("_source_rowid").to_pylist())
    twice = [r for r, n in rowids.items() if n > 1]
    assert not twice, f"{len(twice)} rows twice, e.g. {twice[:5]}"
    missing = expected - set(rowids)
    assert not missing, f"{len(missing)} rows missing, e.g. {sorted(missing)[:5]}"
    return sorted(rowids)


def test_once_lands_everything_although_joining_the_group_takes_seconds(
    kafka_with_join_delay, schema_registry, tmp_path, unique
):
    """Joining a new group waits out `group.initial.rebalance.delay.ms` (3 s by default): an
    idle timeout counted from the start had expired before the first record arrived."""
    bootstrap = kafka_with_join_delay.bootstrap_servers
    total = 60_000
    _, topic = raw_topic(kafka_with_join_delay, schema_registry, unique, range(1, total + 1))
    lake_uri = str(tmp_path / "lake")

    started = time.monotonic()
    done = sink_once(sink_env(bootstrap, schema_registry, unique, lake_uri))
    print(f"sink --once: exit {done.returncode} after {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"landed {total} rows" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert_rows_once(f"{lake_uri}/raw", set(range(1, total + 1)))
    group = f"sink-{unique}"
    assert committed_offsets(bootstrap, group, topic, 3) == end_offsets(bootstrap, topic, 3)


class Trickle:
    """Keeps sending readings from a thread until stopped: a pipeline that never goes idle."""

    def __init__(self, bootstrap: str, topics: Topics, topic: str, first: int) -> None:
        self.next = first
        self.stop = threading.Event()
        self.error: BaseException | None = None
        schema = curated_schema()
        self.encoder = AvroEncoder(schema, topics.registry.register_value_schema(topic, schema))
        self.producer = Producer({"bootstrap.servers": bootstrap})
        self.topic = topic
        self.thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.wait(0.1):
                for _ in range(20):
                    record = reading(self.next)
                    self.producer.produce(self.topic, self.encoder.encode(record), b"k")
                    self.next += 1
                self.producer.poll(0)
            assert self.producer.flush(30) == 0
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error


def test_once_ends_while_records_keep_arriving(kafka, schema_registry, tmp_path, unique):
    """Records that never stop (a live pipeline): --once lands what was there when it started
    and exits, where waiting for an idle moment never ended."""
    before = 20_000
    topics, topic = raw_topic(kafka, schema_registry, unique, range(1, before + 1))
    lake_uri = str(tmp_path / "lake")
    trickle = Trickle(kafka.bootstrap_servers, topics, topic, before + 1)
    try:
        done = sink_once(sink_env(kafka.bootstrap_servers, schema_registry, unique, lake_uri))
    finally:
        trickle.finish()
    assert done.returncode == 0, done.stderr[-3000:]
    landed = assert_rows_once(f"{lake_uri}/raw", set(range(1, before + 1)))
    # What it landed is a prefix of what was sent, ending where its offsets were committed.
    committed = committed_offsets(kafka.bootstrap_servers, f"sink-{unique}", topic, 3)
    assert sum(committed.values()) == len(landed), (committed, len(landed))
    assert trickle.next - 1 > len(landed) >= before


def test_once_reports_a_missing_topic_and_lands_the_others(
    kafka, schema_registry, tmp_path, unique
):
    _, topic = raw_topic(kafka, schema_registry, unique, range(1, 1_001))
    lake_uri = str(tmp_path / "lake")
    missing = f"t.{unique}.nowhere"
    env = sink_env(kafka.bootstrap_servers, schema_registry, unique, lake_uri)

    alone = sink_once({**env, "SENSORSTREAM_SINK_TOPICS": json.dumps([missing])})
    assert alone.returncode == 1, alone.stderr[-3000:]
    assert f"{missing} does not exist" in alone.stderr, alone.stderr[-3000:]

    both = sink_once({**env, "SENSORSTREAM_SINK_TOPICS": json.dumps([topic, missing])})
    assert both.returncode == 0, both.stderr[-3000:]
    assert f"{missing} does not exist" in both.stderr, both.stderr[-3000:]
    assert_rows_once(f"{lake_uri}/raw", set(range(1, 1_001)))


class SilentServer:
    """Accepts TCP connections and never answers: an S3 endpoint that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def test_once_exits_1_with_its_message_when_s3_stays_unreachable(
    kafka, schema_registry, s3, s3_bucket, unique
):
    """Past the retry budget the sink fails: exit 1 and the reason, not a crash (it used to
    end with SIGSEGV, exit 139, from the object store attempt abandoned at the deadline)."""
    _, topic = raw_topic(kafka, schema_registry, unique, range(1, 1_001))
    lake_uri = f"s3://{s3_bucket}/{unique}/lake"
    silent = SilentServer()
    try:
        env = s3_sink_env(kafka, schema_registry, s3, unique, lake_uri, silent.port)
        done = sink_once(env)
    finally:
        silent.close()
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "sensorstream sink:" in done.stderr and "unreachable" in done.stderr, done.stderr[-3000:]
    assert f"{lake_uri}/raw" in done.stderr, done.stderr[-3000:]
    # Nothing was committed past data that is not in the table.
    committed = committed_offsets(kafka.bootstrap_servers, f"sink-{unique}", topic, 3)
    assert all(o < 0 for o in committed.values()), committed


@pytest.mark.parametrize("failure", ["stall", "cut"])
def test_once_exits_1_with_its_message_when_s3_goes_away_mid_run(
    failure, kafka, schema_registry, s3, s3_bucket, unique
):
    """S3 stops answering (or refuses connections) while batches are being written: the
    sink fails after its retry budget with exit 1 and the reason."""
    raw_topic(kafka, schema_registry, unique, range(1, 60_001))
    lake_uri = f"s3://{s3_bucket}/{unique}/lake"
    with s3_proxy(s3) as proxy:
        env = s3_sink_env(
            kafka,
            schema_registry,
            s3,
            unique,
            lake_uri,
            proxy.port,
            SENSORSTREAM_SINK_POLL_BATCH="500",
            SENSORSTREAM_SINK_DEFAULTS=json.dumps({"max_rows": 500}),
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "sensorstream", "sink", "--once"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                lambda: table_count(f"{lake_uri}/raw", s3.storage_options()) > 0,
                "the first commit",
                120,
                0.1,
            )
            proxy.stall() if failure == "stall" else proxy.cut()
            _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, (proc.returncode, err[-3000:])
    assert "sensorstream sink:" in err and "unreachable" in err, err[-3000:]
