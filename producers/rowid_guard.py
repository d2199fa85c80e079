"""Rowids that repeat or move: checked before every read, never skipped over.

The producer resumes after its checkpoint's rowid. That is exact only while the row streamed
last keeps its rowid and no new row gets a rowid at or below it. SQLite promises that for some
tables and not for others:

- INTEGER PRIMARY KEY AUTOINCREMENT: rowids never repeat (sqlite_sequence remembers the highest
  ever handed out) and VACUUM keeps them. Deleting streamed rows is safe.
- INTEGER PRIMARY KEY without AUTOINCREMENT: VACUUM keeps rowids, but a new row gets the
  highest rowid present + 1, so once the highest rows are deleted (an edge application that
  deletes what was shipped empties its table) their rowids are handed out again.
- no INTEGER PRIMARY KEY: the same reuse, and VACUUM renumbers the rows (1, 2, ...).

A new row always gets a rowid above every row present when it is written. So while the row at
the checkpoint's rowid is still the row streamed there, every row above it is unstreamed and
every row below it was streamed. The guard checks exactly that, in the same read snapshot as
the rows it hands to the producer, so nothing can be written between the check and the read.

When the check fails, `fail` (the default) stops the producer with a message naming the table,
the checkpoint and the command that resumes. `prune` is for applications that delete rows once
they are streamed, oldest first (`producers.pruning.prune_streamed`): if the checkpoint's row
is gone, every streamed row below it is gone too, so every row present is new and the producer
reads from the table's start; if VACUUM only moved it, the producer finds it by its event time
and key and reads after its new rowid.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from producers.checkpoint import Checkpoint, row_fingerprint
from producers.source import SourceError, SQLiteSource
from schemas.sqlite_columns import quote_identifier
from sensorstream.errors import PipelineError

log = logging.getLogger("sensorstream.producer")

RowidMode = Literal["fail", "prune"]
# Reads whose connection the source replaced before the snapshot ended, tried again.
_SNAPSHOT_ATTEMPTS = 5
_AUTOINCREMENT = re.compile(rb"\bAUTOINCREMENT\b", re.IGNORECASE)


class RowidsMoved(PipelineError):
    """Rowids at or below the checkpoint now name other rows: stopped instead of skipping."""


class RowidKind(Enum):
    AUTOINCREMENT = "autoincrement"
    INTEGER_PRIMARY_KEY = "integer primary key"  # without AUTOINCREMENT
    IMPLICIT = "implicit"  # no INTEGER PRIMARY KEY: VACUUM may renumber


@dataclass(frozen=True)
class Verdict:
    """What the table says about a checkpoint, and where to read from.

    `problem` is None while the checkpoint holds. `replaced` means rowids went back in a table
    whose rowids cannot repeat (AUTOINCREMENT): the table or database was recreated, not pruned.
    """

    cursor: int
    problem: str | None = None
    replaced: bool = False


def rowid_kind(conn: sqlite3.Connection, table: str) -> tuple[RowidKind, str | None]:
    """How `table` gets its rowids, and the INTEGER PRIMARY KEY column that holds them, if any.

    A single primary-key column declared INTEGER is the rowid only if SQLite built no index for
    it (`INTEGER PRIMARY KEY DESC` and composite keys get one and are ordinary columns).
    """
    name = quote_identifier(table)
    keys = [r for r in conn.execute(f"PRAGMA table_info({name})") if r[5]]
    pk_index = any(_text(r[3]) == "pk" for r in conn.execute(f"PRAGMA index_list({name})"))
    if len(keys) != 1 or _text(keys[0][2]).upper() != "INTEGER" or pk_index:
        return RowidKind.IMPLICIT, None
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    sql = sql if isinstance(sql, bytes) else str(sql).encode()
    kind = RowidKind.AUTOINCREMENT if _AUTOINCREMENT.search(sql) else RowidKind.INTEGER_PRIMARY_KEY
    return kind, _text(keys[0][1])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RowidGuard:
    def __init__(
        self, source: SQLiteSource, mode: RowidMode, key_column: str | None, node_id: str
    ) -> None:
        self.source = source
        self.mode = mode
        self.node_id = node_id
        self.key_column = key_column
        self.kind = RowidKind.IMPLICIT
        self._key_name: str | None = None
        self._found: dict[tuple[int, str], int] = {}  # (rowid, content) -> where VACUUM moved it
        self._told: set[tuple[int, str | None]] = set()

    # -- start ------------------------------------------------------------------------------

    def announce(self) -> None:
        """Say at start what the table's rowids promise, and what happens when they move."""
        try:
            self.kind, self._key_name = rowid_kind(self._conn, self.source.table)
        except sqlite3.Error as exc:
            raise self._read_failed(exc) from exc
        table = self.source.table
        if self.kind is RowidKind.AUTOINCREMENT:
            log.info(
                "table %s: rowids are its INTEGER PRIMARY KEY AUTOINCREMENT column %s: never "
                "reused or renumbered, so deleting streamed rows is safe",
                table,
                self._key_name,
            )
            return
        if self.kind is RowidKind.INTEGER_PRIMARY_KEY:
            what = (
                f"table {table}: rowids are its column {self._key_name}, an INTEGER PRIMARY KEY "
                "without AUTOINCREMENT: once its highest rows are deleted, SQLite gives their "
                "rowids to new rows"
            )
        else:
            what = (
                f"table {table} has no INTEGER PRIMARY KEY: its rowids are not stable: VACUUM "
                "renumbers them, and once its highest rows are deleted SQLite gives their "
                "rowids to new rows"
            )
        if self.mode == "prune":
            log.info(
                "%s. on_rowid_reuse=prune: rows deleted by the application must have been "
                "streamed, deleted oldest first; new rows at reused or renumbered rowids are "
                "streamed once",
                what,
            )
            return
        log.warning(
            "%s. If that happens the producer stops rather than skip the new rows. If your "
            "application deletes rows once they are streamed, run with %s; declaring the key "
            "INTEGER PRIMARY KEY AUTOINCREMENT makes rowids stable",
            what,
            _PRUNE_FLAG,
        )

    # -- every read -------------------------------------------------------------------------

    def marks(self, row: tuple) -> tuple[str, str]:
        """(fingerprint, content) of a row as read by the source: (rowid, *columns).

        The fingerprint (rowid and event time) says whether a rowid still names the row
        streamed there; the content (event time and key, no rowid) finds that row again after
        VACUUM moved it.
        """
        names = [c.name for c in self.source.columns]
        event_time = row[1 + names.index(self.source.timestamp_column)]
        key = row[1 + names.index(self.key_column)] if self.key_column in names else None
        return row_fingerprint(row[0], event_time), _content(event_time, key)

    def content(self, row: tuple) -> str:
        """The checkpoint's `row_content` for a row: its event time and key, no rowid."""
        return self.marks(row)[1]

    def rows_after(self, checkpoint: Checkpoint, limit: int) -> list[tuple]:
        """The next rows to stream after `checkpoint`, checked in the snapshot they are read in.

        The source may open its connection afresh during a read (its file was written while
        read lock-free, or a writer came back); the check and the read then did not share one
        snapshot, and both are done again.
        """
        for _ in range(_SNAPSHOT_ATTEMPTS):
            rows = self._in_snapshot(lambda: self._check_and_read(checkpoint, limit))
            if rows is not None:
                return rows
        raise SourceError(
            f"{self.source.path}: the database was reopened under {_SNAPSHOT_ATTEMPTS} reads in "
            "a row (its file kept changing while it was read lock-free); restart the producer"
        )

    def _check_and_read(self, checkpoint: Checkpoint, limit: int) -> list[tuple]:
        verdict = self.examine(checkpoint)
        if verdict.problem is not None:
            if self.mode == "fail" or verdict.replaced:
                raise RowidsMoved(self.stop_message(checkpoint, verdict))
            self._tell(checkpoint, verdict)
        return self.source.rows_after(verdict.cursor, limit)

    def examine(self, checkpoint: Checkpoint) -> Verdict:
        """Does the row at the checkpoint's rowid still say where streaming stopped?"""
        c = checkpoint.rowid
        if c <= 0 or checkpoint.row_fingerprint is None:
            return Verdict(c)
        row = self.source.row_at(c)
        if row is not None:
            fingerprint, content = self.marks(row)
            same = fingerprint == checkpoint.row_fingerprint and (
                checkpoint.row_content is None or content == checkpoint.row_content
            )
            if same:
                return Verdict(c)
            problem = f"the row at rowid {c} is not the row streamed there"
        else:
            newest = self.source.max_rowid()
            if newest >= c:
                # Deleted, but new rows still get rowids above it: nothing can land below.
                return Verdict(c)
            problem = f"the table now ends at rowid {newest}"
        if self.kind is RowidKind.AUTOINCREMENT:
            sequence = self._sequence()
            if row is None and sequence >= c:
                return Verdict(c)  # streamed rows were deleted; rowids still only grow
            return Verdict(c, problem, replaced=True)
        moved = self._moved_to(checkpoint) if self.kind is RowidKind.IMPLICIT else None
        if moved is not None:
            return Verdict(moved, f"{problem}: VACUUM moved it to rowid {moved}")
        return Verdict(0, problem)

    def stop_message(self, checkpoint: Checkpoint, verdict: Verdict) -> str:
        s = self.source
        head = (
            f"{s.path}: table {s.table}: the checkpoint (the last row streamed) is at rowid "
            f"{checkpoint.rowid}, but {verdict.problem}"
        )
        if verdict.replaced:
            return (
                f"{head}, and its AUTOINCREMENT rowids cannot repeat: the table or the database "
                "was recreated. If its rows should all be streamed, restart with "
                "--on-recreated restart (or SENSORSTREAM_PRODUCER_ON_RECREATED=restart)."
            )
        vacuum = (
            ", and VACUUM renumbers the rows of a table without an INTEGER PRIMARY KEY"
            if self.kind is RowidKind.IMPLICIT
            else ""
        )
        return (
            f"{head}. Rows were deleted: SQLite hands the rowids of a table's deleted highest "
            f"rows out again{vacuum}. The producer reads only above its checkpoint, so it "
            f"stopped instead of passing over rows at rowids up to {checkpoint.rowid}. If the "
            "application deletes rows once they are streamed, resume with the same command "
            f"plus {_PRUNE_FLAG} (or SENSORSTREAM_PRODUCER_ON_ROWID_REUSE=prune), e.g. "
            f"`{self.resume_command()}`: it streams every row not streamed yet, once. If the "
            "database was replaced by a new one, use --on-recreated restart instead."
        )

    def resume_command(self) -> str:
        s = self.source
        return (
            f"sensorstream produce --sqlite {s.path} --table {s.table} --node-id {self.node_id} "
            f"{_PRUNE_FLAG}"
        )

    # -- helpers ----------------------------------------------------------------------------

    def _read_failed(self, exc: sqlite3.Error) -> SourceError:
        return SourceError(f"{self.source.path}: reading table {self.source.table!r}: {exc}")

    @property
    def _conn(self) -> sqlite3.Connection:
        if self.source.conn is None:
            raise RuntimeError("SQLiteSource.open() was not called")
        return self.source.conn

    def _in_snapshot(self, read: Callable[[], list[tuple]]) -> list[tuple] | None:
        """`read()` in one read transaction, so every query in it sees the same table.

        None when the source replaced its connection meanwhile (closing this one and its
        transaction): the caller reads again.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self._read_failed(exc) from exc
        try:
            rows = read()
        except BaseException:
            if self.source.conn is conn and conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the read's own error is the story
                    conn.execute("ROLLBACK")
            raise
        if self.source.conn is not conn:
            return None
        try:
            conn.execute("COMMIT")  # read-only: ends the snapshot, nothing to keep or lose
        except sqlite3.Error as exc:
            raise self._read_failed(exc) from exc
        return rows

    def _sequence(self) -> int:
        """AUTOINCREMENT's high-water mark: the largest rowid the table ever handed out."""
        try:
            row = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (self.source.table,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._read_failed(exc) from exc
        return int(row[0]) if row else 0

    def _moved_to(self, checkpoint: Checkpoint) -> int | None:
        """Where VACUUM moved the checkpoint's row, by its content; None if it is gone.

        VACUUM keeps the rows' order and only moves them down, so the search runs down from
        the checkpoint's rowid and takes the first match.
        """
        if checkpoint.row_content is None:
            return None
        memo = (checkpoint.rowid, checkpoint.row_content)
        known = self._found.get(memo)
        if known is not None:
            row = self.source.row_at(known)
            if row is not None and self.marks(row)[1] == checkpoint.row_content:
                return known
        names = [c.name for c in self.source.columns]
        wanted = [self.source.timestamp_column]
        if self.key_column in names:
            wanted.append(self.key_column)
        columns = ", ".join(quote_identifier(n) for n in wanted)
        sql = (
            f"SELECT _rowid_, {columns} FROM {quote_identifier(self.source.table)} "
            "WHERE _rowid_ < ? ORDER BY _rowid_ DESC"
        )
        try:
            for found in self._conn.execute(sql, (checkpoint.rowid,)):
                key = found[2] if len(found) > 2 else None
                if _content(found[1], key) == checkpoint.row_content:
                    self._found = {memo: found[0]}
                    return found[0]
        except sqlite3.Error as exc:
            raise self._read_failed(exc) from exc
        return None

    def _tell(self, checkpoint: Checkpoint, verdict: Verdict) -> None:
        """Log once per checkpoint how prune mode reads on; every poll re-derives the same."""
        told = (checkpoint.rowid, checkpoint.row_fingerprint)
        if told in self._told:
            return
        self._told = {told}
        if verdict.cursor:
            after = f"streaming the rows after rowid {verdict.cursor}, which were not streamed"
        else:
            after = (
                "the streamed rows were deleted, so every row in the table is new: streaming "
                "from its first row"
            )
        log.info(
            "table %s: the checkpoint is at rowid %d, but %s; %s (on_rowid_reuse=prune)",
            self.source.table,
            checkpoint.rowid,
            verdict.problem,
            after,
        )


_PRUNE_FLAG = "--on-rowid-reuse prune"


def _content(event_time: object, key: object) -> str:
    return hashlib.blake2b(repr((event_time, key)).encode(), digest_size=12).hexdigest()
