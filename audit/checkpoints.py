"""What each producer says it sent: its last checkpoint per (node, source table), read from
the compacted checkpoint topic (read_committed, to the end).

Read tolerantly: fields a newer producer adds are ignored, a field the audit needs and does
not find makes that checkpoint a finding instead of a crash, so the audit keeps working while
producers of several versions run in a fleet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sensorstream.topics import read_to_end


@dataclass(frozen=True)
class SentRows:
    """One producer's own account of a source table: rowids 1..`last_rowid` are covered,
    `rows_sent` rows were read from SQLite (records plus dead letters), `dead_letters` of them
    went to the dead-letter topic when the checkpoint says so."""

    node_id: str
    table: str
    last_rowid: int
    rows_sent: int
    dead_letters: int | None
    db: str | None


@dataclass(frozen=True)
class UnreadableCheckpoint:
    key: str
    reason: str


def parse_checkpoint(key: str, value: bytes) -> SentRows | UnreadableCheckpoint:
    try:
        data = json.loads(value)
        node, table = data["node_id"], data["table"]
        rowid, total = int(data["rowid"]), int(data["rows_total"])
    except (ValueError, TypeError, KeyError) as exc:
        return UnreadableCheckpoint(key, f"not a checkpoint the audit can read ({exc!r})")
    dead = data.get("dead_letters", data.get("rows_dead_lettered"))
    return SentRows(node, table, rowid, total, None if dead is None else int(dead), data.get("db"))


def read_checkpoints(
    kafka_config: dict[str, str], topic: str, timeout: float = 120.0
) -> tuple[dict[tuple[str, str], SentRows], list[UnreadableCheckpoint]]:
    """The latest checkpoint per key (a tombstone removes it) and those that cannot be read."""
    latest: dict[bytes, bytes | None] = {}
    for message in read_to_end(kafka_config, topic, timeout=timeout):
        latest[message.key() or b""] = message.value()
    sent: dict[tuple[str, str], SentRows] = {}
    unreadable: list[UnreadableCheckpoint] = []
    for key, value in latest.items():
        if value is None:
            continue
        parsed = parse_checkpoint(key.decode("utf-8", "replace"), value)
        if isinstance(parsed, UnreadableCheckpoint):
            unreadable.append(parsed)
        else:
            sent[(parsed.node_id, parsed.table)] = parsed
    return sent, unreadable
