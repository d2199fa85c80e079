"""A database's identity across node ids (producers/identity.py), on real SQLite files: which
earlier checkpoint a database matches, and what each start decides. No servers: the Kafka
side (the handover transaction, the refusal's exit code) is tests/integration."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from producers.checkpoint import Checkpoint, checkpoint_key
from producers.identity import Handover, Holds, holds_last_row, resolve, row_marks
from producers.source import SQLiteSource
from sensorstream.errors import ConfigError

TABLE = "readings"


def make_db(path: Path, rows: list[tuple[str, str]]) -> SQLiteSource:
    """(event time, sensor id) rows, rowids 1..n."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, ts TEXT, sensor_id TEXT, v REAL)")
    conn.executemany(f"INSERT INTO {TABLE} (ts, sensor_id, v) VALUES (?, ?, 1.5)", rows)
    conn.commit()
    conn.close()
    return SQLiteSource(path).open()


def readings(sensor: str, n: int = 5) -> list[tuple[str, str]]:
    return [(f"2026-11-20 08:00:0{i}", sensor) for i in range(n)]


def produced(source: SQLiteSource, node: str, rowid: int, **changes) -> Checkpoint:
    """The checkpoint a producer named `node` commits after `rowid` of `source`."""
    marks = row_marks(source, source.row_at(rowid), "sensor_id")
    checkpoint = Checkpoint(
        node,
        TABLE,
        str(source.path),
        rowid,
        marks.fingerprint,
        3,
        rowid,
        time.time(),
        row_identity=marks.identity,
    )
    return replace(checkpoint, **changes)


def latest(*checkpoints: Checkpoint) -> dict[bytes, bytes]:
    return {checkpoint_key(c.node_id, c.table): c.to_bytes() for c in checkpoints}


def decide(source: SQLiteSource, stored: dict[bytes, bytes], node: str, **options):
    return resolve(
        stored, source, node_id=node, db=str(source.path), key_column="sensor_id", **options
    )


@pytest.fixture
def edge(tmp_path: Path) -> SQLiteSource:
    return make_db(tmp_path / "edge.db", readings("s-1"))


def test_the_same_database_under_a_new_node_id_is_refused_naming_the_earlier_node(edge):
    stored = latest(produced(edge, "node-a", 4))
    with pytest.raises(ConfigError) as refused:
        decide(edge, stored, "node-b")
    message = str(refused.value)
    assert "already produced as node node-a" in message
    assert "--renamed-from node-a" in message and "--distinct-from node-a" in message
    assert str(edge.path) in message and "rowid 4" in message


def test_a_new_database_is_not_taken_for_another(tmp_path, edge):
    other = make_db(tmp_path / "other.db", readings("s-2"))  # same times, same rowids
    stored = latest(produced(edge, "node-a", 4))
    assert decide(other, stored, "node-b") is None


def test_checkpoints_of_other_tables_and_pruned_rows_do_not_match(tmp_path, edge):
    elsewhere = replace(produced(edge, "node-a", 4), table="other_table")
    assert decide(edge, latest(elsewhere), "node-b") is None
    pruned = make_db(tmp_path / "pruned.db", readings("s-1"))
    conn = sqlite3.connect(pruned.path)
    conn.execute(f"DELETE FROM {TABLE} WHERE id <= 4")  # shipped rows pruned: none to resend
    conn.commit()
    conn.close()
    assert holds_last_row(pruned, produced(edge, "node-a", 4), "sensor_id") is Holds.UNKNOWN
    assert decide(pruned, latest(produced(edge, "node-a", 4)), "node-b") is None


def test_an_old_checkpoint_without_identity_matches_by_fingerprint(tmp_path, edge):
    old = produced(edge, "node-a", 4, row_identity=None)
    raw = json.loads(old.to_bytes())
    for field in ("row_identity", "renamed_from", "moved_to"):
        del raw[field]  # as written before these fields existed
    stored = {checkpoint_key("node-a", TABLE): json.dumps(raw).encode()}
    with pytest.raises(ConfigError, match="already produced as node node-a"):
        decide(edge, stored, "node-b")


def test_distinct_from_and_own_checkpoint(edge):
    stored = latest(produced(edge, "node-a", 4))
    assert decide(edge, stored, "node-b", distinct_from="node-a") is None
    own = produced(edge, "node-b", 5)
    assert decide(edge, latest(produced(edge, "node-a", 4), own), "node-b") == own


def test_renamed_from_hands_the_checkpoint_over(edge):
    earlier = produced(edge, "node-a", 4)
    handover = decide(edge, latest(earlier), "node-b", renamed_from="node-a")
    assert isinstance(handover, Handover)
    adopted = handover.adopted
    assert (adopted.node_id, adopted.rowid, adopted.rows_total) == ("node-b", 4, earlier.rows_total)
    assert (adopted.renamed_from, adopted.row_identity) == ("node-a", earlier.row_identity)
    assert handover.moved().moved_to == "node-b" and handover.moved().node_id == "node-a"

    # After the handover, with the option still set or not, node B resumes its own.
    after = latest(handover.moved(), replace(adopted, rowid=5))
    assert decide(edge, after, "node-b", renamed_from="node-a").rowid == 5
    assert decide(edge, after, "node-b").rowid == 5
    with pytest.raises(ConfigError, match="handed over to node node-b"):
        decide(edge, after, "node-a")


def test_renamed_from_refuses_what_it_cannot_continue(tmp_path, edge):
    other = make_db(tmp_path / "other.db", readings("s-2"))
    earlier = produced(edge, "node-a", 4)
    with pytest.raises(ConfigError, match="not the database node node-a produced"):
        decide(other, latest(earlier), "node-b", renamed_from="node-a")
    with pytest.raises(ConfigError, match="node node-z has no checkpoint"):
        decide(edge, latest(earlier), "node-b", renamed_from="node-z")
    moved = replace(earlier, moved_to="node-c")
    with pytest.raises(ConfigError, match="already handed over to node node-c"):
        decide(edge, latest(moved), "node-b", renamed_from="node-a")
    own = produced(edge, "node-b", 5)
    with pytest.raises(ConfigError, match="already has its own checkpoint"):
        decide(edge, latest(earlier, own), "node-b", renamed_from="node-a")


def test_an_unreadable_checkpoint_of_another_node_is_skipped(edge):
    stored = {checkpoint_key("node-x", TABLE): b"not json", **latest(produced(edge, "a", 4))}
    with pytest.raises(ConfigError, match="already produced as node a"):
        decide(edge, stored, "node-b")
