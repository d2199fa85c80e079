"""The plan-based Avro writer and reader give exactly fastavro's bytes, records and errors."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from schemas.avro_codec import same_body_layout
from schemas.avro_reader import FlatRecordReader
from schemas.avro_writer import FlatRecordWriter
from schemas.value_schema import curated_schema
from stream_apps.routing.output_schema import derive_output_schema
from tests.unit.stream_apps.test_routing_compiled import TYPICAL

READING = curated_schema()
EMERGENCY = derive_output_schema(READING, "emergency", alerts=True)
FILTERED = derive_output_schema(
    READING, "filtered", dropped=("serial_number",), hashed=("instance_id",)
)


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return buffer.getvalue()


def fastavro_record(schema: dict[str, Any], body: bytes) -> dict[str, Any]:
    return fastavro.schemaless_reader(
        io.BytesIO(body), fastavro.parse_schema(copy.deepcopy(schema)), None
    )


def writer(schema: dict[str, Any]) -> FlatRecordWriter:
    return FlatRecordWriter(schema, fastavro.parse_schema(copy.deepcopy(schema)))


def reader(schema: dict[str, Any]) -> FlatRecordReader:
    return FlatRecordReader(schema, fastavro.parse_schema(copy.deepcopy(schema)))


def outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:
        return type(exc)


RECORDS = {
    "typical": TYPICAL,
    "nulls": {**TYPICAL, "temperature": None, "anomaly_type": None, "model": None},
    "anomaly": {**TYPICAL, "anomaly_flag": 1, "anomaly_type": "spike", "status_code": 1},
    "big numbers": {**TYPICAL, "id": 2**62, "_source_rowid": -(2**40), "status_code": -1},
    "before 1970": {**TYPICAL, "timestamp": datetime(1960, 2, 3, 4, 5, 6, 7, tzinfo=UTC)},
    "unicode": {**TYPICAL, "location": "Fabrik Süd, Halle 3 🏭", "model": ""},
    "long text": {**TYPICAL, "location": "x" * 5000},
}
# Values outside the fast path: fastavro writes them, or refuses them with its own error.
ODD = {
    "int in a double field": {**TYPICAL, "temperature": 21},
    "bool in a long field": {**TYPICAL, "status_code": True},
    "long out of range": {**TYPICAL, "id": 2**70},
    "naive timestamp": {**TYPICAL, "timestamp": datetime(2024, 5, 1, 12)},
    "lone surrogate": {**TYPICAL, "model": "\ud800"},
    "text in a double field": {**TYPICAL, "temperature": "warm"},
    "null in a required field": {**TYPICAL, "sensor_id": None},
    "missing field": {k: v for k, v in TYPICAL.items() if k != "model"},
    "nan": {**TYPICAL, "humidity": float("nan")},
}


@pytest.mark.parametrize("name", [*RECORDS, *ODD])
def test_the_writer_matches_fastavro(name: str) -> None:
    record = {**RECORDS, **ODD}[name]
    assert writer(READING).fast
    assert outcome(lambda: writer(READING).write(record, b"P")) == outcome(
        lambda: b"P" + fastavro_bytes(READING, record)
    )


@pytest.mark.parametrize(
    "rules", [["where"], ["anomaly", "overheat"], [], ["a"] * 100, ["x", 3], None]
)
def test_route_schemas_with_string_arrays_match_fastavro(rules: Any) -> None:
    record = {**TYPICAL, "severity": "critical", "matched_rules": rules}
    assert writer(EMERGENCY).fast
    assert outcome(lambda: writer(EMERGENCY).write(record)) == outcome(
        lambda: fastavro_bytes(EMERGENCY, record)
    )


def test_schemas_outside_the_plan_are_written_by_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "Nested",
        "fields": [
            {"name": "inner", "type": {"type": "record", "name": "In", "fields": []}},
            {"name": "choice", "type": ["null", "long", "string"]},
        ],
    }
    record = {"inner": {}, "choice": "text"}
    assert not writer(schema).fast and not reader(schema).fast
    assert writer(schema).write(record) == fastavro_bytes(schema, record)
    assert reader(schema).read(fastavro_bytes(schema, record), 0) == (record, 6)


@pytest.mark.parametrize("name", list(RECORDS))
@pytest.mark.parametrize("schema", [READING, FILTERED], ids=["reading", "filtered"])
def test_the_reader_matches_fastavro(name: str, schema: dict[str, Any]) -> None:
    record = {k: v for k, v in RECORDS[name].items() if k != "serial_number"}
    body = b"HEAD!" + fastavro_bytes(schema, record)
    got, end = reader(schema).read(body, 5)
    expected = fastavro_record(schema, body[5:])
    assert end == len(body)
    assert got == expected and list(got) == list(expected)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
    assert got["timestamp"].tzinfo is expected["timestamp"].tzinfo


def test_the_reader_reads_string_arrays() -> None:
    record = {**TYPICAL, "severity": "warning", "matched_rules": ["anomaly", "where"]}
    body = fastavro_bytes(EMERGENCY, record)
    assert reader(EMERGENCY).read(body, 0) == (fastavro_record(EMERGENCY, body), len(body))


def test_damaged_bodies_read_or_fail_as_in_fastavro() -> None:
    body = fastavro_bytes(READING, TYPICAL)
    damaged = [b"", body[:40], body[:-1]]
    damaged += [
        body[:i] + bytes([value]) + body[i + 1 :]
        for i in range(len(body))
        for value in (0x08, 0xFF)
    ]
    for data in damaged:
        got = outcome(lambda data=data: reader(READING).read(data, 0)[0])
        expected = outcome(lambda data=data: fastavro_record(READING, data))
        # repr: a damaged double may decode as NaN, which never equals itself
        assert repr(got) == repr(expected), data


def test_same_body_layout() -> None:
    schematized = derive_output_schema(READING, "schematized", required=("sensor_id",))
    assert schematized["name"] != READING["name"]
    assert same_body_layout(READING, schematized)  # sensor_id was never nullable
    assert not same_body_layout(READING, derive_output_schema(READING, "s", required=("model",)))
    assert not same_body_layout(READING, FILTERED)
    assert not same_body_layout(READING, EMERGENCY)
