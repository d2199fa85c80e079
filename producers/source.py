"""The edge table, read the way an edge node can afford: read-only, by rowid, in short reads.

The connection is opened with `mode=ro` and a busy timeout, so the sensor writer is never
locked out (WAL lets readers and the writer run side by side) and a momentary lock held by a
checkpointing writer is waited out rather than failed on. Rows come back with
`text_factory=bytes`, so text that is not valid UTF-8 reaches the converter as bytes and goes to
the dead-letter topic instead of crashing the read.

Tailing is by rowid, never by timestamp: timestamps repeat and arrive out of order, which is how
the legacy uploader's `timestamp > :last LIMIT 500` lost rows at batch boundaries.

On a read-only mount (how edge deployments give the producer the database) SQLite reads a WAL
database only while its `-wal` and `-shm` files exist, that is while a writer has it open or
left them behind: it cannot create them. When the writer stopped and removed them, the database
file alone holds every committed row (SQLite removes the WAL only after copying all of it into
the file), so the source reads it lock-free (`immutable=1`) and trusts each such read only if
the file was not written meanwhile. As soon as a writer is back (a `-wal` with frames appears,
or the file is written), it opens the database the ordinary way again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from producers.database_file import (
    CompanionFiles,
    FileIdentity,
    PinnedFile,
    shm_file,
    wal_file,
    wal_size,
)
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


class _Unopenable(Exception):
    """Internal: the database cannot be opened now; the text says why and what to do."""


# SQLite's words when it cannot open (or create) one of the database's files.
_CANTOPEN = "unable to open database file"
# Lock-free reads retried when the file keeps changing under them; a writer that changes it
# also leaves a `-wal` behind, after which reads take the ordinary, locked path.
_SNAPSHOT_READS = 5


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
        self.identity: FileIdentity | None = None  # the file the connection reads
        self._companions = CompanionFiles(None, None)  # its -wal and -shm, as opened
        self._pinned: PinnedFile | None = None  # set while reading lock-free (immutable)

    def open(self) -> SQLiteSource:
        """Open and validate; every problem is a ConfigError naming the file (exit code 2)."""
        path = self.path
        if not path.exists():
            raise ConfigError(f"{path}: no such SQLite database file")
        if not path.is_file():
            raise ConfigError(f"{path}: not a file")
        try:
            self._connect()
            tables = user_tables(self._require_conn())
        except _Unopenable as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except sqlite3.Error as exc:
            self.close()
            raise ConfigError(_describe_open_error(path, exc, self.busy_timeout_s)) from None
        except OSError as exc:
            self.close()
            raise ConfigError(f"{path}: cannot open: {exc}") from None
        self.table = self._choose_table(tables)
        self._schema_version = -1
        self.refresh_columns()
        return self

    @property
    def lock_free(self) -> bool:
        """Whether the database is read lock-free: a read-only mount without its WAL files."""
        return self._pinned is not None

    def _connect(self) -> None:
        """Connect to the file at the path, and to no other.

        A file moved over the path while connecting would leave the connection on one file and
        `identity` on another; the identity is taken before and after, and must agree.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            before = FileIdentity.of(self.path)
            self._open_connection(deadline)
            after = FileIdentity.of(self.path)
            pinned = self._pinned.identity if self._pinned else after
            if before == after == pinned and after is not None:
                self.identity = after
                return
            self.close()
            if time.monotonic() > deadline:
                raise _Unopenable("the file kept being replaced while it was opened")

    def _open_connection(self, deadline: float) -> None:
        while True:
            try:
                self.conn = self._sqlite("mode=ro")
                self._companions = CompanionFiles.of(self.path)
                return
            except sqlite3.OperationalError as exc:
                self.close()
                if _CANTOPEN not in str(exc):
                    raise
                # A read-only location without the WAL's files (or a file this user may not
                # read: the lock-free open then fails too, saying so).
                if not wal_size(self.path) and self._open_lock_free():
                    return
                if time.monotonic() > deadline:
                    raise _Unopenable(self._unopenable_wal(exc)) from None
            # A writer is between removing its -shm and its -wal, or wrote meanwhile.
            time.sleep(0.05)

    def _open_lock_free(self) -> bool:
        """Connect with `immutable=1`; False when the file or its WAL changed meanwhile."""
        pinned = PinnedFile(self.path)
        self._pinned = pinned
        self.conn = self._sqlite("mode=ro&immutable=1")
        if pinned.changed() or wal_size(self.path):
            self.close()
            return False
        return True

    def _sqlite(self, options: str) -> sqlite3.Connection:
        """A read-only connection whose first read already happened (SQLite opens lazily)."""
        conn = sqlite3.connect(
            f"{self.path.resolve().as_uri()}?{options}",
            uri=True,
            timeout=self.busy_timeout_s,
            check_same_thread=False,
        )
        self.conn = conn  # closed by close() if the first read fails
        conn.text_factory = bytes
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        return conn

    def _unopenable_wal(self, exc: sqlite3.Error) -> str:
        where = self.path.parent
        if os.access(where, os.W_OK):
            return f"cannot read the SQLite database ({exc})"
        return (
            f"cannot read the SQLite database ({exc}): {wal_file(self.path).name} holds "
            f"changes but {shm_file(self.path).name} is missing, and {where} is read-only, so "
            "SQLite can neither rebuild it nor read the database without it. Start the sensor "
            "writer once (it recovers the WAL when it opens the database), or checkpoint the "
            "database where it is writable: sqlite3 DB 'PRAGMA wal_checkpoint(TRUNCATE)'"
        )

    def file_change(self) -> str | None:
        """Whether the path still leads to the file being read: None, or what happened.

        Also reopens the same database when its `-wal` or `-shm` file was replaced (deleted
        while the connection had it open, then created again by a writer): the connection
        would go on reading the deleted one and never see another row.
        """
        now = FileIdentity.of(self.path)
        if now is None:
            return "deleted"
        if now != self.identity:
            self._refuse_stale_wal()
            return "replaced"
        if self._pinned is None:
            seen, opened = CompanionFiles.of(self.path), self._companions
            if (opened.wal and seen.wal != opened.wal) or (opened.shm and seen.shm != opened.shm):
                self._reconnect()
        return None

    def _refuse_stale_wal(self) -> None:
        """Stop if the `-wal` beside the path is still the one the replaced file used.

        SQLite pairs a database with its WAL by name only: it would read the old database's
        pages as the new one's (and a writer would copy them into it). Checked while the old
        connection still holds the old WAL open, so its inode number cannot have been reused.
        """
        opened = self._companions.wal
        stale = opened is not None and FileIdentity.of(wal_file(self.path)) == opened
        if stale and wal_size(self.path):
            raise SourceError(
                f"{self.path}: the database file was replaced, but "
                f"{wal_file(self.path).name} beside it still belongs to the replaced "
                "file, and SQLite would read the old database's pages as the new one's. "
                "Stop the sensor writer, move the old -wal and -shm files away with the "
                "old database (every row of it was produced), then start the writer and "
                "the producer again"
            )

    def reopen(self) -> None:
        """Open whatever file is at the path now, as at start (ConfigError if it is unfit)."""
        self.close()
        self.open()

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
        self._follow_lock_free()
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

    def _read(self, sql: str, parameters: tuple = (), schema_bound: bool = False) -> list[tuple]:
        """Run a query; a lock-free read is only returned if the file did not change under it.

        `schema_bound`: the query names the columns, so a failure after the schema changed is
        SchemaChanged (refresh and read again) rather than a broken database.
        """
        for _ in range(_SNAPSHOT_READS):
            self._follow_lock_free()
            conn = self._require_conn()
            try:
                rows = conn.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                if schema_bound and self._schema_moved(conn):
                    raise SchemaChanged(
                        f"{self.path}: table {self.table!r} changed: {exc}"
                    ) from exc
                raise self._read_error(exc) from exc
            if self._pinned is None or not self._pinned.changed():
                return rows
        raise SourceError(
            f"{self.path}: the database file changed under {_SNAPSHOT_READS} reads in a row "
            "while it had no -wal file (on a read-only mount it is read lock-free then): is a "
            "writer using it outside WAL mode? Put it in WAL mode (PRAGMA journal_mode=WAL)"
        )

    def _follow_lock_free(self) -> None:
        """Reading lock-free: reopen once the file was written or a writer's WAL appeared."""
        pinned = self._pinned
        if pinned is None:
            return
        if FileIdentity.of(self.path) != pinned.identity:
            # Replaced: the old file is read as it is, to its end; the tailer then moves on.
            if pinned.changed():
                raise SourceError(
                    f"{self.path}: the database file was replaced, and the replaced file is "
                    "still being written: its new rows can no longer be read. Stop the writer "
                    "that still has the old file open, then restart it on the new one"
                )
            return
        if pinned.changed() or wal_size(self.path):
            self._reconnect()

    def _reconnect(self) -> None:
        """The same file again, opened afresh (how it is opened may change: lock-free or not)."""
        identity = self.identity
        self.close()
        try:
            self._connect()
        except (_Unopenable, sqlite3.Error, OSError) as exc:
            raise SourceError(f"{self.path}: reopening the database: {exc}") from None
        if self.identity != identity:
            raise SourceError(
                f"{self.path}: the database file was replaced while it was being reopened; "
                "restart the producer (it then checks the new file as at start)"
            )

    def rows_after(self, rowid: int, limit: int) -> list[tuple]:
        """Up to `limit` rows with rowid > `rowid`, rowid first, in rowid order.

        Raises SchemaChanged when the read failed because a column was dropped or renamed
        since the columns were read (the query names them): the caller refreshes and reads
        again.
        """
        return self._read(self._select_after, (rowid, limit), schema_bound=True)

    def _schema_moved(self, conn: sqlite3.Connection) -> bool:
        try:
            return conn.execute("PRAGMA schema_version").fetchone()[0] != self._schema_version
        except sqlite3.Error:
            return False

    def row_at(self, rowid: int) -> tuple | None:
        names = ", ".join(quote_identifier(c.name) for c in self.columns)
        sql = f"SELECT _rowid_, {names} FROM {quote_identifier(self.table)} WHERE _rowid_ = ?"
        rows = self._read(sql, (rowid,), schema_bound=True)
        return rows[0] if rows else None

    def max_rowid(self) -> int:
        sql = f"SELECT max(_rowid_) FROM {quote_identifier(self.table)}"
        return self._read(sql)[0][0] or 0

    def close(self) -> None:
        # The connection first: closing the pinned descriptor is only harmless without it.
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._pinned is not None:
            self._pinned.close()
            self._pinned = None
        # Closed, the files' inode numbers may go to new files: forget them.
        self._companions = CompanionFiles(None, None)
