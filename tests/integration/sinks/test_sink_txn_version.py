"""A table's txn version per topic-partition only moves forward (DESIGN section 5, "Replays and
operators"), against real Kafka while records keep arriving: two sinks of different consumer
groups writing one table, the landing area turned on for a route that already has a table (the
sink re-reads the topic from its start for it), the landing area rebuilt from the topic's start,
and a consumer group reset to offset 0. Each table, and the landing area, is read back and must
hold every source row exactly once by (node, source table, rowid)."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Consumer, TopicPartition
from deltalake import DeltaTable

from sensorstream.topics import TopicSpec, ensure_topics
from sinks.app import DeltaSink
from sinks.landing import LandingWriter
from sinks.settings import SinkSettings, TableSettings
from sinks.tables import app_id
from tests.integration.sinks.test_sink import (
    Topics,
    connection_for,
    send_spread,
    sink_settings,
    table_rows,
)
from tests.integration.sinks.test_sink_concurrency import (
    Feeder,
    SinkThread,
    end_offsets,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
LANDED_TIMEOUT_S = 180.0


def assert_exact(rows: pa.Table, total: int, where: str) -> None:
    """Source rows 1..total, each exactly once by (node, source table, rowid)."""
    keys = Counter(
        zip(
            rows.column("_node_id").to_pylist(),
            rows.column("_source_table").to_pylist(),
            rows.column("_source_rowid").to_pylist(),
            strict=True,
        )
    )
    twice = sorted(k for k, n in keys.items() if n > 1)
    assert not twice, f"{where}: {len(twice)} of {rows.num_rows} rows twice, e.g. {twice[:3]}"
    rowids = {k[2] for k in keys}
    missing = set(range(1, total + 1)) - rowids
    assert not missing and len(rowids) == total, f"{where}: missing {sorted(missing)[:10]}"


class Stream:
    """One routed topic fed from a thread, and the sinks started on it, stopped at the end."""

    def __init__(self, kafka, schema_registry, s3, tmp_path: Path, unique: str) -> None:
        self.kafka = kafka
        self.topics = Topics(kafka, schema_registry.url, unique)
        self.topic = self.topics.name("raw")
        ensure_topics(
            {"bootstrap.servers": kafka.bootstrap_servers}, [TopicSpec(self.topic, PARTITIONS)]
        )
        self.lake = tmp_path / "lake"
        self.table_uri = str(self.lake / "raw")
        self.connection = connection_for(kafka, schema_registry, s3, str(self.lake))
        self.settings = sink_settings(
            unique, poll_batch=200, defaults=TableSettings(max_rows=400, max_latency_s=0.5)
        ).model_copy(update={"once": False})
        self.stops: list[threading.Event] = []

    def sink(self, name: str, settings: SinkSettings | None = None) -> SinkThread:
        sink = DeltaSink(settings or self.settings, self.connection, stop(self.stops))
        return SinkThread(sink, name).start()

    def with_landing(self) -> SinkSettings:
        return self.settings.model_copy(update={"routes": {"raw": TableSettings(landing=True)}})

    def close(self) -> None:
        for event in self.stops:
            event.set()

    def ends(self) -> dict[int, int]:
        return end_offsets(self.kafka.bootstrap_servers, self.topic, PARTITIONS)

    def table_holds(self, ends: dict[int, int]) -> bool:
        """The table's txn versions have reached the topic's `ends` on every partition."""
        try:
            table = DeltaTable(self.table_uri)
        except Exception:  # not created yet
            return False
        return all(
            (table.transaction_version(app_id(self.topic, p)) or -1) >= end - 1
            for p, end in ends.items()
        )

    def landing_holds(self, ends: dict[int, int]) -> bool:
        landing = LandingWriter(str(self.lake))
        return all(
            (landing.last_landed_offset("raw", self.topic, p) or -1) >= end - 1
            for p, end in ends.items()
        )

    def wait_landed(self, *sinks: SinkThread, landing: bool = False) -> None:
        """Until the table (and the landing area) hold everything sent so far."""
        ends = self.ends()

        def done() -> bool:
            for sink in sinks:
                assert sink.thread.is_alive(), f"{sink.thread.name} stopped: {sink.error!r}"
            return self.table_holds(ends) and (not landing or self.landing_holds(ends))

        wait_for(done, f"the sinks to land up to {ends}", LANDED_TIMEOUT_S, 0.25)

    def landing_rows(self) -> pa.Table:
        root = self.lake / "landing" / "raw"
        return ds.dataset(str(root), format="parquet", partitioning="hive").to_table()


@pytest.fixture
def stream(kafka, schema_registry, s3, tmp_path, unique):
    stream = Stream(kafka, schema_registry, s3, tmp_path, unique)
    try:
        yield stream
    finally:
        stream.close()


def test_two_sink_groups_on_one_table_while_records_arrive(stream):
    """A second sink with a consumer group of its own joins a table another sink is writing
    (a migration, a second deployment): their batches overlap and interleave."""
    total = 16_000
    feeder = Feeder(stream.topics, "raw", total, PARTITIONS)
    feeder.allow(4_000)
    first = stream.sink("sink-a")
    wait_for(lambda: first.rows >= 1_000, "the first sink to land 1000 rows", 90)
    other_group = stream.settings.model_copy(
        update={"consumer_group": f"{stream.settings.consumer_group}-b"}
    )
    second = stream.sink("sink-b", other_group)
    feeder.allow(total)
    feeder.join(120)
    stream.wait_landed(first, second)
    first.finish(60)
    second.finish(60)

    assert_exact(table_rows(stream.table_uri, None), total, "the table")
    assert first.rows > 0 and second.rows > 0, (first.rows, second.rows)
    print(f"first group landed {first.rows} rows, second {second.rows}")


def test_landing_turned_on_mid_stream_then_rebuilt_from_the_topics_start(stream):
    """The runbook's steps: `landing: true` for a route whose table exists (the sink reads the
    topic from its start for the landing area while records keep arriving), then the landing
    area deleted and rebuilt from the topic's start."""
    total = 24_000
    feeder = Feeder(stream.topics, "raw", total, PARTITIONS)
    feeder.allow(10_000)
    plain = stream.sink("sink-plain")
    wait_for(lambda: plain.rows >= 8_000, "the sink to land 8000 rows", 120)
    plain.finish(60)

    feeder.allow(16_000)
    landing = stream.sink("sink-landing", stream.with_landing())
    wait_for(lambda: feeder.sent >= 16_000, "16000 records sent", 120)
    stream.wait_landed(landing, landing=True)
    landing.finish(60)
    assert_exact(table_rows(stream.table_uri, None), 16_000, "the table, landing turned on")
    assert_exact(stream.landing_rows(), 16_000, "the landing area, turned on")

    shutil.rmtree(stream.lake / "landing")
    feeder.allow(total)
    rebuilt = stream.sink("sink-rebuild", stream.with_landing())
    feeder.join(120)
    stream.wait_landed(rebuilt, landing=True)
    rebuilt.finish(60)
    assert_exact(table_rows(stream.table_uri, None), total, "the table, landing rebuilt")
    assert_exact(stream.landing_rows(), total, "the landing area, rebuilt")


def test_a_group_reset_to_offset_0_lands_nothing_twice(stream, kafka):
    """An operator replays the topic (`kafka-consumer-groups --reset-offsets --to-earliest`)
    while records keep arriving."""
    send_spread(stream.topics, "raw", range(1, 6_001), PARTITIONS)
    first = stream.sink("sink-first")
    stream.wait_landed(first)
    first.finish(60)

    group = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": stream.settings.consumer_group}
    )
    try:
        group.commit(
            offsets=[TopicPartition(stream.topic, p, 0) for p in range(PARTITIONS)],
            asynchronous=False,
        )
    finally:
        group.close()

    feeder = Feeder(stream.topics, "raw", 9_000, PARTITIONS)
    feeder.sent = 6_000  # continue the rowids where send_spread stopped
    replay = stream.sink("sink-replay")
    feeder.allow(9_000)
    feeder.join(120)
    stream.wait_landed(replay)
    replay.finish(60)
    assert_exact(table_rows(stream.table_uri, None), 9_000, "the table after the replay")
