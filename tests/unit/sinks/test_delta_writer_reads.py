"""A batch is committed on the table as its schema check just read it, its txn versions come
from the commits since the last batch rather than a replay of the log, and it still lands once.

Every read of a Delta table on S3 is a LIST and a GET, plus replaying the new commits; with
tables committed every few seconds, reading each table twice per batch (once to check the
batch's schemas, once more to commit) was a fifth of the sink's object-store requests. The
first attempt of a write now commits on the read its schema check made. That must not cost
exactly-once: a commit another writer got in between (the same partitions' txn versions) is
caught by the commit's conflict check, and the batch is re-read and filtered like any lost race.
Likewise the txn versions: `DeltaTable.transaction_version` replays the log since the last
checkpoint (a GET per commit) on every call, per partition; the writer now reads only the
commits made since its previous batch.

Real deltalake on a local path: no server involved."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sensorstream.errors import PipelineError
from sinks.delta_writer import DeltaTableWriter
from sinks.tables import app_id
from tests.unit.sinks.test_delta_writer_txn import TOPIC, landed, rows, write, writer_for


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The table reads (`_refresh`) every writer makes, by table URI."""
    reads: list[str] = []
    real = DeltaTableWriter._refresh

    def counting(self: DeltaTableWriter):
        reads.append(self.target.uri)
        return real(self)

    monkeypatch.setattr(DeltaTableWriter, "_refresh", counting)
    return reads


def check_then_write(writer: DeltaTableWriter, spans: dict[int, range]) -> int:
    """What the sink does per batch: check its schema against the table, then write it."""
    data = rows(spans)
    assert writer.misfits(data.schema) == []
    return writer.write(data, {(TOPIC, p): span[-1] for p, span in spans.items()})


def test_a_checked_batch_reads_its_table_once(tmp_path: Path, counted_reads: list[str]) -> None:
    writer = writer_for(tmp_path, view_reuse_s=0)  # no recent view to go on
    assert write(writer, {0: range(0, 10)}) == 10
    counted_reads.clear()

    assert check_then_write(writer, {0: range(10, 20)}) == 10

    assert len(counted_reads) == 1, counted_reads


def test_the_next_batch_goes_on_the_view_the_last_commit_left(
    tmp_path: Path, counted_reads: list[str]
) -> None:
    writer = writer_for(tmp_path)
    assert check_then_write(writer, {0: range(0, 10)}) == 10
    counted_reads.clear()

    for start in range(10, 50, 10):
        assert check_then_write(writer, {0: range(start, start + 10)}) == 10

    assert counted_reads == []
    assert landed(writer.target.uri) == {(0, o): 1 for o in range(50)}


def test_a_view_older_than_the_reuse_age_is_read_again(
    tmp_path: Path, counted_reads: list[str]
) -> None:
    writer = writer_for(tmp_path, view_reuse_s=0)
    assert check_then_write(writer, {0: range(0, 10)}) == 10
    counted_reads.clear()

    assert check_then_write(writer, {0: range(10, 20)}) == 10

    assert len(counted_reads) == 1, counted_reads


def test_a_write_without_a_check_reads_its_table(tmp_path: Path, counted_reads: list[str]) -> None:
    writer = writer_for(tmp_path, view_reuse_s=0)
    assert check_then_write(writer, {0: range(0, 10)}) == 10
    counted_reads.clear()

    assert write(writer, {0: range(10, 20)}) == 10  # the check's read is used up

    assert len(counted_reads) == 1, counted_reads


def test_another_writers_commit_after_our_last_is_not_written_twice(tmp_path: Path) -> None:
    """The view the last commit left is behind once another writer commits: the commit's
    conflict check (the same partitions' txn app ids) sends the batch back to be re-read."""
    ours = writer_for(tmp_path)
    assert check_then_write(ours, {0: range(0, 10), 1: range(0, 10)}) == 20
    other = DeltaTableWriter(ours.target, None)
    assert write(other, {0: range(10, 25)}) == 15  # e.g. the partition's previous owner

    assert check_then_write(ours, {0: range(10, 30), 1: range(10, 20)}) == 15

    counts = landed(ours.target.uri)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == {(0, o) for o in range(30)} | {(1, o) for o in range(20)}


def test_a_commit_landing_after_the_check_is_not_written_twice(tmp_path: Path) -> None:
    ours = writer_for(tmp_path)
    assert write(ours, {0: range(0, 10)}) == 10
    batch: dict[int, range] = {0: range(10, 30), 1: range(0, 5)}
    data: pa.Table = rows(batch)
    assert ours.misfits(data.schema) == []

    # Another sink (the partitions' previous owner) lands part of the same records meanwhile.
    other = DeltaTableWriter(ours.target, None)
    assert write(other, {0: range(10, 20)}) == 10

    written = ours.write(data, {(TOPIC, p): span[-1] for p, span in batch.items()})

    counts = landed(ours.target.uri)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == {(0, o) for o in range(30)} | {(1, o) for o in range(5)}
    assert written == 15


@pytest.fixture
def log_replays(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `DeltaTable.transaction_version` call: each replays the log since the checkpoint."""
    calls: list[str] = []
    real = DeltaTable.transaction_version

    def counting(self: DeltaTable, app: str):
        calls.append(app)
        return real(self, app)

    monkeypatch.setattr(DeltaTable, "transaction_version", counting)
    return calls


def test_later_batches_replay_no_log_for_their_txn_versions(
    tmp_path: Path, log_replays: list[str]
) -> None:
    writer = writer_for(tmp_path)
    assert write(writer, {0: range(0, 10), 1: range(0, 10)}) == 20
    assert write(writer, {0: range(10, 20), 1: range(10, 20)}) == 20
    log_replays.clear()

    for start in range(20, 100, 10):
        assert check_then_write(writer, {0: range(start, start + 10), 1: range(start, start + 10)})
    assert writer.txn_version(TOPIC, 1) == 99

    assert log_replays == []
    assert DeltaTable(writer.target.uri).transaction_version(app_id(TOPIC, 0)) == 99


def test_another_writers_commits_are_read_and_their_rows_not_written_again(
    tmp_path: Path, log_replays: list[str]
) -> None:
    ours = writer_for(tmp_path)
    assert write(ours, {0: range(0, 5), 1: range(0, 5)}) == 10
    assert write(ours, {0: range(5, 10), 1: range(5, 10)}) == 10  # its partitions looked up
    other = DeltaTableWriter(ours.target, None)
    assert write(other, {0: range(10, 40)}) == 30  # e.g. the partition's previous owner
    assert write(other, {1: range(10, 15)}) == 5
    log_replays.clear()

    assert write(ours, {0: range(10, 50), 1: range(10, 20)}) == 15

    assert log_replays == []  # the other's two commits were read, not the whole log
    counts = landed(ours.target.uri)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == {(0, o) for o in range(50)} | {(1, o) for o in range(20)}


def test_a_log_cleaned_up_under_it_is_looked_up_again(tmp_path: Path) -> None:
    ours = writer_for(tmp_path)
    assert write(ours, {0: range(0, 10)}) == 10
    other = DeltaTableWriter(ours.target, None)
    assert write(other, {0: range(10, 20)}) == 10
    commit = tmp_path / "raw" / "_delta_log" / f"{1:020d}.json"
    assert commit.exists(), sorted(p.name for p in commit.parent.iterdir())
    DeltaTable(ours.target.uri).create_checkpoint()
    commit.unlink()  # as log cleanup does, once a checkpoint covers it

    ours._refresh()
    assert ours._versions(ours._table, [(TOPIC, 0)]) == {(TOPIC, 0): 19}


def test_a_column_another_writer_added_with_another_type_since_the_view_fails_loudly(
    tmp_path: Path,
) -> None:
    """Two sinks merging the same new column with different types within seconds: the view
    this writer's last commit left does not show the other's column yet, so its check passes;
    the commit's conflict check (a schema change) sends it back to a fresh read, where the
    batch no longer fits. It fails naming the column and the remedy, and writes nothing."""
    ours = writer_for(tmp_path)
    assert check_then_write(ours, {0: range(0, 10)}) == 10
    other = DeltaTableWriter(ours.target, None)
    theirs = rows({1: range(0, 5)}).append_column("y", pa.array(["a"] * 5, pa.string()))
    assert other.write(theirs, {(TOPIC, 1): 4}) == 5

    batch = rows({0: range(10, 20)}).append_column("y", pa.array(range(10), pa.int64()))
    assert ours.misfits(batch.schema) == []  # the view its own commit left
    with pytest.raises(PipelineError, match=r"y is int64.*restart"):
        ours.write(batch, {(TOPIC, 0): 19})

    assert set(landed(ours.target.uri)) == {(0, o) for o in range(10)} | {(1, o) for o in range(5)}
