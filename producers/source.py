"""The edge table, read the way an edge node can afford: read-only, by rowid, in short reads.

The connection is opened with `mode=ro` and a busy timeout, so the sensor writer is never
locked out (WAL lets readers and the writer run side by side) and a momentary lock held by a
checkpointing writer is waited out rather than failed on. Rows come back with
`text_factory=bytes`, so text that is not valid UTF-8 reaches the converter as bytes and goes to
the dead-letter topic instead of crashing the read.

Tailing is by rowid, never by timestamp: timestamps repeat and arrive out of order, which is how
the legacy uploader's `timestamp > :last LIMIT 500` lost rows at batch boundaries.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from schemas.sqlite_columns import (
    Column,
    detect_timestamp_column,
    introspect,
    quote_identifier,
    user_tables,
)
from sensorstream.errors import ConfigError, PipelineError


class SourceError(PipelineError):
    """The database failed while being tailed (it was fine when opened)."""


class SchemaChanged(SourceError):
    """A read failed because the table's columns changed under it: refresh and read again."""


def _describe_open_error(path: Path, exc: sqlite3.Error, busy_timeout_s: float) -> str:
    return f"{path}: {_describe_sqlite_error(exc, busy_timeout_s)}"


def _describe_sqlite_error(exc: sqlite3.Error, busy_timeout_s: float) -> str:
    text = str(exc)
    if "not a database" in text:
        return f"not a SQLite database ({text})"
    if "malformed" in text or "corrupt" in text:
        return f"the SQLite database is corrupt ({text})"
    if "locked" in text or "busy" in text:
        return (
            f"the SQLite database stayed locked for {busy_timeout_s:g} s ({text}): another "
            "connection holds an exclusive lock. Outside WAL mode every writer's commit locks "
            "readers out; put the database in WAL mode (PRAGMA journal_mode=WAL) or raise the "
            "producer setting busy_timeout_s"
        )
    return f"cannot read the SQLite database ({text})"


def _shape(column: Column) -> tuple[str, str, bool]:
    return column.name, column.declared_type, column.not_null


class SQLiteSource:
    def __init__(
        self,
        path: Path,
        table: str | None = None,
        timestamp_col: str | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = path
        self._requested_table = table
        self._requested_timestamp = timestamp_col
        self.busy_timeout_s = busy_timeout_s
        self.conn: sqlite3.Connection | None = None
        self.table = ""
        self.timestamp_column = ""
        self.columns: list[Column] = []
        self._select_after = ""
        self._schema_version = -1

    def open(self) -> SQLiteSource:
        """Open and validate; every problem is a ConfigError naming the file (exit code 2)."""
        path = self.path
        if not path.exists():
            raise ConfigError(f"{path}: no such SQLite database file")
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=self.busy_timeout_s,
                check_same_thread=False,
            )
            conn.text_factory = bytes
            conn.execute("PRAGMA query_only = ON")
            tables = user_tables(conn)
        except sqlite3.Error as exc:
            raise ConfigError(_describe_open_error(path, exc, self.busy_timeout_s)) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot open: {exc}") from None
        self.conn = conn
        self.table = self._choose_table(tables)
        self.refresh_columns()
        return self

    def _choose_table(self, tables: list[str]) -> str:
        if self._requested_table is not None:
            if self._requested_table not in tables:
                listed = ", ".join(tables) or "none"
                raise ConfigError(
                    f"{self.path}: no table {self._requested_table!r} (tables: {listed})"
                )
            return self._requested_table
        if not tables:
            raise ConfigError(f"{self.path}: the database has no tables to tail")
        if len(tables) > 1:
            raise ConfigError(
                f"{self.path}: several tables ({', '.join(tables)}); choose one with --table"
            )
        return tables[0]

    def refresh_columns(self) -> bool:
        """Re-read the columns when the database's schema changed; True if the table's did.

        A column added, dropped or renamed, a declared type or NOT NULL changed (SQLite
        retypes a column by rebuilding its table): each changes the value schema or the checks
        on the values, so each counts.
        """
        conn = self._require_conn()
        try:
            version = conn.execute("PRAGMA schema_version").fetchone()[0]
            if version == self._schema_version:
                return False
            columns = introspect(conn, self.table)
            self._check_has_rowid()
        except sqlite3.Error as exc:
            raise ConfigError(_describe_open_error(self.path, exc, self.busy_timeout_s)) from None
        try:
            timestamp = detect_timestamp_column(
                columns, self._requested_timestamp, table=self.table
            )
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        self._schema_version = version
        changed = [_shape(c) for c in columns] != [_shape(c) for c in self.columns]
        self.columns = columns
        self.timestamp_column = timestamp
        names = ", ".join(quote_identifier(c.name) for c in columns)
        self._select_after = (
            f"SELECT _rowid_, {names} FROM {quote_identifier(self.table)} "
            "WHERE _rowid_ > ? ORDER BY _rowid_ LIMIT ?"
        )
        return changed

    def _check_has_rowid(self) -> None:
        conn = self._require_conn()
        try:
            conn.execute(f"SELECT _rowid_ FROM {quote_identifier(self.table)} LIMIT 0")
        except sqlite3.OperationalError:
            raise ConfigError(
                f"{self.path}: table {self.table!r} is a WITHOUT ROWID table; sensorstream tails "
                "tables by rowid"
            ) from None

    def _require_conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("SQLiteSource.open() was not called")
        return self.conn

    def _read_error(self, exc: sqlite3.Error) -> SourceError:
        problem = _describe_sqlite_error(exc, self.busy_timeout_s)
        return SourceError(f"{self.path}: reading table {self.table!r}: {problem}")

    def rows_after(self, rowid: int, limit: int) -> list[tuple]:
        """Up to `limit` rows with rowid > `rowid`, rowid first, in rowid order.

        Raises SchemaChanged when the read failed because a column was dropped or renamed
        since the columns were read (the query names them): the caller refreshes and reads
        again.
        """
        conn = self._require_conn()
        try:
            return conn.execute(self._select_after, (rowid, limit)).fetchall()
        except sqlite3.Error as exc:
            if self._schema_moved(conn):
                raise SchemaChanged(f"{self.path}: table {self.table!r} changed: {exc}") from exc
            raise self._read_error(exc) from exc

    def _schema_moved(self, conn: sqlite3.Connection) -> bool:
        try:
            return conn.execute("PRAGMA schema_version").fetchone()[0] != self._schema_version
        except sqlite3.Error:
            return False

    def row_at(self, rowid: int) -> tuple | None:
        names = ", ".join(quote_identifier(c.name) for c in self.columns)
        sql = f"SELECT _rowid_, {names} FROM {quote_identifier(self.table)} WHERE _rowid_ = ?"
        try:
            return self._require_conn().execute(sql, (rowid,)).fetchone()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def max_rowid(self) -> int:
        sql = f"SELECT max(_rowid_) FROM {quote_identifier(self.table)}"
        try:
            return self._require_conn().execute(sql).fetchone()[0] or 0
        except sqlite3.Error as exc:
            raise self._read_error(exc) from exc

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
