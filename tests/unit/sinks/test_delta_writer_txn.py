"""A table's txn version per topic-partition only moves forward, whatever a batch mixes.

A batch can hold new records of one partition beside records of another that the table holds
already: a sink re-reading a topic for its landing area, a second consumer group writing the
same table, a replay. The stale partition must keep its txn version (its last landed offset);
recorded lower, its next records would land a second time.

Real deltalake on a local path: no server involved."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from sinks.delta_writer import DeltaTableWriter
from sinks.settings import SinkSettings
from sinks.tables import app_id, target_for

TOPIC = "sensors.raw"


def rows(spans: dict[int, range]) -> pa.Table:
    """Sink rows for the given offsets of each partition."""
    partitions = [p for p, offsets in spans.items() for _ in offsets]
    offsets = [o for span in spans.values() for o in span]
    return pa.table(
        {
            "x": pa.array(offsets, pa.int64()),
            "_kafka_topic": pa.array([TOPIC] * len(offsets), pa.string()),
            "_kafka_partition": pa.array(partitions, pa.int32()),
            "_kafka_offset": pa.array(offsets, pa.int64()),
            "event_date": pa.array([date(2026, 11, 23)] * len(offsets), pa.date32()),
        }
    )


def write(writer: DeltaTableWriter, spans: dict[int, range]) -> int:
    return writer.write(rows(spans), {(TOPIC, p): span[-1] for p, span in spans.items()})


def landed(uri: str) -> Counter:
    table = DeltaTable(uri).to_pyarrow_table()
    return Counter(
        zip(
            table.column("_kafka_partition").to_pylist(),
            table.column("_kafka_offset").to_pylist(),
            strict=True,
        )
    )


def writer_for(tmp_path: Path, **options: Any) -> DeltaTableWriter:
    settings = SinkSettings(topics=[TOPIC], topic_prefix="sensors.")
    return DeltaTableWriter(target_for(TOPIC, settings, str(tmp_path)), None, **options)


def test_a_stale_partition_keeps_its_txn_version_in_a_mixed_batch(tmp_path: Path) -> None:
    writer = writer_for(tmp_path)
    assert write(writer, {0: range(0, 100), 1: range(0, 100)}) == 200

    # Partition 0 moves on while partition 1 is read again from 20 (already in the table).
    assert write(writer, {0: range(100, 150), 1: range(20, 60)}) == 50
    table = DeltaTable(writer.target.uri)
    assert table.transaction_version(app_id(TOPIC, 0)) == 149
    assert table.transaction_version(app_id(TOPIC, 1)) == 99

    # Partition 1's re-read goes on to its end and past it: only 100.. is new.
    assert write(writer, {1: range(60, 130)}) == 30
    counts = landed(writer.target.uri)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == {(0, o) for o in range(150)} | {(1, o) for o in range(130)}
    assert DeltaTable(writer.target.uri).transaction_version(app_id(TOPIC, 1)) == 129


def test_a_batch_with_nothing_new_commits_nothing(tmp_path: Path) -> None:
    writer = writer_for(tmp_path)
    write(writer, {0: range(0, 10), 1: range(0, 10)})
    version = DeltaTable(writer.target.uri).version()
    assert write(writer, {0: range(3, 8), 1: range(0, 10)}) == 0
    assert DeltaTable(writer.target.uri).version() == version


def test_two_writers_of_one_table_from_different_positions(tmp_path: Path) -> None:
    """Two sinks (consumer groups) on one table, each batch of each mixing both partitions."""
    first, second = writer_for(tmp_path), writer_for(tmp_path)
    write(first, {0: range(0, 40), 1: range(0, 40)})
    write(second, {0: range(20, 60), 1: range(10, 30)})  # partition 1 all stale
    write(second, {1: range(30, 50)})  # 30..39 are the first's
    write(first, {0: range(40, 80), 1: range(40, 80)})
    write(second, {0: range(60, 90), 1: range(50, 90)})
    counts = landed(first.target.uri)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == {(p, o) for p in (0, 1) for o in range(90)}


def test_write_seconds_adds_up_the_time_spent_in_write(tmp_path: Path) -> None:
    """What the sink's observer reports as a batch's Delta write time."""
    writer = writer_for(tmp_path)
    assert writer.write_seconds == 0.0
    write(writer, {0: range(0, 10)})
    first = writer.write_seconds
    assert first > 0
    write(writer, {0: range(0, 10)})  # nothing new: still time spent reading the table
    assert writer.write_seconds > first


def test_a_batch_of_only_new_rows_is_written_without_a_copy(tmp_path: Path, monkeypatch) -> None:
    """Filtering a batch the table holds none of would copy all of it: a second copy of the
    batch in memory while delta-rs writes it."""
    import sinks.delta_writer as delta_writer

    handed: list[pa.Table] = []
    real = delta_writer.write_deltalake

    def recording(table_or_uri, data, **kwargs):
        handed.append(data)
        return real(table_or_uri, data, **kwargs)

    monkeypatch.setattr(delta_writer, "write_deltalake", recording)
    writer = writer_for(tmp_path)
    write(writer, {0: range(0, 10), 1: range(0, 10)})
    batch = rows({0: range(10, 20), 1: range(10, 20)})
    assert writer.write(batch, {(TOPIC, 0): 19, (TOPIC, 1): 19}) == 20
    assert handed[-1] is batch
    # a batch the table partly holds is still filtered
    assert write(writer, {0: range(15, 25)}) == 5
    assert handed[-1].num_rows == 5
    assert landed(writer.target.uri) == Counter(
        {(p, o): 1 for p, last in ((0, 25), (1, 20)) for o in range(last)}
    )
