"""A sink table's `_delta_log` stays small under continuous commits, on the S3 server: checkpoints
land on their interval whoever commits (two sink writers, a compaction), the table's own
retention (delta.logRetentionDuration) removes expired commit files and stale checkpoints, and
the sink's txn versions survive that cleanup, so a replay after it lands nothing twice.

A retention of 0 hours (every log file older than the latest checkpoint has expired) stands in
for days of commits; a test with the default retention shows nothing within it is removed."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sinks.app import DeltaSink
from sinks.delta_writer import DeltaTableWriter
from sinks.maintenance import compact
from sinks.settings import TableSettings
from sinks.tables import TableTarget, app_id
from tests.integration.sinks.test_sink import (
    Topics,
    connection_for,
    reading,
    sink_settings,
    table_rows,
)
from tests.integration.sinks.test_sink_maintenance import listing

pytestmark = pytest.mark.integration

TOPIC = "sensors.raw"
INTERVAL = 10
ROWS = 3


def batch(partition: int, first_offset: int) -> pa.Table:
    offsets = list(range(first_offset, first_offset + ROWS))
    return pa.table(
        {
            "seq": pa.array([partition * 1_000_000 + o for o in offsets], pa.int64()),
            "_kafka_topic": pa.array([TOPIC] * ROWS, pa.string()),
            "_kafka_partition": pa.array([partition] * ROWS, pa.int32()),
            "_kafka_offset": pa.array(offsets, pa.int64()),
            "event_date": pa.array([date(2026, 11, 23)] * ROWS, pa.date32()),
        }
    )


def writer(uri: str, options, retention_hours: float) -> DeltaTableWriter:
    """A sink's writer for `uri`: a new one is what a restarted sink process has."""
    return DeltaTableWriter(
        TableTarget("raw", None, uri, TableSettings()),
        options,
        checkpoint_interval=INTERVAL,
        log_retention_hours=retention_hours,
    )


def log_files(uri: str, options) -> tuple[list[int], list[int]]:
    """(versions of the commit files, versions of the checkpoints) in the table's log."""
    names = listing(f"{uri}/_delta_log", options)
    commits = sorted(int(n[:20]) for n in names if n.endswith(".json"))
    checkpoints = sorted(int(n[:20]) for n in names if n.endswith(".checkpoint.parquet"))
    return commits, checkpoints


@pytest.fixture
def s3_table(s3, s3_bucket, unique) -> tuple[str, dict[str, str]]:
    return f"s3://{s3_bucket}/delta-log/{unique}", s3.storage_options()


def test_two_writers_and_a_compaction_keep_the_log_bounded_and_the_txn_versions(s3_table):
    uri, options = s3_table
    sinks = [writer(uri, options, 0), writer(uri, options, 0)]  # two processes, one table
    rounds, compacted_at = 40, 20
    for round_ in range(rounds):
        if round_ == compacted_at:  # the compaction's lease, OPTIMIZE and release commits
            compact(uri, options)
        for partition, sink in enumerate(sinks):
            assert (
                sink.write(
                    batch(partition, ROWS * round_), {(TOPIC, partition): ROWS * round_ + ROWS - 1}
                )
                == ROWS
            )
            for each in sinks:  # the checkpoints and cleanups, written beside the commits
                each.settle()
            version = DeltaTable(uri, storage_options=options).version()
            commits, checkpoints = log_files(uri, options)
            if version >= INTERVAL - 1:
                # the newest checkpoint is on the interval, whoever committed its version ...
                assert checkpoints == [(version + 1) // INTERVAL * INTERVAL - 1], (version, commits)
                # ... and nothing older than it is left
                assert commits == list(range(checkpoints[0], version + 1)), version
    assert version >= 3 * INTERVAL  # several checkpoints came and went
    assert 0 not in commits  # the commit files that set the first txn versions are gone

    table = DeltaTable(uri, storage_options=options)
    seqs = Counter(table.to_pyarrow_table()["seq"].to_pylist())
    assert len(seqs) == 2 * rounds * ROWS and max(seqs.values()) == 1
    last = ROWS * rounds - 1
    assert [table.transaction_version(app_id(TOPIC, p)) for p in (0, 1)] == [last, last]

    # Restarted sinks replay every batch: the txn versions, now only in the checkpoint, skip all.
    restarted = [writer(uri, options, 0), writer(uri, options, 0)]
    for round_ in range(rounds):
        for partition, sink in enumerate(restarted):
            offsets = {(TOPIC, partition): ROWS * round_ + ROWS - 1}
            assert sink.write(batch(partition, ROWS * round_), offsets) == 0
    after = DeltaTable(uri, storage_options=options)
    assert after.version() == table.version()
    assert after.count() == 2 * rounds * ROWS


def test_nothing_within_the_retention_is_removed(s3_table):
    """With the default retention (7 days), every version stays readable."""
    uri, options = s3_table
    sink = writer(uri, options, 168)
    for commit in range(2 * INTERVAL + 3):
        sink.write(batch(0, ROWS * commit), {(TOPIC, 0): ROWS * commit + ROWS - 1})
    sink.close()
    commits, checkpoints = log_files(uri, options)
    assert commits == list(range(2 * INTERVAL + 3))
    assert checkpoints == [INTERVAL - 1, 2 * INTERVAL - 1]
    assert DeltaTable(uri, storage_options=options, version=0).count() == ROWS


def test_a_sink_replaying_its_topic_after_cleanup_lands_nothing_twice(
    kafka, schema_registry, s3, s3_bucket, unique
):
    """The whole sink: many small commits with retention 0, then a second consumer group reads
    the topic from its start; the table must still hold each record once."""
    lake_uri = f"s3://{s3_bucket}/{unique}/lake"
    options = s3.storage_options()
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw")
    topics.send("raw", [reading(i) for i in range(1, 301)])
    topics.flush()
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    settings = sink_settings(
        unique,
        poll_batch=10,
        checkpoint_interval=5,
        log_cleanup_commits=5,  # clean at every checkpoint
        log_retention_hours=0,
        defaults=TableSettings(max_rows=10),
    )
    assert DeltaSink(settings, connection).run().rows == {"raw": 300}
    uri = f"{lake_uri}/raw"
    commits, checkpoints = log_files(uri, options)
    assert 0 not in commits and len(checkpoints) == 1 and len(commits) <= 5, (commits, checkpoints)

    replay = settings.model_copy(update={"consumer_group": f"replay-{unique}"})
    assert sum(DeltaSink(replay, connection).run().rows.values()) == 0
    rowids = Counter(table_rows(uri, options).column("_source_rowid").to_pylist())
    assert sorted(rowids) == list(range(1, 301)) and max(rowids.values()) == 1
