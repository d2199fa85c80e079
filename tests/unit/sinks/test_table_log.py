"""The log settings of sink tables: what a new table gets, how a table of an earlier release gains
them without its data being rewritten, and that an operator's own value stays.

Real deltalake on a local path: no server involved (the S3 behaviour is in
tests/integration/sinks/test_delta_log.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, PostCommitHookProperties, write_deltalake

from sinks.delta_writer import DeltaTableWriter
from sinks.maintain_settings import DEFAULT_RETENTION_HOURS
from sinks.maintenance import vacuum
from sinks.settings import SinkSettings
from sinks.table_log import clean_expired_log, cleanup_interval, retention_interval
from sinks.tables import target_for
from tests.unit.sinks.sink_batches import TOPIC, batch


def writer_for(tmp_path: Path, **settings) -> DeltaTableWriter:
    sink = SinkSettings(topics=[TOPIC], topic_prefix="sensors.", **settings)
    return DeltaTableWriter(
        target_for(TOPIC, sink, str(tmp_path)),
        None,
        checkpoint_interval=sink.checkpoint_interval,
        log_retention_hours=sink.log_retention_hours,
    )


@pytest.mark.parametrize(
    ("hours", "interval"),
    [
        (168, "interval 7 days"),
        (36, "interval 36 hours"),
        (0.5, "interval 1800 seconds"),
        (0, "interval 0 seconds"),
    ],
)
def test_retention_is_a_whole_unit_interval(hours, interval):
    assert retention_interval(hours) == interval


def test_a_new_table_gets_the_log_settings(tmp_path):
    writer = writer_for(tmp_path)
    assert writer.write(batch(0), {(TOPIC, 0): 2}) == 3
    configuration = DeltaTable(writer.target.uri).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 7 days"
    assert configuration["delta.checkpointInterval"] == "20"


def test_the_retention_follows_the_sink_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("SENSORSTREAM_SINK_LOG_RETENTION_HOURS", "48")
    writer = writer_for(tmp_path)
    writer.write(batch(0), {(TOPIC, 0): 2})
    configuration = DeltaTable(writer.target.uri).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 2 days"


def older_release_table(uri: str) -> None:
    """A table as the sink created it before: only the checkpoint interval set."""
    write_deltalake(
        uri,
        batch(0),
        mode="append",
        partition_by=["event_date"],
        configuration={"delta.checkpointInterval": "100"},
    )


def test_a_table_of_an_earlier_release_gains_the_retention_without_a_rewrite(tmp_path):
    writer = writer_for(tmp_path)
    older_release_table(writer.target.uri)
    files_before = set(DeltaTable(writer.target.uri).file_uris())
    assert writer.write(batch(3), {(TOPIC, 0): 5}) == 3
    table = DeltaTable(writer.target.uri)
    assert table.metadata().configuration["delta.logRetentionDuration"] == "interval 7 days"
    assert set(table.file_uris()) > files_before  # the old file is still there, not rewritten
    assert table.count() == 6
    operations = [entry["operation"] for entry in table.history()]
    assert operations.count("SET TBLPROPERTIES") == 1


def test_with_adopt_log_properties_off_an_earlier_table_keeps_its_settings(tmp_path):
    """The writer of the earlier release, which the delta_log benchmark compares against."""
    writer = writer_for(tmp_path)
    older_release_table(writer.target.uri)
    earlier = DeltaTableWriter(writer.target, None, adopt_log_properties=False)
    assert earlier.write(batch(3), {(TOPIC, 0): 5}) == 3
    table = DeltaTable(writer.target.uri)
    assert "delta.logRetentionDuration" not in table.metadata().configuration
    assert "SET TBLPROPERTIES" not in [entry["operation"] for entry in table.history()]


def test_a_retention_the_operator_set_is_kept(tmp_path):
    writer = writer_for(tmp_path)
    older_release_table(writer.target.uri)
    DeltaTable(writer.target.uri).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 30 days"}
    )
    writer.write(batch(3), {(TOPIC, 0): 5})
    configuration = DeltaTable(writer.target.uri).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 30 days"


def test_txn_versions_outlive_their_commit_files_even_with_a_txn_retention(tmp_path):
    """Checkpoints keep a txn version without an update time whatever
    delta.setTransactionRetentionDuration says: the sink's versions carry none, so an idle
    partition's version is not dropped when the commit that set it is cleaned up."""
    writer = writer_for(tmp_path, checkpoint_interval=3, log_retention_hours=0)
    writer.write(batch(0), {(TOPIC, 0): 2})  # partition 0, then idle
    DeltaTable(writer.target.uri).alter.set_table_properties(
        {"delta.setTransactionRetentionDuration": "interval 0 seconds"}
    )
    for i in range(7):
        other = batch(100 * i).set_column(2, "_kafka_partition", pa.array([1] * 3, pa.int32()))
        writer.write(other, {(TOPIC, 1): 100 * i + 2})
    writer.close()  # its last checkpoint and cleanup, written beside the commits
    log = sorted(p.name for p in (Path(writer.target.uri) / "_delta_log").iterdir())
    assert "00000000000000000000.json" not in log
    assert DeltaTable(writer.target.uri).transaction_version(f"sensorstream:{TOPIC}/0") == 2
    assert writer_for(tmp_path).write(batch(0), {(TOPIC, 0): 2}) == 0


def log_names(writer: DeltaTableWriter) -> list[str]:
    return sorted(p.name for p in (Path(writer.target.uri) / "_delta_log").iterdir())


def test_a_commit_leaves_the_log_alone_and_a_checkpoint_cleans_it(tmp_path):
    """delta-rs's hook would clean (listing the whole log) after every commit; the sink's
    commits leave it to the cleanup that follows each checkpoint."""
    writer = writer_for(tmp_path, checkpoint_interval=5)
    for i in range(7):  # versions 0-6, a checkpoint at 4; nothing expires in 7 days
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
    DeltaTable(writer.target.uri).alter.set_table_properties(  # what an operator might do
        {"delta.logRetentionDuration": "interval 0 seconds"},
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    writer.write(batch(21), {(TOPIC, 0): 23})  # version 8: no checkpoint
    assert "00000000000000000000.json" in log_names(writer)
    writer.write(batch(24), {(TOPIC, 0): 26})  # version 9: a checkpoint
    writer.close()  # written beside the commits: wait for it
    names = log_names(writer)
    assert [n for n in names if n.endswith(".checkpoint.parquet")] == [
        "00000000000000000009.checkpoint.parquet"
    ]
    assert "00000000000000000008.json" not in names
    assert DeltaTable(writer.target.uri).count() == 27


def test_a_table_that_turned_cleanup_off_keeps_its_log(tmp_path):
    writer = writer_for(tmp_path, checkpoint_interval=3, log_retention_hours=0)
    writer.write(batch(0), {(TOPIC, 0): 2})
    DeltaTable(writer.target.uri).alter.set_table_properties(
        {"delta.enableExpiredLogCleanup": "false"}
    )
    for i in range(1, 8):
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
    writer.close()
    assert "00000000000000000005.checkpoint.parquet" in log_names(writer)
    assert "00000000000000000000.json" in log_names(writer)


def test_frequent_checkpoints_clean_the_log_only_every_so_many_commits(tmp_path):
    """A checkpoint every 3 commits with a cleanup every 6: the checkpoint at version 2 leaves
    the log alone (each cleanup lists the whole `_delta_log`), the one at version 5 cleans."""
    sink = SinkSettings(topics=[TOPIC], topic_prefix="sensors.", log_retention_hours=0)
    writer = DeltaTableWriter(
        target_for(TOPIC, sink, str(tmp_path)),
        None,
        checkpoint_interval=3,
        log_retention_hours=0,
        log_cleanup_every=6,
    )
    for i in range(3):  # versions 0-2, a checkpoint at 2
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
    writer.settle()
    names = log_names(writer)
    assert "00000000000000000002.checkpoint.parquet" in names
    assert "00000000000000000000.json" in names
    for i in range(3, 6):  # versions 3-5, a checkpoint at 5 and a cleanup
        writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2})
    writer.close()
    names = log_names(writer)
    assert "00000000000000000005.checkpoint.parquet" in names
    assert "00000000000000000000.json" not in names
    assert DeltaTable(writer.target.uri).count() == 18


@pytest.mark.parametrize(
    ("interval", "every", "cleans_every"),
    [(10, 100, 100), (100, 100, 100), (30, 100, 90), (250, 100, 250), (10, None, 10)],
)
def test_a_cleanup_is_always_at_a_checkpoint(interval, every, cleans_every):
    assert cleanup_interval(interval, every) == cleans_every


def remove_files_as_of(uri: str, paths: list[str], hours_ago: float) -> None:
    """A commit removing `paths` (as a compaction does) with their deletion stamped `hours_ago`."""
    table = DeltaTable(uri)
    stamp = int((time.time() - hours_ago * 3600) * 1000)
    actions = [{"commitInfo": {"timestamp": stamp, "operation": "OPTIMIZE"}}] + [
        {
            "remove": {
                "path": path,
                "deletionTimestamp": stamp,
                "dataChange": False,
                "extendedFileMetadata": True,
                "partitionValues": {"event_date": path.split("event_date=")[1].split("/")[0]},
                "size": (Path(uri) / path).stat().st_size,
            }
        }
        for path in paths
    ]
    log_file = Path(uri) / "_delta_log" / f"{table.version() + 1:020d}.json"
    log_file.write_text("".join(json.dumps(action) + "\n" for action in actions))
    for path in paths:  # the file itself as old as its removal
        os.utime(Path(uri) / path, (stamp / 1000, stamp / 1000))


def table_of_three_files(writer: DeltaTableWriter) -> tuple[str, list[str]]:
    """Three sink commits through `writer`: the table's URI and its files' paths, sorted."""
    for i in range(3):
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
    uri = writer.target.uri
    table = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
    return uri, sorted(table.column("path").to_pylist())


def test_a_file_compacted_away_is_still_vacuumed_after_later_checkpoints(tmp_path):
    """delta-rs's default vacuum ("lite") deletes only the files whose removal the table's log
    still holds, but a checkpoint drops removals older than `delta.deletedFileRetentionDuration`
    (7 days), and delta-rs refuses a vacuum retention shorter than that: a removal stayed
    vacuumable only until the next checkpoint, a minute later, and the file stayed in storage
    for good."""
    writer = writer_for(tmp_path)
    uri, paths = table_of_three_files(writer)
    first = paths[:2]
    remove_files_as_of(uri, first, hours_ago=DEFAULT_RETENTION_HOURS + 2)
    for i in range(3, 6):  # the sink commits on; a checkpoint among them
        assert writer.write(batch(3 * i), {(TOPIC, 0): 3 * i + 2}) == 3
    DeltaTable(uri).create_checkpoint()

    deleted = vacuum(uri, None, retention_hours=DEFAULT_RETENTION_HOURS)

    assert sorted(Path(p).name for p in deleted) == sorted(Path(p).name for p in first)
    assert not any((Path(uri) / p).exists() for p in first)


def test_a_file_removed_within_the_retention_stays_however_old_it_is(tmp_path):
    """Listing the table's files must not delete what a reader of a version younger than the
    retention still needs: a file written long ago but compacted away an hour ago."""
    uri, paths = table_of_three_files(writer_for(tmp_path))
    written_long_ago = time.time() - 2 * DEFAULT_RETENTION_HOURS * 3600
    for path in paths:
        os.utime(Path(uri) / path, (written_long_ago, written_long_ago))
    remove_files_as_of(uri, paths[:1], hours_ago=1)
    os.utime(Path(uri) / paths[0], (written_long_ago, written_long_ago))

    assert vacuum(uri, None, retention_hours=DEFAULT_RETENTION_HOURS) == []
    assert all((Path(uri) / p).exists() for p in paths)


class _LogThatWillNotClean:
    """A table whose object store refuses the cleanup's deletes."""

    def cleanup_metadata(self) -> None:
        raise OSError("AccessDenied: DeleteObject")


def test_a_failed_cleanup_warns_naming_the_table_and_does_not_raise(caplog):
    # The batch whose checkpoint this follows is in the table already: a cleanup that fails
    # only leaves the log longer, so it must not fail the sink.
    assert clean_expired_log(_LogThatWillNotClean(), "s3://lake/raw") is False
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1
    assert "s3://lake/raw" in warning[0].getMessage()
    assert "AccessDenied" in warning[0].getMessage()


def test_a_cleanup_deletes_the_expired_log(tmp_path):
    uri = str(tmp_path / "t")
    for i in range(3):
        write_deltalake(uri, pa.table({"v": [i]}), mode="append")
    table = DeltaTable(uri)
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    table.create_checkpoint()
    log = Path(uri) / "_delta_log"
    before = sorted(p.name for p in log.glob("*.json"))
    assert clean_expired_log(table, uri) is True
    after = sorted(p.name for p in log.glob("*.json"))
    assert len(after) < len(before)
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 3
