"""Which file the producer reads, and whether the database's path still leads to it.

SQLite opens its files by path once and then keeps them. When the database is moved over or
deleted and created again while the producer runs, the open connection goes on reading the old
file, which no longer grows, and never sees the new one: rows would stop flowing without a word.
The file is told apart from its successor by identity (device and inode), which a rename or a
new file always changes and writes never do.

The same goes for the WAL's files: a connection keeps the `-wal` and `-shm` files it opened. If
they are deleted while it runs and a writer creates new ones, the connection reads the old ones
and misses every new row. Their identities are watched too.

Nothing here opens the database file itself while SQLite has it open: POSIX drops every lock a
process holds on a file when the process closes any descriptor of that file, so a probe that
opened and closed the database would silently release the connection's locks. `stat` is safe.
The one exception, `PinnedFile`, is only used for lock-free (immutable) connections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        """The identity of the file at `path` now, None when there is none."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_dev, st.st_ino)


def wal_file(database: Path) -> Path:
    return database.with_name(database.name + "-wal")


def shm_file(database: Path) -> Path:
    return database.with_name(database.name + "-shm")


def wal_size(database: Path) -> int | None:
    """Bytes in the database's `-wal` file, None when there is no such file."""
    try:
        return os.stat(wal_file(database)).st_size
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class CompanionFiles:
    """The identities of a WAL database's `-wal` and `-shm` files, as seen at one moment."""

    wal: FileIdentity | None
    shm: FileIdentity | None

    @classmethod
    def of(cls, database: Path) -> CompanionFiles:
        return cls(FileIdentity.of(wal_file(database)), FileIdentity.of(shm_file(database)))


@dataclass(frozen=True)
class _Content:
    size: int
    mtime_ns: int


class PinnedFile:
    """The database file held open by the producer itself, to see whether it changed.

    For connections opened with `immutable=1` only: SQLite takes no lock through them, so
    holding and closing a descriptor here cannot release one. Such a connection reads the file
    as if nothing could write it; a read through it is only trusted if the file was not written
    meanwhile. Every write changes the file's modification time (and often its size); this
    checks them on the descriptor, so a file that was renamed away or deleted is still the file
    checked. Not the change time: renaming or unlinking the file changes that too. Where
    timestamps are coarse, a write within the clock tick of the last one could keep its time;
    but a writer in WAL mode creates a `-wal` before it writes the database file, and the
    source watches for that as well.
    """

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.identity = FileIdentity(st.st_dev, st.st_ino)
        self._content = _content(st)

    def changed(self) -> bool:
        return _content(os.fstat(self.fd)) != self._content

    def close(self) -> None:
        os.close(self.fd)


def _content(st: os.stat_result) -> _Content:
    return _Content(st.st_size, st.st_mtime_ns)
