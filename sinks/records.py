"""Buffered Kafka records to Arrow tables with the lake's columns (DESIGN section 8).

Readings are decoded in bulk: the whole values of one writer schema (wire header and all)
become one Avro container block that polars reads straight into Arrow (`schemas.avro_arrow`),
many times faster than decoding record by record, and the Kafka columns are built from the
batch's columns in one call each. A record that cannot be decoded, or has no event time to
partition by, becomes a `DeadRow` for the dead-letter table instead of failing the batch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from schemas.avro_arrow import concat_evolving, decode_bodies_at_once, decode_bodies_checked
from schemas.avro_codec import AvroDecoder, UndecodableMessage
from schemas.dead_letter import HEADER_ERROR, HEADER_FAILED_AT, HEADER_STAGE
from schemas.registry import WIRE_HEADER_SIZE, read_wire_header
from schemas.route_headers import routes_version
from sensorstream.retention import ExpiredRecords
from sinks.batch import BufferedRecords, SinkMessage
from sinks.compatibility import conflicts
from sinks.tables import TableTarget

EVENT_TIME = "timestamp"
STAGE = "sink"


@dataclass(frozen=True, slots=True)
class DeadRow:
    message: SinkMessage
    reason: str


def expired_dead_row(gap: ExpiredRecords, now_ms: int) -> DeadRow:
    """The dead-letter row for a retention gap (`sensorstream.retention`), its first and last
    offsets also as headers. The row stands where the records would have been: at the gap's
    last offset, which is also the txn version it is written with, so that meeting the same gap
    again (a new assignment before a batch past it has landed) finds it already there."""
    message = SinkMessage(
        topic=gap.topic,
        partition=gap.partition,
        offset=gap.last,
        timestamp_ms=now_ms,
        key=None,
        value=None,
        headers=gap.headers(),
    )
    return DeadRow(message, f"{gap.reason(STAGE)}; they are not in the table")


@dataclass(frozen=True)
class KafkaColumns:
    """The Kafka coordinates of some rows, as Arrow arrays (one per lake column)."""

    topics: pa.Array
    partitions: pa.Array
    offsets: pa.Array
    routing_versions: pa.Array

    @classmethod
    def of(cls, records: BufferedRecords) -> KafkaColumns:
        return cls(
            pa.array(records.topics, pa.string()),
            pa.array(records.partitions, pa.int32()),
            pa.array(records.offsets, pa.int64()),
            pa.array([routes_version(h) for h in records.headers], pa.int64()),
        )

    @classmethod
    def of_messages(cls, messages: list[SinkMessage]) -> KafkaColumns:
        return cls(
            pa.array([m.topic for m in messages], pa.string()),
            pa.array([m.partition for m in messages], pa.int32()),
            pa.array([m.offset for m in messages], pa.int64()),
            pa.array([routes_version(m.headers) for m in messages], pa.int64()),
        )

    def take(self, rows: list[int] | None) -> KafkaColumns:
        """These columns at `rows` (None: all of them)."""
        if rows is None:
            return self
        indices = pa.array(rows, pa.int64())
        return KafkaColumns(*(column.take(indices) for column in self._arrays()))

    def _arrays(self) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
        return self.topics, self.partitions, self.offsets, self.routing_versions


def _metadata(
    table: pa.Table, kafka: KafkaColumns, schema_id: int | None, route: str, now: datetime
) -> pa.Table:
    n = table.num_rows
    columns = {
        "_ingested_at": pa.repeat(pa.scalar(now, pa.timestamp("us", "UTC")), n),
        "_kafka_topic": kafka.topics,
        "_kafka_partition": kafka.partitions,
        "_kafka_offset": kafka.offsets,
        "_schema_id": pa.repeat(pa.scalar(schema_id, pa.int32()), n),
        "_route": pa.repeat(pa.scalar(route, pa.string()), n),
        "_routing_version": kafka.routing_versions,
    }
    for name, column in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def _with_partitions(table: pa.Table, event_time: pa.ChunkedArray, hourly: bool) -> pa.Table:
    table = table.append_column("event_date", pc.cast(event_time, pa.date32()))
    if hourly:
        table = table.append_column("event_hour", pc.cast(pc.hour(event_time), pa.int32()))
    return table


def _event_time_column(table: pa.Table) -> str | None:
    if EVENT_TIME in table.column_names:
        return EVENT_TIME
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            return field.name
    return None


def _by_header(values: list[bytes | None]) -> dict[bytes | None, list[int] | None]:
    """Row indices per wire header (None: every row has this one); a tombstone's is None."""
    try:
        heads = [v[:WIRE_HEADER_SIZE] for v in values]
    except TypeError:  # tombstones (None values) among them
        heads = [None if v is None else v[:WIRE_HEADER_SIZE] for v in values]
    distinct = set(heads)
    if len(distinct) == 1:
        return {distinct.pop(): None}
    groups: dict[bytes | None, list[int] | None] = defaultdict(list)
    for index, head in enumerate(heads):
        groups[head].append(index)
    return groups


def _decoded_at_once(
    values: list[bytes | None], decoder: AvroDecoder
) -> tuple[bytes, pa.Table] | None:
    """(header, table) when every value has the first one's schema id and decodes: nearly
    every batch, found without slicing each value's header. None sends the batch through
    `_by_header`'s groups, where bad records are found one by one."""
    first = values[0] if values else None
    if first is None or len(first) < WIRE_HEADER_SIZE:
        return None
    header = first[:WIRE_HEADER_SIZE]
    try:
        schema = decoder.writer_schema(read_wire_header(header))
    except (ValueError, UndecodableMessage):
        return None
    table = decode_bodies_at_once(schema, values, prefix=header)
    return None if table is None else (header, table)


def _rows(rows: list[int] | None, n: int) -> list[int]:
    return list(range(n)) if rows is None else rows


@dataclass(frozen=True)
class DecodedGroup:
    """The good rows of one schema id, decoded and given the lake's columns."""

    schema_id: int
    decoded: pa.Schema
    """The schema as decoded, before the lake's columns: what the table has to take."""
    rows: list[int] | None
    """Their indices in the batch (None: every row)."""
    table: pa.Table


@dataclass
class DecodedReadings:
    """A batch decoded without looking at its table, so that it can be decoded while the
    table's previous batch is still being committed. Whether each schema fits the table is
    decided by `fit`, in commit order: a schema change the previous batch merged into the
    table is seen then."""

    target: TableTarget
    records: BufferedRecords
    groups: list[DecodedGroup]
    dead: list[DeadRow]

    def fit(
        self, misfits: Callable[[pa.Schema], list[str]] = lambda _: []
    ) -> tuple[pa.Table | None, list[DeadRow]]:
        """The rows for the table as one Arrow table, and the records that failed.

        `misfits` names the columns of a schema the destination table cannot take; a schema
        id with any (or one conflicting with another schema id of the batch) goes to the dead
        rows.
        """
        dead = list(self.dead)
        accepted: list[pa.Table] = []
        for group in self.groups:
            problems = misfits(group.decoded)
            for table in accepted:
                problems += conflicts(group.decoded, table.schema, "another schema of the batch")
            if problems:
                reason = (
                    f"schema id {group.schema_id} does not fit table {self.target.uri}: "
                    + "; ".join(problems)
                )
                rows = _rows(group.rows, len(self.records))
                dead.extend(DeadRow(self.records.message(i), reason) for i in rows)
                continue
            accepted.append(group.table)
        if not accepted:
            return None, dead
        return concat_evolving(accepted), dead


def decode_readings(
    target: TableTarget, records: BufferedRecords, decoder: AvroDecoder, now: datetime
) -> DecodedReadings:
    """The rows of `records` decoded per schema id, with the lake's columns, and the records
    that cannot be rows at all (not Avro, unknown schema, no event time)."""
    dead: list[DeadRow] = []
    kafka = KafkaColumns.of(records)
    values, n = records.values, len(records)

    def bury(rows: list[int] | None, reason: str) -> None:
        dead.extend(DeadRow(records.message(i), reason) for i in _rows(rows, n))

    groups: list[DecodedGroup] = []
    at_once = _decoded_at_once(values, decoder)
    for header, rows in ({at_once[0]: None} if at_once else _by_header(values)).items():
        if header is None:
            bury(rows, "the message has no value (a tombstone)")
            continue
        try:
            schema_id = read_wire_header(header)
        except ValueError as exc:
            bury(rows, f"not Avro in the Confluent wire format: {exc}")
            continue
        try:
            schema = decoder.writer_schema(schema_id)
        except UndecodableMessage as exc:
            bury(rows, str(exc))
            continue
        if at_once:
            table, bad = at_once[1], []
        else:
            group = values if rows is None else [values[i] for i in rows]
            table, bad = decode_bodies_checked(schema, group, prefix=header)
        if bad:
            indices = _rows(rows, n)
            dead.extend(
                DeadRow(
                    records.message(indices[i]),
                    f"the Avro body does not match schema id {schema_id}: {why}",
                )
                for i, why in bad
            )
            bad_index = {i for i, _ in bad}
            rows = [r for i, r in enumerate(indices) if i not in bad_index]
        if rows is not None and not rows:
            continue
        event_time = _event_time_column(table)
        if event_time is None:
            bury(rows, f"schema id {schema_id} has no event-time field")
            continue
        times = table.column(event_time)
        if times.null_count:
            missing = pc.is_null(times).to_pylist()
            indices = _rows(rows, n)
            bury(
                [r for r, gone in zip(indices, missing, strict=True) if gone],
                f"no event time ({event_time} is null)",
            )
            table = table.filter(pc.invert(pc.is_null(times)))
            rows = [r for r, gone in zip(indices, missing, strict=True) if not gone]
            times = table.column(event_time)
        decoded = table.schema
        table = _metadata(table, kafka.take(rows), schema_id, target.route, now)
        table = _with_partitions(table, times, target.settings.hourly)
        groups.append(DecodedGroup(schema_id, decoded, rows, table))
    return DecodedReadings(target, records, groups, dead)


def readings_table(
    target: TableTarget,
    records: BufferedRecords,
    decoder: AvroDecoder,
    now: datetime,
    misfits: Callable[[pa.Schema], list[str]] = lambda _: [],
) -> tuple[pa.Table | None, list[DeadRow]]:
    """The rows of `records` as one Arrow table for `target`, and the records that failed:
    `decode_readings` and its `fit` in one go."""
    return decode_readings(target, records, decoder, now).fit(misfits)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def dead_letter_table(
    letters: list[SinkMessage], dead_rows: list[DeadRow], hourly: bool, now: datetime
) -> pa.Table | None:
    """Rows of the dead-letter table: letters from the DLQ topic and the sink's own dead rows.

    The value stays binary, exactly as it arrived, so a record can be recovered and replayed.
    """
    rows = []
    for message in letters:
        headers = {k: v for k, v in (message.headers or [])}
        source = {
            k[len("dlq.source.") :]: _text(v)
            for k, v in headers.items()
            if k.startswith("dlq.source.")
        }
        rows.append(
            (
                message,
                _text(headers.get(HEADER_STAGE)),
                _text(headers.get(HEADER_ERROR)),
                _text(headers.get(HEADER_FAILED_AT)),
                source,
                headers,
            )
        )
    failed_at = now.isoformat()
    for row in dead_rows:
        m = row.message
        source = {"topic": m.topic, "partition": str(m.partition), "offset": str(m.offset)}
        rows.append((m, STAGE, row.reason, failed_at, source, dict(m.headers or [])))
    if not rows:
        return None
    messages = [r[0] for r in rows]
    event_time = pa.array(
        [datetime.fromtimestamp(m.timestamp_ms / 1000, UTC) for m in messages],
        pa.timestamp("us", "UTC"),
    )
    table = pa.table(
        {
            "stage": pa.array([r[1] for r in rows], pa.string()),
            "error": pa.array([r[2] for r in rows], pa.string()),
            "failed_at": pa.array([r[3] for r in rows], pa.string()),
            "source": pa.array([json.dumps(r[4], sort_keys=True) for r in rows], pa.string()),
            "headers": pa.array(
                [json.dumps({k: _text(v) for k, v in r[5].items()}, sort_keys=True) for r in rows],
                pa.string(),
            ),
            "message_key": pa.array([m.key for m in messages], pa.binary()),
            "message_value": pa.array([m.value for m in messages], pa.binary()),
            "message_time": event_time,
        }
    )
    table = _metadata(table, KafkaColumns.of_messages(messages), None, "dlq", now)
    return _with_partitions(table, table.column("message_time"), hourly)
