"""Looking into an edge node's database from outside, read-only, while its sensors write.

Progress and the exactly-once checks count rows by rowid, the producer's own cursor: a read-only
connection never locks the writer out, and a database the simulator has not created yet (or
whose table is not there yet) simply holds nothing.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

SOURCE_TABLE = "sensor_readings"  # the simulator's table


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None while the simulator has not created the database."""
    if not db.exists():
        yield None
        return
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
    try:
        yield conn
    finally:
        conn.close()


def max_rowid(db: Path) -> int:
    with read_only(db) as conn:
        if conn is None:
            return 0
        try:
            (value,) = conn.execute(f"SELECT max(rowid) FROM {SOURCE_TABLE}").fetchone()
        except sqlite3.OperationalError:  # created, table not there yet
            return 0
        return int(value or 0)


def rows_after(db: Path, rowid: int) -> int:
    with read_only(db) as conn:
        if conn is None:
            return 0
        try:
            (count,) = conn.execute(
                f"SELECT count(*) FROM {SOURCE_TABLE} WHERE rowid > ?", (rowid,)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(count)
