"""A database's identity across node ids: the same rows are never produced under two names.

Checkpoints are keyed by (node id, table). Started under a new node id (a renamed host, a
container whose hostname is its default node id, a typo in a deployment), a producer finds no
checkpoint and would stream the whole database again: every reading would land twice
downstream. The producer opens SQLite read-only, so it cannot mark a database as its own; the
identity is derived from the rows instead. Every checkpoint records the identity of the last
row it covers (rowid, raw event time and key), so a database that still holds that row, as it
was, is the database that checkpoint's node produced. A genuinely new database holds no row
another node produced; one whose produced rows were all pruned holds nothing that could be
sent twice.

A node renamed on purpose says so (`renamed_from`): it takes the earlier node's checkpoint
over, and the earlier key is marked as moved, so the old name cannot stream the rows again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum

from producers.checkpoint import Checkpoint, checkpoint_key, row_fingerprint, row_identity
from producers.source import SQLiteSource
from sensorstream.errors import ConfigError

log = logging.getLogger("sensorstream.producer")


@dataclass(frozen=True)
class RowMarks:
    fingerprint: str  # checkpoint.row_fingerprint: the same database, grown or recreated
    identity: str  # checkpoint.row_identity: the same database, under any node id


def row_marks(source: SQLiteSource, row: tuple, key_column: str) -> RowMarks:
    """The marks of a row as the source reads it: (rowid, *columns)."""
    names = [c.name for c in source.columns]
    event_time = row[1 + names.index(source.timestamp_column)]
    key = row[1 + names.index(key_column)] if key_column in names else None
    return RowMarks(row_fingerprint(row[0], event_time), row_identity(row[0], event_time, key))


class Holds(Enum):
    SAME = "same"  # the checkpoint's last row is here, as it was produced
    OTHER = "other"  # a different row is at that rowid
    UNKNOWN = "unknown"  # no row at that rowid (pruned, or never written)


def holds_last_row(source: SQLiteSource, checkpoint: Checkpoint, key_column: str) -> Holds:
    """Whether this database holds the last row `checkpoint` covers, as it was produced."""
    if checkpoint.rowid <= 0 or checkpoint.row_fingerprint is None:
        return Holds.UNKNOWN
    row = source.row_at(checkpoint.rowid)
    if row is None:
        return Holds.UNKNOWN
    marks = row_marks(source, row, key_column)
    if checkpoint.row_identity is not None:  # checkpoints written before it had none
        same = marks.identity == checkpoint.row_identity
    else:
        same = marks.fingerprint == checkpoint.row_fingerprint
    return Holds.SAME if same else Holds.OTHER


def parse_checkpoints(latest: dict[bytes, bytes]) -> dict[bytes, Checkpoint]:
    """Every node's checkpoint that can be read; one that cannot is logged, not fatal: it
    belongs to another node, and this node's own is parsed strictly by its caller."""
    checkpoints = {}
    for key, value in latest.items():
        try:
            checkpoints[key] = Checkpoint.from_bytes(value)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            log.warning("checkpoint %r cannot be read (%s); not compared", key, exc)
    return checkpoints


@dataclass(frozen=True)
class Handover:
    """A renamed node's first start: it continues `earlier`, which is marked as moved."""

    earlier: Checkpoint
    adopted: Checkpoint

    def moved(self) -> Checkpoint:
        return replace(self.earlier, moved_to=self.adopted.node_id, committed_at=time.time())


def _when(checkpoint: Checkpoint) -> str:
    return datetime.fromtimestamp(checkpoint.committed_at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def resolve(
    latest: dict[bytes, bytes],
    source: SQLiteSource,
    *,
    node_id: str,
    db: str,
    key_column: str,
    renamed_from: str | None = None,
    distinct_from: str | None = None,
) -> Checkpoint | Handover | None:
    """This node's checkpoint, a handover to perform first, or None for a new database.

    Raises ConfigError (exit 2: the node id is configuration) when this database was produced
    under another node id, or this node's checkpoint was handed over to another.
    """
    table = source.table
    own_bytes = latest.get(checkpoint_key(node_id, table))
    own = None if own_bytes is None else Checkpoint.from_bytes(own_bytes)
    if own is not None and own.moved_to is not None:
        raise ConfigError(
            f"{db}: node {node_id}'s checkpoint for table {table} was handed over to node "
            f"{own.moved_to} (renamed, {_when(own)}): its rows continue as node {own.moved_to}. "
            f"Start this producer with --node-id {own.moved_to}; a different database needs a "
            "node id of its own. Nothing was produced."
        )
    if renamed_from is None and own is not None:
        return own  # the usual start: other nodes' checkpoints are not even parsed
    checkpoints = parse_checkpoints(latest)
    if renamed_from is not None:
        return _renamed(checkpoints, own, source, node_id, db, key_column, renamed_from)
    earlier = [
        c
        for c in checkpoints.values()
        if c.table == table
        and c.node_id not in (node_id, distinct_from)
        and holds_last_row(source, c, key_column) is Holds.SAME
    ]
    if not earlier:
        return None
    # The current owner first (a renamed node's old key still matches), then the newest.
    earlier.sort(key=lambda c: (c.moved_to is not None, -c.committed_at))
    first = earlier[0]
    others = sorted({c.node_id for c in earlier[1:]})
    also = f" (also matching: {', '.join(others)})" if others else ""
    raise ConfigError(
        f"{db}: table {table} was already produced as node {first.node_id}{also}: this "
        f"database holds the last row node {first.node_id} produced (rowid {first.rowid}, "
        f"{first.rows_total} rows, last committed {_when(first)}). Started as node {node_id} it "
        "would send every row again. Nothing was produced. If the node was renamed, run with "
        f"--renamed-from {first.node_id} (or SENSORSTREAM_PRODUCER_RENAMED_FROM="
        f"{first.node_id}): node {node_id} continues its checkpoint and nothing is sent twice. "
        f"If the node id changed by mistake, start it as --node-id {first.node_id}. If this "
        "is a different database that holds the same reading, run with --distinct-from "
        f"{first.node_id}."
    )


def _renamed(
    checkpoints: dict[bytes, Checkpoint],
    own: Checkpoint | None,
    source: SQLiteSource,
    node_id: str,
    db: str,
    key_column: str,
    renamed_from: str,
) -> Checkpoint | Handover:
    table = source.table
    earlier = checkpoints.get(checkpoint_key(renamed_from, table))
    remove = f"Remove --renamed-from {renamed_from} (SENSORSTREAM_PRODUCER_RENAMED_FROM)."
    if own is not None:
        # The option may stay set after the handover (e.g. in a deployment's environment).
        if own.renamed_from == renamed_from or (
            earlier is not None and earlier.moved_to == node_id
        ):
            return own
        raise ConfigError(
            f"{db}: --renamed-from {renamed_from}: node {node_id} already has its own checkpoint "
            f"for table {table} (rowid {own.rowid}), and node {renamed_from}'s was not handed "
            f"over to it; taking it over now could send rows twice. {remove}"
        )
    if earlier is None:
        raise ConfigError(
            f"{db}: --renamed-from {renamed_from}: node {renamed_from} has no checkpoint for "
            f"table {table}, so there is nothing to continue. Check the earlier node id, or "
            f"stream this database as a new one: {remove}"
        )
    if earlier.moved_to not in (None, node_id):
        raise ConfigError(
            f"{db}: --renamed-from {renamed_from}: node {renamed_from}'s checkpoint was already "
            f"handed over to node {earlier.moved_to} ({_when(earlier)}). Start as --node-id "
            f"{earlier.moved_to}, or --renamed-from {earlier.moved_to}."
        )
    holds = holds_last_row(source, earlier, key_column)
    if holds is Holds.OTHER:
        raise ConfigError(
            f"{db}: --renamed-from {renamed_from}: this is not the database node {renamed_from} "
            f"produced: its row at rowid {earlier.rowid} is not the row produced there. {remove}"
        )
    if holds is Holds.UNKNOWN:
        log.warning(
            "node %s's last produced row (rowid %d) is not in %s (pruned?): taking its "
            "checkpoint over on the word of --renamed-from",
            renamed_from,
            earlier.rowid,
            db,
        )
    adopted = replace(earlier, node_id=node_id, db=db, renamed_from=renamed_from, moved_to=None)
    return Handover(earlier, replace(adopted, committed_at=time.time()))
