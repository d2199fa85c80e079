"""The rowid guard's verdicts and the pruning rule, on real SQLite files (no servers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from producers.checkpoint import Checkpoint
from producers.pruning import prune_streamed
from producers.rowid_guard import RowidGuard, RowidKind, RowidsMoved, rowid_kind
from producers.source import SQLiteSource

COLUMNS = "timestamp TEXT NOT NULL, sensor_id TEXT NOT NULL, value REAL"
KEYS = {
    RowidKind.AUTOINCREMENT: "id INTEGER PRIMARY KEY AUTOINCREMENT, ",
    RowidKind.INTEGER_PRIMARY_KEY: "id INTEGER PRIMARY KEY, ",
    RowidKind.IMPLICIT: "",
}


@pytest.mark.parametrize(
    ("definition", "kind", "column"),
    [
        ("id INTEGER PRIMARY KEY AUTOINCREMENT, v REAL", RowidKind.AUTOINCREMENT, "id"),
        ("id integer primary key autoincrement, v REAL", RowidKind.AUTOINCREMENT, "id"),
        ("id INTEGER PRIMARY KEY, v REAL", RowidKind.INTEGER_PRIMARY_KEY, "id"),
        ("v REAL, n INTEGER, PRIMARY KEY (n)", RowidKind.INTEGER_PRIMARY_KEY, "n"),
        # Not the rowid: DESC keeps an ordinary column with its own index (a SQLite quirk).
        ("id INTEGER PRIMARY KEY DESC, v REAL", RowidKind.IMPLICIT, None),
        ("id INT PRIMARY KEY, v REAL", RowidKind.IMPLICIT, None),
        ("a INTEGER, b INTEGER, PRIMARY KEY (a, b)", RowidKind.IMPLICIT, None),
        ("v REAL", RowidKind.IMPLICIT, None),
    ],
)
def test_rowid_kind(definition, kind, column) -> None:
    conn = sqlite3.connect(":memory:")
    conn.text_factory = bytes  # as the producer reads
    conn.execute(f"CREATE TABLE t ({definition})")
    assert rowid_kind(conn, "t") == (kind, column)


class Table:
    def __init__(self, path: Path, kind: RowidKind) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"CREATE TABLE r ({KEYS[kind]}{COLUMNS})")
        self.n = 0

    def write(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            self.conn.execute(
                "INSERT INTO r (timestamp, sensor_id, value) VALUES (?, ?, ?)",
                (f"2026-11-20T08:00:{self.n:06d}", f"s-{self.n % 3}", float(self.n)),
            )


def guard_for(table: Table, mode: str = "fail") -> RowidGuard:
    source = SQLiteSource(table.path, "r").open()
    guard = RowidGuard(source, mode, "sensor_id", "edge-1")
    guard.announce()
    return guard


def checkpoint_at(guard: RowidGuard, rowid: int) -> Checkpoint:
    """The checkpoint the producer commits when `rowid` is the last row of a chunk."""
    fingerprint, content = guard.marks(guard.source.row_at(rowid))
    return Checkpoint(
        "edge-1", "r", "edge.db", rowid, fingerprint, 1, rowid, 0.0, row_content=content
    )


@pytest.mark.parametrize("kind", list(RowidKind))
def test_a_grown_table_keeps_the_checkpoint(tmp_path, kind) -> None:
    table = Table(tmp_path / "edge.db", kind)
    table.write(10)
    guard = guard_for(table)
    checkpoint = checkpoint_at(guard, 10)
    table.write(5)
    table.conn.execute("DELETE FROM r WHERE _rowid_ <= 4")  # older rows may go at any time
    assert guard.examine(checkpoint).problem is None
    assert [r[0] for r in guard.rows_after(checkpoint, 100)] == [11, 12, 13, 14, 15]


def test_a_deleted_checkpoint_row_below_the_table_end_is_no_problem(tmp_path) -> None:
    table = Table(tmp_path / "edge.db", RowidKind.INTEGER_PRIMARY_KEY)
    table.write(10)
    guard = guard_for(table)
    checkpoint = checkpoint_at(guard, 6)
    table.conn.execute("DELETE FROM r WHERE _rowid_ <= 6")
    assert guard.examine(checkpoint).problem is None  # new rows still get 11, 12, ...


@pytest.mark.parametrize("regrown", [0, 4, 12], ids=["emptied", "reused-below", "reused-past"])
def test_reused_rowids_stop_or_restart_from_the_first_row(tmp_path, regrown) -> None:
    table = Table(tmp_path / "edge.db", RowidKind.INTEGER_PRIMARY_KEY)
    table.write(10)
    guard = guard_for(table)
    checkpoint = checkpoint_at(guard, 10)
    table.conn.execute("DELETE FROM r")
    table.write(regrown)
    verdict = guard.examine(checkpoint)
    assert (verdict.cursor, verdict.replaced) == (0, False)
    with pytest.raises(RowidsMoved) as stopped:
        guard.rows_after(checkpoint, 100)
    message = str(stopped.value)
    for fragment in ("table r", "rowid 10", "--node-id edge-1 --on-rowid-reuse prune"):
        assert fragment in message
    pruned = guard_for(table, "prune")
    assert [r[0] for r in pruned.rows_after(checkpoint, 100)] == list(range(1, regrown + 1))


def test_an_autoincrement_table_pruned_is_not_recreated_but_a_reset_one_is(tmp_path) -> None:
    table = Table(tmp_path / "edge.db", RowidKind.AUTOINCREMENT)
    table.write(10)
    guard = guard_for(table)
    checkpoint = checkpoint_at(guard, 10)
    table.conn.execute("DELETE FROM r")
    assert guard.examine(checkpoint).problem is None
    table.write(2)
    assert [r[0] for r in guard.rows_after(checkpoint, 100)] == [11, 12]
    table.conn.execute("DELETE FROM r")
    table.conn.execute("DELETE FROM sqlite_sequence")  # what a recreated table starts with
    table.write(3)
    verdict = guard.examine(checkpoint)
    assert verdict.replaced
    with pytest.raises(RowidsMoved, match="--on-recreated restart"):
        guard_for(table, "prune").rows_after(checkpoint, 100)


def test_vacuum_renumbering_is_found_by_the_rows_content(tmp_path) -> None:
    table = Table(tmp_path / "edge.db", RowidKind.IMPLICIT)
    table.write(10)
    guard = guard_for(table, "prune")
    checkpoint = checkpoint_at(guard, 8)  # rows 9 and 10 not streamed
    table.conn.execute("DELETE FROM r WHERE _rowid_ <= 5")
    table.conn.execute("VACUUM")
    verdict = guard.examine(checkpoint)
    assert verdict.cursor == 3
    assert "VACUUM moved it to rowid 3" in verdict.problem
    rows = guard.rows_after(checkpoint, 100)
    assert [(r[0], r[3]) for r in rows] == [(4, 9.0), (5, 10.0)]
    with pytest.raises(RowidsMoved, match="VACUUM renumbers"):
        guard_for(table, "fail").rows_after(checkpoint, 100)


def test_pruning_deletes_only_what_the_checkpoint_covers(tmp_path) -> None:
    table = Table(tmp_path / "edge.db", RowidKind.INTEGER_PRIMARY_KEY)
    table.write(10)
    guard = guard_for(table)
    stale = checkpoint_at(guard, 10)
    assert prune_streamed(table.conn, "r", "timestamp", checkpoint_at(guard, 7)) == 7
    assert prune_streamed(table.conn, "r", "timestamp", stale) == 3
    table.write(12)  # rowids 1..12 again, none streamed
    # The stale checkpoint names rowid 10, now a new row: nothing is deleted.
    assert prune_streamed(table.conn, "r", "timestamp", stale) == 0
    assert table.conn.execute("SELECT count(*) FROM r").fetchone()[0] == 12
    assert not table.conn.in_transaction
