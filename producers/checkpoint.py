"""The producer's checkpoint: the last source rowid whose records are in Kafka.

It lives in a compacted topic, keyed by node and table, and is written in the same Kafka
transaction as the records it covers, so the two can never disagree: after a crash, the
checkpoint read back (read_committed) is exactly where the committed records end. This is what
the legacy uploader's JSON state file, written after the upload, could not give.

A checkpoint also carries a fingerprint of the row at its rowid, so a database that was
deleted and recreated (rowids starting again, perhaps already past the checkpoint) is told
apart from the same database having grown, and an identity of that row (with its key), so the
same database started under another node id is recognised (producers/identity.py). A node
renamed on purpose hands its checkpoint over: the old key then says where it moved.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

from confluent_kafka import Producer

from sensorstream.topics import read_to_end

CHECKPOINT_FORMAT = 1


def checkpoint_key(node_id: str, table: str) -> bytes:
    return f"{node_id}/{table}".encode()


def row_identity(rowid: int, event_time: object, key: object) -> str:
    """What identifies a produced row among every node's databases: its rowid, raw event time
    and key (the sensor id). The key tells apart two nodes whose databases hold readings
    taken at the same moment at the same rowid (coarse timestamps, nodes started together)."""
    return hashlib.blake2b(repr((rowid, event_time, key)).encode(), digest_size=12).hexdigest()


def row_fingerprint(rowid: int, event_time: object) -> str:
    """What identifies a source row across restarts: its rowid and its raw event time.

    Not the whole row: a column added later, or an edge application updating a measurement,
    must not make the same database look recreated. A recreated database, though, will almost
    surely hold a different reading (another event time) at the checkpoint's rowid.
    """
    return hashlib.blake2b(repr((rowid, event_time)).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    node_id: str
    table: str
    db: str
    rowid: int  # last source rowid covered; 0 before the first
    row_fingerprint: str | None
    schema_id: int | None
    rows_total: int  # rows produced (including dead letters) since the first checkpoint
    committed_at: float
    # Added later, hence the defaults: checkpoints written before read back as None.
    row_identity: str | None = None  # `row_identity` of the row at `rowid`
    renamed_from: str | None = None  # the node id whose checkpoint this one continues
    moved_to: str | None = None  # set on a renamed node's last checkpoint: its new node id
    # The row's event time and key without its rowid: finds it again after VACUUM moved it
    # (producers.rowid_guard). None in checkpoints written before it was kept.
    row_content: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"format": CHECKPOINT_FORMAT, **asdict(self)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        raw = json.loads(data)
        if raw.pop("format", None) != CHECKPOINT_FORMAT:
            raise ValueError("unknown checkpoint format")
        return cls(**raw)

    @classmethod
    def initial(cls, node_id: str, table: str, db: str) -> Checkpoint:
        return cls(node_id, table, db, 0, None, None, 0, time.time())


class CheckpointStore:
    def __init__(self, kafka_config: dict[str, str], topic: str) -> None:
        self.kafka_config = kafka_config
        self.topic = topic

    def read(self, node_id: str, table: str, timeout: float = 120.0) -> Checkpoint | None:
        """The last committed checkpoint for (node, table), or None when there is none.

        Call only after the producer's `init_transactions()`: that aborts any transaction a
        previous incarnation left open, which would otherwise hold read_committed readers at
        the last stable offset until it times out.
        """
        latest = self.read_latest(timeout).get(checkpoint_key(node_id, table))
        return None if latest is None else Checkpoint.from_bytes(latest)

    def read_latest(self, timeout: float = 120.0) -> dict[bytes, bytes]:
        """The last committed checkpoint of every (node, table), as stored (key -> value).

        One read of the whole topic, as `read` needs anyway; a key whose last value is a
        tombstone (a reset checkpoint) is left out. Same precondition as `read`.
        """
        latest: dict[bytes, bytes] = {}
        for message in read_to_end(self.kafka_config, self.topic, timeout=timeout):
            key, value = message.key(), message.value()
            if key is None:
                continue
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        return latest

    def stage(self, producer: Producer, checkpoint: Checkpoint) -> None:
        """Produce `checkpoint` into the producer's open transaction."""
        producer.produce(
            self.topic,
            key=checkpoint_key(checkpoint.node_id, checkpoint.table),
            value=checkpoint.to_bytes(),
        )
