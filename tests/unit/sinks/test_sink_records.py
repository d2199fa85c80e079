"""A sink batch decoded into the lake's rows: the one-pass path for a batch of one schema id,
and the per-schema-id groups it falls back to, which must find every bad record.

The registry is a dict here (pure logic); the Avro is real, encoded with fastavro.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import avro_arrow
from schemas.avro_arrow import decode_bodies_at_once, decode_bodies_checked
from schemas.avro_codec import UndecodableMessage
from schemas.registry import wire_prefix
from schemas.value_schema import curated_schema
from sinks import records as sink_records
from sinks.batch import BufferedRecords
from sinks.records import decode_readings
from sinks.settings import SinkSettings
from sinks.tables import target_for
from tests.unit.schemas.test_avro_arrow import encode, reading

NOW = datetime(2026, 11, 23, tzinfo=UTC)
TOPIC = "sensors.raw"


class Registry:
    """Writer schemas by id, as AvroDecoder.writer_schema answers."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self.schemas:
            raise UndecodableMessage(f"schema id {schema_id} is not in the schema registry")
        return self.schemas[schema_id]


def evolved_schema() -> dict[str, Any]:
    schema = curated_schema()
    return {**schema, "fields": [*schema["fields"], {"name": "extra", "type": ["null", "long"]}]}


def batch(values: list[bytes | None]) -> BufferedRecords:
    n = len(values)
    return BufferedRecords(
        topics=[TOPIC] * n,
        partitions=[i % 2 for i in range(n)],
        offsets=list(range(100, 100 + n)),
        values=values,
        keys=[f"k{i}".encode() for i in range(n)],
        timestamps=[1_700_000_000_000 + i for i in range(n)],
        headers=[None] * n,
    )


def decoded(values: list[bytes | None], registry: Registry):
    target = target_for(TOPIC, SinkSettings(topics=[TOPIC], topic_prefix="sensors."), "/lake")
    table, dead = decode_readings(target, batch(values), registry, NOW).fit()
    return table, {row.message.offset - 100: row.reason for row in dead}


def good_values(n: int, schema_id: int = 7, schema: dict | None = None) -> list[bytes]:
    bodies = encode(schema or curated_schema(), [reading(i) for i in range(n)])
    return [wire_prefix(schema_id) + b for b in bodies]


def test_one_schema_id_decodes_in_one_pass_without_grouping(monkeypatch) -> None:
    def no_grouping(_values):
        raise AssertionError("a batch of one schema id was grouped value by value")

    monkeypatch.setattr(sink_records, "_by_header", no_grouping)
    values = good_values(50)
    table, dead = decoded(values, Registry({7: curated_schema()}))
    assert dead == {}
    assert table.column("id").to_pylist() == list(range(50))
    assert table.column("_kafka_offset").to_pylist() == list(range(100, 150))
    assert table.column("_kafka_partition").to_pylist() == [i % 2 for i in range(50)]
    assert set(table.column("_schema_id").to_pylist()) == {7}


@pytest.mark.parametrize("first_is_bad", [False, True])
def test_a_mixed_batch_falls_back_and_finds_every_bad_record(first_is_bad: bool) -> None:
    registry = Registry({7: curated_schema(), 8: evolved_schema()})
    values: list[bytes | None] = list(good_values(40))
    evolved = good_values(40, 8, evolved_schema())
    values[5] = evolved[5]  # another schema id: its own group, not a bad record
    values[6] = evolved[6]
    values[10] = None  # a tombstone
    values[11] = b"not avro at all"
    values[12] = wire_prefix(99) + b"\x00"  # an id the registry does not know
    values[13] = values[13][:-3]  # truncated body
    if first_is_bad:
        values[0] = None
    table, dead = decoded(values, registry)
    bad = {10, 11, 12, 13} | ({0} if first_is_bad else set())
    assert set(dead) == bad
    assert "tombstone" in dead[10]
    assert "wire format" in dead[11]
    assert "99" in dead[12]
    assert "does not match schema id 7" in dead[13]
    landed = sorted(table.column("_kafka_offset").to_pylist())
    assert landed == [100 + i for i in range(40) if i not in bad]
    rows = table.select(["id", "_schema_id"]).to_pylist()
    ids = {row["id"]: row["_schema_id"] for row in rows}
    assert ids[5] == ids[6] == 8
    assert {ids[i] for i in range(40) if i not in bad | {5, 6}} == {7}


def test_at_once_is_all_or_nothing_and_equals_the_checked_path(monkeypatch) -> None:
    monkeypatch.setattr(avro_arrow, "CHUNK_BODIES", 16)  # several chunks
    schema, header = curated_schema(), wire_prefix(7)
    values = good_values(50)
    table = decode_bodies_at_once(schema, values, prefix=header)
    checked, bad = decode_bodies_checked(schema, values, prefix=header)
    assert bad == [] and table is not None and table.equals(checked)
    for damage in (
        {40: None},  # a tombstone in a later chunk
        {3: wire_prefix(8) + values[3][5:]},  # another header
        {20: values[20][:-1]},  # truncated
    ):
        broken = [damage.get(i, v) for i, v in enumerate(values)]
        assert decode_bodies_at_once(schema, broken, prefix=header) is None, damage
    assert decode_bodies_at_once(schema, [], prefix=header) is None


def test_each_row_carries_the_routing_version_that_routed_it() -> None:
    """The router's header becomes `_routing_version`, so the audit can tell from the lake
    alone which routes a row belongs to; a record without it (not routed) has null."""
    values = good_values(4)
    records = batch(values)
    records.headers = [
        [("sensorstream.route", b"raw"), ("sensorstream.routes_version", b"3")],
        [("sensorstream.routes_version", b"4")],
        None,
        [("other", b"x")],
    ]
    target = target_for(TOPIC, SinkSettings(topics=[TOPIC], topic_prefix="sensors."), "/lake")
    table, dead = decode_readings(target, records, Registry({7: curated_schema()}), NOW).fit()
    assert dead == []
    assert table.column("_routing_version").to_pylist() == [3, 4, None, None]
