"""The edge database the simulator appends to: `sensor_readings` exactly as DESIGN section 4.

The legacy simulator deleted its database on start and lost rows that were not uploaded yet;
this one only ever creates what is missing and appends. Writes go in short `BEGIN IMMEDIATE`
transactions in WAL mode so a read-only tailer can read at any moment without being blocked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from sensorstream.errors import ConfigError, PipelineError

TABLE = "sensor_readings"

# (name, declaration) in DESIGN section 4 order; the tailer and the Avro schema rely on these.
READINGS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("timestamp", "TEXT NOT NULL"),
    ("sensor_id", "TEXT NOT NULL"),
    ("temperature", "REAL"),
    ("humidity", "REAL"),
    ("pressure", "REAL"),
    ("vibration", "REAL"),
    ("voltage", "REAL"),
    ("status_code", "INTEGER"),
    ("anomaly_flag", "INTEGER DEFAULT 0"),
    ("anomaly_type", "TEXT"),
    ("firmware_version", "TEXT"),
    ("model", "TEXT"),
    ("manufacturer", "TEXT"),
    ("location", "TEXT"),
    ("latitude", "REAL"),
    ("longitude", "REAL"),
    ("original_timezone", "TEXT"),
    ("serial_number", "TEXT"),
    ("manufacture_date", "TEXT"),
    ("deployment_type", "TEXT"),
    ("installation_date", "TEXT"),
    ("height_meters", "REAL"),
    ("orientation_degrees", "REAL"),
    ("instance_id", "TEXT"),
    ("sensor_type", "TEXT"),
)
# Every column but the rowid alias, in the order `ReadingModel.next_row` produces values.
INSERT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in READINGS_COLUMNS[1:])

_CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    "
    + ",\n    ".join(f"{name} {declaration}" for name, declaration in READINGS_COLUMNS)
    + "\n)"
)
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})"
)
_BUSY_TIMEOUT_S = 5.0


def create_readings_table(conn: sqlite3.Connection) -> None:
    """Create `sensor_readings` if it is missing; an existing table is left exactly as it is."""
    conn.execute(_CREATE_TABLE)


class ReadingsDatabase:
    """One writer connection to an edge database, appending batches of readings."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> ReadingsDatabase:
        """Open or create `path` in WAL mode with the table ready; ConfigError if it cannot be."""
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, not a SQLite database file")
        if not path.parent.is_dir():
            raise ConfigError(
                f"{path}: cannot create the SQLite database: directory {path.parent} does not exist"
            )
        try:
            conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot open the SQLite database: {exc}") from None
        try:
            _prepare(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{path}: cannot use as a SQLite database: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn)

    def append(self, rows: Sequence[Sequence[object]]) -> tuple[int, int]:
        """Insert `rows` in one transaction; returns the (first, last) rowid they received.

        AUTOINCREMENT under an immediate (write-locked) transaction hands out consecutive
        rowids, so the range is exact.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise PipelineError(f"{self.path}: cannot append readings: {exc}") from exc
        return last - len(rows) + 1, last

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ReadingsDatabase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if str(mode).lower() != "wal":
        raise ConfigError(
            f"{path}: could not switch to WAL journal mode (still {mode!r}); "
            "a concurrent reader would block the writer"
        )
    # FULL rather than NORMAL: after a power cut a committed row must not vanish, or its rowid
    # would be handed out again to a different reading the tailer may already have sent.
    conn.execute("PRAGMA synchronous=FULL")
    create_readings_table(conn)
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
    missing = [name for name in INSERT_COLUMNS if name not in present]
    if missing:
        raise ConfigError(
            f"{path}: table {TABLE} exists but lacks column(s) {', '.join(missing)}; "
            "the simulator only appends and will not alter an existing table"
        )
