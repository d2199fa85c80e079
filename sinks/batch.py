"""A table's buffered Kafka records, kept as columns until its flush policy says to write.

The sink buffers hundreds of thousands of records per table. Keeping them as one Python object
per record (with its own memoryviews) cost most of the sink's time: the objects themselves and
the cyclic GC walking them again and again. Here a batch is a handful of lists filled from each
`consume()` result by list comprehensions, holding only objects the GC does not track (bytes,
ints, strings), and the last offset per topic-partition is kept as records arrive. A
`SinkMessage` is built only for a record that becomes a dead letter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any

from sinks.tables import TableTarget

RECORD_OVERHEAD = 64
"""Bytes counted per record beside its value (key, offsets, list slots) for `max_bytes`."""


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One consumed record with everything the dead-letter table keeps of it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


@dataclass
class BufferedRecords:
    """One table's records, column by column, in consumption order (per partition: offset
    order); what a flush decodes and writes."""

    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    headers: list[list[tuple[str, bytes]] | None] = field(default_factory=list)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets)

    def message(self, index: int) -> SinkMessage:
        """Record `index` as a `SinkMessage`, for the dead-letter table."""
        return SinkMessage(
            topic=self.topics[index],
            partition=self.partitions[index],
            offset=self.offsets[index],
            timestamp_ms=self.timestamps[index],
            key=self.keys[index],
            value=self.values[index],
            headers=self.headers[index],
        )

    def messages(self) -> list[SinkMessage]:
        return [self.message(i) for i in range(len(self))]

    def release_values(self) -> None:
        """Drop the values once decoded: the table (and any dead row) holds them now, and a
        batch being written should not also hold them twice over."""
        self.values = []

    def _columns(self) -> tuple[list[Any], ...]:
        return (
            self.topics,
            self.partitions,
            self.offsets,
            self.values,
            self.keys,
            self.timestamps,
            self.headers,
        )

    def keep(self, mask: list[bool]) -> None:
        """Keep the records whose `mask` entry is true, and recompute the last offsets."""
        for column in self._columns():
            column[:] = compress(column, mask)
        last: dict[tuple[str, int], int] = {}
        pairs = zip(self.topics, self.partitions, strict=True)
        for key, offset in zip(pairs, self.offsets, strict=True):
            last[key] = max(last.get(key, -1), offset)
        self.last_offsets = last


UPSTREAM_SHARE = 0.5
"""At most this share of a table's `max_latency_s` is made up for time spent upstream."""


def upstream_seconds(timestamps_ms: list[int], max_latency_s: float, wall_now: float) -> float:
    """How long the oldest of these records had been in the pipeline when it reached the sink,
    counted from its Kafka timestamp (the producer's send time, which the router keeps), and
    capped at `UPSTREAM_SHARE` of the table's latency.

    A route's `max_latency_s` is what its readers wait for a row, so the sink starts the clock
    where the pipeline does, not where the sink first saw the row: counted from arrival, a
    30-second table showed rows 30 s plus the producer and router's time after they were
    written. The cap keeps batches whole when the sink is behind (every record is old then)
    and limits what a node's fast clock can take off; a slow clock counts as no time upstream.
    """
    stamped = [t for t in timestamps_ms if t > 0]
    if not stamped:
        return 0.0
    age = wall_now - min(stamped) / 1000.0
    return min(max(age, 0.0), max_latency_s * UPSTREAM_SHARE)


class TableBatch:
    """The records buffered for one table, and when its flush policy says to write them."""

    def __init__(self, target: TableTarget) -> None:
        self.target = target
        self.records = BufferedRecords()
        self.size = 0
        self.deadline = 0.0
        """When its oldest record has waited as long as the route allows (monotonic)."""

    def __len__(self) -> int:
        return len(self.records)

    def add(self, topic: str, messages: list[Any]) -> None:
        """Append error-free confluent-kafka messages of `topic`, as they were consumed."""
        if not messages:
            return
        r = self.records
        partitions = [m.partition() for m in messages]
        offsets = [m.offset() for m in messages]
        values = [m.value() for m in messages]
        timestamps = [m.timestamp()[1] for m in messages]
        if not r.offsets:
            latency = self.target.settings.max_latency_s
            upstream = upstream_seconds(timestamps, latency, time.time())
            self.deadline = time.monotonic() + latency - upstream
        r.topics.extend(repeat(topic, len(messages)))
        r.partitions += partitions
        r.offsets += offsets
        r.values += values
        r.keys += [m.key() for m in messages]
        r.timestamps += timestamps
        r.headers += [m.headers() for m in messages]
        try:
            size = sum(map(len, values))
        except TypeError:  # tombstones (None values) among them
            size = sum(len(v) for v in values if v is not None)
        self.size += size + RECORD_OVERHEAD * len(messages)
        # A partition's records arrive in offset order: the last one seen is its highest.
        for partition, offset in dict(zip(partitions, offsets, strict=True)).items():
            key = (topic, partition)
            r.last_offsets[key] = max(r.last_offsets.get(key, -1), offset)

    def full(self) -> bool:
        """At the route's max rows or bytes: write it now, waiting for its lane if need be."""
        s = self.target.settings
        return len(self.records) >= s.max_rows or self.size >= s.max_bytes

    def due(self, now: float) -> bool:
        """Full, or its oldest record has waited as long as the route allows."""
        return bool(len(self.records)) and (self.full() or now >= self.deadline)

    def take(self) -> BufferedRecords:
        """The buffered records, handed over to a flush; the batch starts empty again."""
        records, self.records, self.size = self.records, BufferedRecords(), 0
        return records

    def partitions(self) -> set[tuple[str, int]]:
        """The topic-partitions with a buffered record."""
        return set(self.records.last_offsets)

    def drop_partitions(self, revoked: set[tuple[str, int]]) -> int:
        """Forget the records of `revoked` partitions (their new owner replays them); returns
        how many were dropped."""
        if not revoked & self.partitions():
            return 0
        r = self.records
        mask = [(t, p) not in revoked for t, p in zip(r.topics, r.partitions, strict=True)]
        before = len(r)
        r.keep(mask)
        self.size = sum(len(v) for v in r.values if v is not None) + RECORD_OVERHEAD * len(r)
        return before - len(r)
