"""Kafka messages to Arrow tables with the lake's columns (DESIGN section 8).

Readings are decoded in bulk: the bodies of one writer schema become one Avro container block
that polars reads straight into Arrow (`schemas.avro_arrow`), many times faster than decoding
record by record. A message that cannot be decoded, or has no event time to partition by,
becomes a `DeadRow` for the dead-letter table instead of failing the batch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from schemas.avro_arrow import concat_evolving, decode_bodies_checked
from schemas.avro_codec import AvroDecoder, UndecodableMessage
from schemas.dead_letter import HEADER_ERROR, HEADER_FAILED_AT, HEADER_STAGE
from schemas.registry import WIRE_HEADER_SIZE, read_wire_header
from sinks.compatibility import conflicts
from sinks.tables import TableTarget

EVENT_TIME = "timestamp"
STAGE = "sink"


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """What the sink keeps of a consumed message until its table commits."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


@dataclass(frozen=True, slots=True)
class DeadRow:
    message: SinkMessage
    reason: str


def _metadata(
    table: pa.Table, messages: list[SinkMessage], schema_id: int | None, route: str, now: datetime
) -> pa.Table:
    n = table.num_rows
    columns = {
        "_ingested_at": pa.array([now] * n, pa.timestamp("us", "UTC")),
        "_kafka_topic": pa.array([m.topic for m in messages], pa.string()),
        "_kafka_partition": pa.array([m.partition for m in messages], pa.int32()),
        "_kafka_offset": pa.array([m.offset for m in messages], pa.int64()),
        "_schema_id": pa.array([schema_id] * n, pa.int32()),
        "_route": pa.array([route] * n, pa.string()),
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


def readings_table(
    target: TableTarget,
    messages: list[SinkMessage],
    decoder: AvroDecoder,
    now: datetime,
    misfits: Callable[[pa.Schema], list[str]] = lambda _: [],
) -> tuple[pa.Table | None, list[DeadRow]]:
    """The rows of `messages` as one Arrow table for `target`, and the messages that failed.

    `misfits` names the columns of a schema the destination table cannot take; a schema id
    with any (or one conflicting with another schema id of the batch) goes to the dead rows.
    """
    dead: list[DeadRow] = []
    groups: dict[int, list[SinkMessage]] = defaultdict(list)
    for message in messages:
        if message.value is None:
            dead.append(DeadRow(message, "the message has no value (a tombstone)"))
            continue
        try:
            groups[read_wire_header(message.value)].append(message)
        except ValueError as exc:
            dead.append(DeadRow(message, f"not Avro in the Confluent wire format: {exc}"))
    tables = []
    for schema_id, group in groups.items():
        try:
            schema = decoder.writer_schema(schema_id)
        except UndecodableMessage as exc:
            dead.extend(DeadRow(m, str(exc)) for m in group)
            continue
        bodies = [memoryview(m.value)[WIRE_HEADER_SIZE:] for m in group]
        table, bad = decode_bodies_checked(schema, bodies)
        if bad:
            bad_index = {index for index, _ in bad}
            dead.extend(
                DeadRow(group[i], f"the Avro body does not match schema id {schema_id}: {why}")
                for i, why in bad
            )
            group = [m for i, m in enumerate(group) if i not in bad_index]
        if not group:
            continue
        event_time = _event_time_column(table)
        if event_time is None:
            dead.extend(DeadRow(m, f"schema id {schema_id} has no event-time field") for m in group)
            continue
        times = table.column(event_time)
        if times.null_count:
            missing = pc.is_null(times).to_pylist()
            dead.extend(
                DeadRow(m, f"no event time ({event_time} is null)")
                for m, gone in zip(group, missing, strict=True)
                if gone
            )
            keep = pc.invert(pc.is_null(times))
            table = table.filter(keep)
            group = [m for m, gone in zip(group, missing, strict=True) if not gone]
            times = table.column(event_time)
        problems = misfits(table.schema)
        for accepted in tables:
            problems += conflicts(table.schema, accepted.schema, "another schema of the batch")
        if problems:
            reason = f"schema id {schema_id} does not fit table {target.uri}: " + "; ".join(
                problems
            )
            dead.extend(DeadRow(m, reason) for m in group)
            continue
        table = _metadata(table, group, schema_id, target.route, now)
        tables.append(_with_partitions(table, times, target.settings.hourly))
    if not tables:
        return None, dead
    return concat_evolving(tables), dead


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
    table = _metadata(table, messages, None, "dlq", now)
    return _with_partitions(table, table.column("message_time"), hourly)
