"""The Delta sink against real Kafka, registry and S3: exact rows per table, dead letters for
what cannot land, schema evolution, and exactly once across kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from schemas.avro_codec import AvroEncoder
from schemas.registry import SchemaRegistry
from schemas.value_schema import curated_schema
from sensorstream.settings import ConnectionSettings
from sensorstream.topics import TopicSpec, ensure_topics
from sinks.app import DeltaSink
from sinks.settings import SinkSettings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 23, 59, 58, tzinfo=UTC)


def reading(i: int, node: str = "edge-a", region: str = "eu-west-1", **extra) -> dict:
    record = {f["name"]: None for f in curated_schema()["fields"]}
    record.update(
        id=i,
        timestamp=T0 + timedelta(seconds=i),  # crosses midnight: two event_date partitions
        sensor_id=f"{node}-s{i % 4}",
        temperature=20.0 + i / 10,
        anomaly_flag=0,
        status_code=0,
        _node_id=node,
        _region=region,
        _source_table="sensor_readings",
        _source_rowid=i,
    )
    record.update(extra)
    return record


class Topics:
    def __init__(self, kafka, registry_url: str, unique: str) -> None:
        self.kafka = kafka
        self.unique = unique
        self.registry = SchemaRegistry({"url": registry_url})
        self.producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})

    def name(self, route: str) -> str:
        return f"t.{self.unique}.{route}"

    def create(self, *routes: str) -> None:
        ensure_topics(
            {"bootstrap.servers": self.kafka.bootstrap_servers},
            [TopicSpec(self.name(r), 2) for r in routes],
        )

    def send(self, route: str, records: list[dict], schema: dict | None = None) -> None:
        schema = schema or curated_schema()
        encoder = AvroEncoder(schema, self.registry.register_value_schema(self.name(route), schema))
        for record in records:
            self.raw(route, encoder.encode(record), record["sensor_id"].encode())

    def raw(self, route: str, value: bytes | None, key: bytes = b"k", headers=None) -> None:
        self.producer.produce(self.name(route), key=key, value=value, headers=headers)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def send_spread(topics: Topics, route: str, ids: range, partitions: int) -> None:
    """Readings `ids` to `route`, record i to partition i % partitions (every partition busy)."""
    schema = curated_schema()
    name = topics.name(route)
    encoder = AvroEncoder(schema, topics.registry.register_value_schema(name, schema))
    for i in ids:
        record = reading(i)
        topics.producer.produce(
            name, encoder.encode(record), record["sensor_id"].encode(), partition=i % partitions
        )
        if i % 1000 == 0:
            topics.producer.poll(0)
    topics.flush()


def raw_readings(kafka, schema_registry, unique: str, ids: range) -> Topics:
    """Topics `raw` and `dlq`, with readings `ids` in `raw`."""
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    topics.send("raw", [reading(i) for i in ids])
    topics.flush()
    return topics


def sink_settings(unique: str, **overrides) -> SinkSettings:
    prefix = f"t.{unique}."
    return SinkSettings(
        consumer_group=f"sink-{unique}",
        topics=[f"^t\\.{unique}\\..+"],
        topic_prefix=prefix,
        dead_letter_topic=f"{prefix}dlq",
        once=True,
        **overrides,
    )


def sink_process_env(kafka, schema_registry, unique: str, lake_uri: str, **extra: str) -> dict:
    """The environment of a `sensorstream sink` process with `sink_settings`' topics."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_LAKE_URI": lake_uri,
        "SENSORSTREAM_SINK_CONSUMER_GROUP": f"sink-{unique}",
        "SENSORSTREAM_SINK_TOPICS": json.dumps([f"^t\\.{unique}\\..+"]),
        "SENSORSTREAM_SINK_TOPIC_PREFIX": f"t.{unique}.",
        "SENSORSTREAM_SINK_DEAD_LETTER_TOPIC": f"t.{unique}.dlq",
        **extra,
    }


def lake(kind: str, tmp_path, s3, s3_bucket, unique) -> tuple[str, dict | None]:
    if kind == "local":
        return str(tmp_path / "lake"), None
    return f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()


def connection_for(kafka, schema_registry, s3, lake_uri: str) -> ConnectionSettings:
    return ConnectionSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        schema_registry_url=schema_registry.url,
        sensorstream_lake_uri=lake_uri,
        aws_endpoint_url=s3.endpoint_url,
        aws_region=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )


def table_rows(uri: str, options: dict | None) -> pa.Table:
    table = DeltaTable(uri, storage_options=options)
    data = table.to_pyarrow_table()
    # The same rows through plain Parquet readers, over exactly the files the log references.
    if options is None:
        files = ds.dataset(table.file_uris(), format="parquet", partitioning="hive")
        assert files.count_rows() == data.num_rows
    return data


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_each_table_holds_exactly_its_records(
    kind, kafka, schema_registry, s3, s3_bucket, tmp_path, unique
):
    lake_uri, options = lake(kind, tmp_path, s3, s3_bucket, unique)
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "regional.eu-west-1", "regional.us-east-1", "dlq")
    topics.send("raw", [reading(i) for i in range(1, 301)])
    topics.send("regional.eu-west-1", [reading(i) for i in range(1, 101)])
    topics.send("regional.us-east-1", [reading(i, "edge-b", "us-east-1") for i in range(1, 51)])
    topics.raw(
        "dlq",
        b"a row the producer could not read",
        headers=[
            ("dlq.stage", b"producer"),
            ("dlq.error", b"temperature: text 'hot'"),
            ("dlq.source.rowid", b"42"),
        ],
    )
    topics.flush()

    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    result = DeltaSink(sink_settings(unique), connection).run()
    assert result.rows == {
        "raw": 300,
        "regional/eu-west-1": 100,
        "regional/us-east-1": 50,
        "dlq": 1,
    }

    raw = table_rows(f"{lake_uri}/raw", options)
    assert sorted(raw.column("_source_rowid").to_pylist()) == list(range(1, 301))
    assert raw.schema.field("timestamp").type == pa.timestamp("us", "UTC")
    assert raw.schema.field("event_date").type == pa.date32()
    assert set(raw.column("event_date").to_pylist()) == {T0.date(), T0.date() + timedelta(1)}
    assert set(raw.column("_route").to_pylist()) == {"raw"}
    assert set(raw.column("_kafka_topic").to_pylist()) == {f"t.{unique}.raw"}
    assert raw.column("_schema_id").null_count == 0
    offsets = Counter(
        zip(
            raw.column("_kafka_partition").to_pylist(),
            raw.column("_kafka_offset").to_pylist(),
            strict=True,
        )
    )
    assert max(offsets.values()) == 1
    assert DeltaTable(f"{lake_uri}/raw", storage_options=options).metadata().partition_columns == [
        "event_date"
    ]

    eu = table_rows(f"{lake_uri}/regional/eu-west-1", options)
    us = table_rows(f"{lake_uri}/regional/us-east-1", options)
    assert eu.num_rows == 100 and set(eu.column("_region").to_pylist()) == {"eu-west-1"}
    assert us.num_rows == 50 and set(us.column("_region").to_pylist()) == {"us-east-1"}

    dlq = table_rows(f"{lake_uri}/dlq", options).to_pylist()
    assert len(dlq) == 1
    assert dlq[0]["stage"] == "producer" and dlq[0]["error"] == "temperature: text 'hot'"
    assert json.loads(dlq[0]["source"]) == {"rowid": "42"}
    assert dlq[0]["message_value"] == b"a row the producer could not read"

    # A second run finds nothing new and writes nothing.
    again = DeltaSink(sink_settings(unique), connection).run()
    assert sum(again.rows.values()) == 0


def test_poison_messages_land_in_the_dead_letter_table(
    kafka, schema_registry, s3, tmp_path, unique
):
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    topics.send("raw", [reading(i) for i in range(1, 11)])
    topics.raw("raw", b"garbage")
    topics.raw("raw", b"\x00" + (987_654_321).to_bytes(4, "big") + b"\x02")
    topics.raw("raw", None)
    schema = curated_schema()
    good = AvroEncoder(schema, topics.registry.register_value_schema(topics.name("raw"), schema))
    topics.raw("raw", good.encode(reading(11))[:30])  # truncated body
    topics.send("raw", [reading(i) for i in range(12, 16)])
    topics.flush()

    lake_uri = str(tmp_path / "lake")
    result = DeltaSink(
        sink_settings(unique), connection_for(kafka, schema_registry, s3, lake_uri)
    ).run()
    assert result.dead_letters == 4
    raw = table_rows(f"{lake_uri}/raw", None)
    assert sorted(raw.column("_source_rowid").to_pylist()) == [*range(1, 11), *range(12, 16)]
    dlq = table_rows(f"{lake_uri}/dlq", None).to_pylist()
    assert {r["stage"] for r in dlq} == {"sink"}
    errors = sorted(r["error"] for r in dlq)
    assert any("not Avro" in e for e in errors)
    assert any("987654321 is not in the schema registry" in e for e in errors)
    assert any("tombstone" in e for e in errors)
    assert any("does not match schema id" in e for e in errors)
    for row in dlq:
        source = json.loads(row["source"])
        assert source["topic"] == f"t.{unique}.raw" and int(source["offset"]) >= 0


def test_a_new_field_becomes_a_new_column(kafka, schema_registry, s3, tmp_path, unique):
    topics = raw_readings(kafka, schema_registry, unique, range(1, 21))
    evolved = curated_schema()
    evolved["fields"].insert(-4, {"name": "co2_ppm", "type": ["null", "double"], "default": None})
    topics.send("raw", [reading(i, co2_ppm=400.0 + i) for i in range(21, 41)], evolved)
    topics.flush()
    lake_uri = str(tmp_path / "lake")
    DeltaSink(sink_settings(unique), connection_for(kafka, schema_registry, s3, lake_uri)).run()
    rows = {r["_source_rowid"]: r for r in table_rows(f"{lake_uri}/raw", None).to_pylist()}
    assert len(rows) == 40
    assert all(rows[i]["co2_ppm"] is None for i in range(1, 21))
    assert all(rows[i]["co2_ppm"] == 400.0 + i for i in range(21, 41))


def test_landing_mode_lands_each_record_once_and_replays_idempotently(
    kafka, schema_registry, s3, tmp_path, unique
):
    from sinks.settings import TableSettings

    raw_readings(kafka, schema_registry, unique, range(1, 301))
    lake_uri = str(tmp_path / "lake")
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    routes = {"raw": TableSettings(landing=True)}
    DeltaSink(sink_settings(unique, routes=routes), connection).run()

    landing = tmp_path / "lake" / "landing" / "raw"
    files = sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*.parquet"))
    assert files and all(f"/t.{unique}.raw+" in f for f in files)
    assert {f.split("/")[0] for f in files} == {"event_date=2026-11-20", "event_date=2026-11-21"}
    landed = ds.dataset(landing, format="parquet", partitioning="hive").to_table()
    assert sorted(landed.column("_source_rowid").to_pylist()) == list(range(1, 301))
    assert landed.schema.field("timestamp").type == pa.timestamp("us", "UTC")

    # A replay from the beginning (a new consumer group) adds nothing anywhere.
    replay = sink_settings(unique, routes=routes).model_copy(
        update={"consumer_group": f"replay-{unique}"}
    )
    DeltaSink(replay, connection).run()
    assert sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*.parquet")) == files
    again = ds.dataset(landing, format="parquet", partitioning="hive").count_rows()
    assert again == 300
    assert table_rows(f"{lake_uri}/raw", None).num_rows == 300


def test_an_incompatible_change_goes_to_the_dead_letter_table(
    kafka, schema_registry, s3, tmp_path, unique
):
    topics = raw_readings(kafka, schema_registry, unique, range(1, 21))
    lake_uri = str(tmp_path / "lake")
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    DeltaSink(sink_settings(unique), connection).run()

    # A writer that bypassed the registry's compatibility check: temperature became text.
    changed = curated_schema()
    for field in changed["fields"]:
        if field["name"] == "temperature":
            field["type"] = ["null", "string"]
    schema_id = topics.registry.register_value_schema(f"other.{unique}", changed)
    encoder = AvroEncoder(changed, schema_id)
    for i in range(21, 31):
        topics.raw("raw", encoder.encode(reading(i, temperature="hot")), b"k")
    topics.send("raw", [reading(i) for i in range(31, 41)])
    topics.flush()
    result = DeltaSink(sink_settings(unique), connection).run()

    assert result.dead_letters == 10
    raw = table_rows(f"{lake_uri}/raw", None)
    assert sorted(raw.column("_source_rowid").to_pylist()) == [*range(1, 21), *range(31, 41)]
    dlq = table_rows(f"{lake_uri}/dlq", None).to_pylist()
    assert len(dlq) == 10
    assert all(f"schema id {schema_id} does not fit table" in r["error"] for r in dlq)
    assert all("temperature is string" in r["error"] for r in dlq)


@pytest.mark.slow
@pytest.mark.parametrize("crash_point", ["sink.between_tables", "sink.before_offsets"])
def test_kill_9_between_commits_lands_everything_once(
    crash_point, kafka, schema_registry, s3, tmp_path, unique
):
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    for chunk in range(4):
        topics.send("raw", [reading(i) for i in range(chunk * 500 + 1, chunk * 500 + 501)])
        topics.raw("raw", b"poison %d" % chunk)  # dead rows: the DLQ table commits first
    topics.flush()
    lake_uri = str(tmp_path / "lake")
    env = sink_process_env(
        kafka,
        schema_registry,
        unique,
        lake_uri,
        SENSORSTREAM_SINK_POLL_BATCH="300",
        SENSORSTREAM_SINK_DEFAULTS=json.dumps({"max_rows": 300}),
        SENSORSTREAM_SINK_INSTANCE_ID="sink-1",
    )
    cmd = [sys.executable, "-m", "sensorstream", "sink", "--once"]
    doomed = subprocess.run(
        cmd,
        env={**env, "SENSORSTREAM_FAILPOINTS": f"{crash_point}=3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doomed.returncode == -signal.SIGKILL, doomed.stderr[-3000:]
    finish = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr[-3000:]

    raw = table_rows(f"{lake_uri}/raw", None)
    rowids = Counter(raw.column("_source_rowid").to_pylist())
    assert set(rowids) == set(range(1, 2001)) and max(rowids.values()) == 1
    dlq = table_rows(f"{lake_uri}/dlq", None).to_pylist()
    assert sorted(r["message_value"] for r in dlq) == [b"poison %d" % c for c in range(4)]


def test_records_past_retention_are_reported_in_the_dead_letter_table_once(
    kafka, schema_registry, s3, tmp_path, unique, caplog
):
    """A sink down longer than retention: the deleted records are named, not skipped quietly."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from sensorstream.metrics import MetricFamilies
    from sinks.metrics import SinkMetrics
    from tests.unit.sensorstream.test_metrics_router_sink import scrape, value

    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    topic = topics.name("raw")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})

    def log_ends() -> dict[int, int]:
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": unique})
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in (0, 1)
            }
        finally:
            consumer.close()

    send_spread(topics, "raw", range(1, 41), 2)
    lake_uri = str(tmp_path / "lake")
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    assert DeltaSink(sink_settings(unique), connection).run().rows["raw"] == 40
    read = log_ends()  # where the sink's consumer offsets now stand

    send_spread(topics, "raw", range(41, 101), 2)
    ends = log_ends()
    assert all(ends[p] - read[p] == 30 for p in (0, 1))
    # Retention, made deterministic: partition 0 loses everything new, partition 1 its
    # first half.
    cut = {0: ends[0], 1: read[1] + (ends[1] - read[1]) // 2}
    deleted = admin.delete_records([TopicPartition(topic, p, cut[p]) for p in (0, 1)])
    for future in deleted.values():
        future.result(30)

    families = MetricFamilies()
    with caplog.at_level("ERROR", logger="sensorstream.sink"):
        second = DeltaSink(sink_settings(unique), connection, metrics=SinkMetrics(families)).run()
    assert second.dead_letters == 2
    assert second.rows.get("raw", 0) == ends[1] - cut[1]
    gone = {p: cut[p] - read[p] for p in (0, 1)}
    dead = {"stage": "sink", "reason": "expired"}
    assert value(scrape(families), "sensorstream_dead_letters_total", **dead) == sum(gone.values())
    assert sum("deleted by the topic's retention" in r.message for r in caplog.records) == 2

    letters = table_rows(f"{lake_uri}/dlq", None).to_pylist()
    assert len(letters) == 2
    for row in letters:
        source = json.loads(row["source"])
        p = int(source["partition"])
        assert source["topic"] == topic and int(source["offset"]) == cut[p] - 1
        named = f"offsets {read[p]} to {cut[p] - 1} of {topic}/{p} ({gone[p]} records"
        assert named in row["error"]
        headers = json.loads(row["headers"])
        assert headers["dlq.expired.first_offset"] == str(read[p])
        assert headers["dlq.expired.last_offset"] == str(cut[p] - 1)
        assert row["message_value"] is None

    raw = table_rows(f"{lake_uri}/raw", None)
    offsets = {(r["_kafka_partition"], r["_kafka_offset"]) for r in raw.to_pylist()}
    assert {(1, o) for o in range(cut[1], ends[1])} <= offsets
    assert not {(p, o) for p in (0, 1) for o in range(read[p], cut[p])} & offsets
    assert raw.num_rows == 40 + ends[1] - cut[1]

    # Partition 0 has nothing past the gap, so its offsets are not committed past it: the next
    # run meets the same gap, and the dead-letter table already holds it.
    third = DeltaSink(sink_settings(unique), connection).run()
    assert third.dead_letters == 0
    assert len(table_rows(f"{lake_uri}/dlq", None).to_pylist()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("crash_point", ["sink.expired_found", "sink.expired_written"])
def test_a_kill_around_a_retention_gaps_dead_letter_neither_loses_nor_repeats_it(
    crash_point, kafka, schema_registry, s3, tmp_path, unique
):
    """The rebalance callback only notes a gap; the loop writes its dead-letter row before it
    buffers a record past the gap. Killed just before the row is written, the sink has
    committed nothing past the gap, so the next run finds the gap again; killed just after, the
    row's txn version makes the next run skip it. Either way each gap has one row, and every
    record after it lands once."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    topic = topics.name("raw")

    group = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"sink-{unique}"})
    partitions = [TopicPartition(topic, p) for p in (0, 1)]

    def committed() -> dict[int, int]:
        return {tp.partition: tp.offset for tp in group.committed(partitions, timeout=30)}

    send_spread(topics, "raw", range(1, 41), 2)  # offsets 0-19 on each partition
    lake_uri = str(tmp_path / "lake")
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    assert DeltaSink(sink_settings(unique), connection).run().rows["raw"] == 40
    assert committed() == {0: 20, 1: 20}
    # Offsets 20-49; retention then takes 20-34 of each partition.
    send_spread(topics, "raw", range(41, 101), 2)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, p, 35) for p in (0, 1)]).values():
        future.result(30)

    env = sink_process_env(
        kafka, schema_registry, unique, lake_uri, SENSORSTREAM_FAILPOINTS=f"{crash_point}=1"
    )
    doomed = subprocess.run(
        [sys.executable, "-m", "sensorstream", "sink", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert doomed.returncode == -signal.SIGKILL, doomed.stderr[-3000:]
    assert committed() == {0: 20, 1: 20}  # nothing past the gaps before their rows

    again = DeltaSink(sink_settings(unique), connection).run()
    assert again.dead_letters == (2 if crash_point == "sink.expired_found" else 0)
    assert again.rows["raw"] == 30
    assert committed() == {0: 50, 1: 50}
    group.close()

    raw = Counter(table_rows(f"{lake_uri}/raw", None).column("_source_rowid").to_pylist())
    assert set(raw) == set(range(1, 41)) | set(range(71, 101)) and max(raw.values()) == 1
    letters = table_rows(f"{lake_uri}/dlq", None).to_pylist()
    assert sorted(json.loads(r["headers"])["dlq.expired.first_offset"] for r in letters) == [
        "20",
        "20",
    ]
    assert sorted(json.loads(r["source"])["partition"] for r in letters) == ["0", "1"]
    assert all(json.loads(r["source"])["offset"] == "34" for r in letters)
