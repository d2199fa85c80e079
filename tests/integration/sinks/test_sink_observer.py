"""The sink's observer hooks (`sinks.observer`), which the sink benchmark times the sink with
instead of swapping the sink's own methods: against real Kafka, every consumed record and
every landed batch is reported once, in the order the loop and the flush threads see them."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import TopicPartition

from sinks.app import DeltaSink
from sinks.observer import BatchTiming, SinkObserver
from sinks.settings import TableSettings
from tests.integration.sinks.test_sink import Topics, connection_for, reading, sink_settings

pytestmark = pytest.mark.integration


class Recorder(SinkObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.lock = threading.Lock()  # batch hooks come from flush threads

    def note(self, kind: str, what: object) -> None:
        with self.lock:
            self.events.append((kind, what))

    def consumed(self, started: float, ended: float, messages: int) -> None:
        assert ended >= started
        self.note("consumed", messages)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self.note("assigned", sorted((tp.topic, tp.partition) for tp in partitions))

    def batch_committing(self, route: str, records: int) -> None:
        self.note("committing", (route, records))

    def batch_committed(self, timing: BatchTiming) -> None:
        self.note("committed", timing)

    def lanes_waited(self, started: float, ended: float) -> None:
        assert ended >= started
        self.note("waited", ended - started)

    def landing_all(self) -> None:
        self.note("landing_all", None)

    def of(self, kind: str) -> list:
        return [what for k, what in self.events if k == kind]


def test_the_observer_sees_every_record_consumed_and_every_batch_landed(
    kafka, schema_registry, s3, tmp_path, unique
):
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw")
    topics.send("raw", [reading(i) for i in range(1, 251)])
    topics.flush()
    recorder = Recorder()
    settings = sink_settings(unique, poll_batch=50, defaults=TableSettings(max_rows=100))
    connection = connection_for(kafka, schema_registry, s3, str(tmp_path / "lake"))

    result = DeltaSink(settings, connection, observer=recorder).run()

    assert result.rows == {"raw": 250}
    kinds = [k for k, _ in recorder.events]
    assert kinds.index("assigned") < kinds.index("committing")
    assert recorder.of("assigned")[0][0][0] == topics.name("raw")
    assert sum(recorder.of("consumed")) == 250
    assert kinds.count("landing_all") == 1
    batches: list[BatchTiming] = recorder.of("committed")
    assert [(b.route, b.records) for b in batches] == recorder.of("committing")
    assert sum(b.records for b in batches) == 250
    assert len(batches) >= 2  # max_rows 100: the table's batches are flushed as they fill
    for b in batches:
        assert b.route == "raw"
        assert b.decode_s > 0
        assert b.commit_ended > b.commit_started
        assert 0 < b.delta_write_s <= b.commit_ended - b.commit_started
    assert recorder.of("waited"), "the final flush waits for the lanes"
