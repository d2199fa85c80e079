"""How the producer tells a database file from the one that replaced it, and a written file
from an untouched one (producers/database_file.py), on real files."""

from __future__ import annotations

import os

from producers.database_file import CompanionFiles, FileIdentity, PinnedFile, wal_size


def test_identity_follows_the_file_not_the_path(tmp_path):
    db = tmp_path / "edge.db"
    db.write_bytes(b"old")
    before = FileIdentity.of(db)
    with db.open("ab") as appended:  # written in place: the same file
        appended.write(b"more")
    assert FileIdentity.of(db) == before
    (tmp_path / "new.db").write_bytes(b"new")
    os.replace(tmp_path / "new.db", db)  # moved over: another file
    assert FileIdentity.of(db) not in (None, before)
    db.unlink()
    assert FileIdentity.of(db) is None


def test_a_pinned_file_sees_writes_even_after_it_was_moved_away(tmp_path):
    db = tmp_path / "edge.db"
    db.write_bytes(b"x" * 4096)
    pinned = PinnedFile(db)
    try:
        assert not pinned.changed()
        os.replace(db, tmp_path / "elsewhere.db")
        assert not pinned.changed()  # a rename is not a write of the content
        with (tmp_path / "elsewhere.db").open("r+b") as same_size:
            same_size.write(b"y")
        assert pinned.changed()
    finally:
        pinned.close()


def test_companion_files_and_the_wal_size(tmp_path):
    db = tmp_path / "edge.db"
    db.write_bytes(b"")
    assert CompanionFiles.of(db) == CompanionFiles(None, None)
    assert wal_size(db) is None
    (tmp_path / "edge.db-wal").write_bytes(b"")
    assert wal_size(db) == 0
    (tmp_path / "edge.db-wal").write_bytes(b"frames")
    (tmp_path / "edge.db-shm").write_bytes(b"")
    seen = CompanionFiles.of(db)
    assert wal_size(db) == 6
    assert seen.wal == FileIdentity.of(tmp_path / "edge.db-wal")
    assert seen.shm == FileIdentity.of(tmp_path / "edge.db-shm")
