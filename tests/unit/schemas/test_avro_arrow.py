"""Bulk Avro → Arrow decoding against fastavro: values, types, corruption, evolution, fallback.

Every body is encoded with fastavro, and every expectation is what fastavro reads back, so a
difference is polars (or the normalisation) disagreeing with the reference decoder.

Throughput (printed, never asserted): `uv run python -m tests.unit.schemas.test_avro_arrow`.
"""

from __future__ import annotations

import copy
import io
import math
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from schemas import avro_arrow
from schemas.avro_arrow import (
    FASTAVRO_RUN,
    FRAME_FIELD,
    MalformedBodies,
    arrow_schema_for,
    concat_evolving,
    container_block,
    decode_bodies,
    decode_bodies_checked,
    polars_can_read,
    zigzag_varint,
)
from schemas.value_schema import curated_schema, parsed_schema
from stream_apps.routing.output_schema import derive_output_schema

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode(schema: dict[str, Any], records: Sequence[dict[str, Any]]) -> list[bytes]:
    parsed = parsed_schema(schema)
    bodies = []
    for record in records:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)
        bodies.append(out.getvalue())
    return bodies


def fastavro_rows(schema: dict[str, Any], bodies: Sequence[bytes]) -> list[dict[str, Any]]:
    parsed = parsed_schema(schema)
    return [fastavro.schemaless_reader(io.BytesIO(b), parsed, None) for b in bodies]


def comparable(value: Any) -> Any:
    """NaN equal to NaN, so rows compare with ==."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def record(fields: list[dict[str, Any]], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": fields}


def reading(i: int, **changes: Any) -> dict[str, Any]:
    """A full curated reading; `changes` override fields."""
    row = {
        "id": i,
        "timestamp": EPOCH + timedelta(microseconds=1_700_000_000_000_000 + i * 1_000),
        "sensor_id": f"sensor-{i % 500:04d}",
        "temperature": 20.0 + (i % 100) / 7,
        "humidity": 41.5,
        "pressure": 1013.25,
        "vibration": None if i % 3 else 0.02,
        "voltage": 3.3,
        "status_code": 0,
        "anomaly_flag": 0,
        "anomaly_type": None,
        "firmware_version": "1.4.2",
        "model": "TX-100",
        "manufacturer": "Acme",
        "location": "Building A, floor 3",
        "latitude": 52.37,
        "longitude": 4.89,
        "original_timezone": "Europe/Amsterdam",
        "serial_number": f"SN-{i:08d}",
        "manufacture_date": "2020-01-01",
        "deployment_type": "indoor",
        "installation_date": "2021-02-03",
        "height_meters": 2.5,
        "orientation_degrees": 90.0,
        "instance_id": "inst-1",
        "sensor_type": "climate",
        "_node_id": "node-1",
        "_region": "eu-west",
        "_source_table": "sensor_readings",
        "_source_rowid": i,
    }
    row.update(changes)
    return row


def awkward_readings() -> list[dict[str, Any]]:
    """Nulls, unicode, extremes, NaN/inf, empty strings: what a real edge DB may hold."""
    nullable = [f["name"] for f in curated_schema()["fields"] if isinstance(f["type"], list)]
    return [
        reading(0),
        reading(1, **dict.fromkeys(nullable)),
        reading(2, sensor_id="", location="", anomaly_type="", _node_id="", _region=""),
        reading(3, sensor_id="温度センサー ✓ 🌡️", location="Zürich — Straße 5", model="ü" * 300),
        reading(4, id=-(2**63), _source_rowid=2**63 - 1, status_code=-1, anomaly_flag=2**62),
        reading(5, temperature=math.nan, humidity=math.inf, pressure=-math.inf, voltage=-0.0),
        reading(6, latitude=1e308, longitude=-5e-324, height_meters=2.2250738585072014e-308),
        reading(7, timestamp=EPOCH - timedelta(days=365, microseconds=1)),
        reading(8, timestamp=datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
        reading(9, sensor_id="x" * 100_000, serial_number="\x00\n\t'\""),
    ]


# --- the container block ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [0, 1, -1, 63, -64, 64, 127, 128, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]
)
def test_zigzag_varint_matches_avro_long_encoding(value: int) -> None:
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, parsed_schema({"type": "long"}), value)
    assert zigzag_varint(value) == expected.getvalue()


def test_zigzag_varint_rejects_values_beyond_int64() -> None:
    with pytest.raises(OverflowError):
        zigzag_varint(2**63)


def test_container_block_is_a_valid_object_container_file() -> None:
    schema = curated_schema()
    records = [reading(i) for i in range(100_000)]  # count and byte size need 3-4 byte varints
    blob = container_block(schema, encode(schema, records))
    assert blob[:4] == b"Obj\x01"
    got = list(fastavro.reader(io.BytesIO(blob)))
    assert len(got) == len(records)
    assert got[0] == records[0] and got[-1] == records[-1]


def test_container_block_takes_memoryviews_and_a_fixed_sync_marker() -> None:
    schema = record([{"name": "a", "type": "long"}])
    framed = [b"\x00\x00\x00\x00\x07" + b for b in encode(schema, [{"a": 1}, {"a": -2}])]
    bodies = [memoryview(m)[5:] for m in framed]
    sync = bytes(range(16))
    blob = container_block(schema, bodies, sync=sync)
    assert blob.endswith(sync) and blob == container_block(schema, bodies, sync=sync)
    assert list(fastavro.reader(io.BytesIO(blob))) == [{"a": 1}, {"a": -2}]
    with pytest.raises(ValueError, match="16 bytes"):
        container_block(schema, bodies, sync=b"short")


# --- values and types --------------------------------------------------------------------------


CURATED_ARROW = pa.schema(
    [
        ("id", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("sensor_id", pa.string()),
        *[(n, pa.float64()) for n in ("temperature", "humidity", "pressure", "vibration")],
        ("voltage", pa.float64()),
        ("status_code", pa.int64()),
        ("anomaly_flag", pa.int64()),
        *[
            (n, pa.string())
            for n in ("anomaly_type", "firmware_version", "model", "manufacturer", "location")
        ],
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        *[
            (n, pa.string())
            for n in (
                "original_timezone",
                "serial_number",
                "manufacture_date",
                "deployment_type",
                "installation_date",
            )
        ],
        ("height_meters", pa.float64()),
        ("orientation_degrees", pa.float64()),
        ("instance_id", pa.string()),
        ("sensor_type", pa.string()),
        ("_node_id", pa.string()),
        ("_region", pa.string()),
        ("_source_table", pa.string()),
        ("_source_rowid", pa.int64()),
    ]
)


def test_curated_schema_maps_to_the_specified_arrow_types() -> None:
    assert arrow_schema_for(curated_schema()) == CURATED_ARROW
    assert polars_can_read(curated_schema())


def test_curated_round_trip_matches_fastavro() -> None:
    schema = curated_schema()
    bodies = encode(schema, awkward_readings())
    table = decode_bodies(schema, bodies)
    assert table.schema == CURATED_ARROW
    assert comparable(table.to_pylist()) == comparable(fastavro_rows(schema, bodies))
    assert table.column("temperature")[5].as_py() != table.column("temperature")[5].as_py()
    assert math.copysign(1, table.column("voltage")[5].as_py()) == -1


def test_emergency_route_output_shape() -> None:
    schema = derive_output_schema(
        curated_schema(), "emergency", required=["temperature"], alerts=True
    )
    records = [
        {**reading(0), "severity": "critical", "matched_rules": ["anomaly", "overheat"]},
        {**reading(1), "severity": "warning", "matched_rules": ["where"]},
        {**reading(2), "severity": "", "matched_rules": []},
        {**reading(3), "severity": "info ✓", "matched_rules": ["", "ü" * 50]},
    ]
    bodies = encode(schema, records)
    table = decode_bodies(schema, bodies)
    assert table.column_names == [f["name"] for f in schema["fields"]]
    assert table.schema.field("severity").type == pa.string()
    assert table.schema.field("matched_rules").type == pa.list_(pa.string())
    assert table.schema.field("temperature").type == pa.float64()
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.to_pylist() == fastavro_rows(schema, bodies)


MIXED_FIELDS: list[dict[str, Any]] = [
    {"name": "i", "type": "int"},
    {"name": "f", "type": "float"},
    {"name": "flag", "type": "boolean"},
    {"name": "flag_or_null", "type": ["null", "boolean"]},
    {"name": "raw", "type": "bytes"},
    {"name": "raw_or_null", "type": ["bytes", "null"]},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "day_or_null", "type": ["null", {"type": "int", "logicalType": "date"}]},
    {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "ms_or_null", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
    {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "tod", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "tod_ms", "type": {"type": "int", "logicalType": "time-millis"}},
    {
        "name": "money",
        "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
    },
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "java", "type": {"type": "string", "avro.java.string": "String"}},
    {"name": "tags", "type": ["null", {"type": "array", "items": "long"}]},
    {
        "name": "place",
        "type": [
            "null",
            {
                "type": "record",
                "name": "Place",
                "fields": [
                    {"name": "name", "type": "string"},
                    {"name": "alt", "type": ["null", "double"]},
                ],
            },
        ],
    },
    {
        "name": "points",
        "type": {
            "type": "array",
            "items": {
                "type": "record",
                "name": "Point",
                "fields": [{"name": "x", "type": "long"}, {"name": "label", "type": "string"}],
            },
        },
    },
]
MIXED_ARROW = pa.schema(
    [
        ("i", pa.int32()),
        ("f", pa.float32()),
        ("flag", pa.bool_()),
        ("flag_or_null", pa.bool_()),
        ("raw", pa.binary()),
        ("raw_or_null", pa.binary()),
        ("fx", pa.binary()),
        ("colour", pa.string()),
        ("day", pa.date32()),
        ("day_or_null", pa.date32()),
        ("ms", pa.timestamp("us", tz="UTC")),
        ("ms_or_null", pa.timestamp("us", tz="UTC")),
        ("local", pa.timestamp("us")),
        ("tod", pa.time64("us")),
        ("tod_ms", pa.time64("us")),
        ("money", pa.decimal128(12, 2)),
        ("uid", pa.string()),
        ("java", pa.string()),
        ("tags", pa.list_(pa.int64())),
        ("place", pa.struct([("name", pa.string()), ("alt", pa.float64())])),
        ("points", pa.list_(pa.struct([("x", pa.int64()), ("label", pa.string())]))),
    ]
)


def mixed_records() -> list[dict[str, Any]]:
    full = {
        "i": -(2**31),
        "f": 1.5,
        "flag": True,
        "flag_or_null": False,
        "raw": b"\x00\xff",
        "raw_or_null": b"",
        "fx": b"abcd",
        "colour": "GREEN",
        "day": date(2024, 2, 29),
        "day_or_null": date(1969, 12, 31),
        "ms": datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
        "ms_or_null": datetime(1960, 1, 1, tzinfo=UTC),
        "local": datetime(2024, 1, 2, 3, 4, 5, 6),
        "tod": dt_time(23, 59, 59, 999_999),
        "tod_ms": dt_time(1, 2, 3, 4_000),
        "money": Decimal("-1234567890.12"),
        "uid": uuid.UUID("6f1c0a3e-1234-4000-8000-00000000abcd"),
        "java": "x",
        "tags": [1, -2, 2**62],
        "place": {"name": "roof", "alt": None},
        "points": [{"x": 1, "label": ""}, {"x": -1, "label": "é"}],
    }
    empty = {
        **full,
        "flag_or_null": None,
        "raw_or_null": None,
        "colour": "RED",
        "day_or_null": None,
        "ms_or_null": None,
        "tags": None,
        "place": None,
        "points": [],
    }
    return [full, empty, {**full, "tags": []}]


def expected_mixed(schema: dict[str, Any], bodies: list[bytes]) -> list[dict[str, Any]]:
    rows = fastavro_rows(schema, bodies)
    return [{**row, "uid": str(row["uid"])} for row in rows]  # Arrow has no UUID type


def test_every_type_polars_reads_maps_as_specified_and_matches_fastavro() -> None:
    schema = record(MIXED_FIELDS)
    assert polars_can_read(schema)
    assert arrow_schema_for(schema) == MIXED_ARROW
    bodies = encode(schema, mixed_records())
    table = decode_bodies(schema, bodies)
    assert table.schema == MIXED_ARROW
    assert table.to_pylist() == expected_mixed(schema, bodies)


def test_every_field_is_nullable_so_a_later_version_can_relax_it() -> None:
    assert all(field.nullable for field in arrow_schema_for(record(MIXED_FIELDS)))


def test_a_field_named_like_the_frame_field_is_decoded() -> None:
    schema = record(
        [{"name": FRAME_FIELD, "type": "double"}, {"name": f"{FRAME_FIELD}_", "type": "long"}]
    )
    records = [{FRAME_FIELD: 1.5, f"{FRAME_FIELD}_": 7}, {FRAME_FIELD: -0.0, f"{FRAME_FIELD}_": 0}]
    assert decode_bodies(schema, encode(schema, records)).to_pylist() == records


def test_no_bodies_give_an_empty_table_of_the_schema() -> None:
    table, bad = decode_bodies_checked(curated_schema(), [])
    assert (table.num_rows, table.schema, bad) == (0, CURATED_ARROW, [])


def test_memoryview_bodies_with_the_wire_header_sliced_off() -> None:
    schema = curated_schema()
    messages = [b"\x00\x00\x00\x00\x2a" + b for b in encode(schema, awkward_readings())]
    bodies = [memoryview(m)[5:] for m in messages]
    table = decode_bodies(schema, bodies)
    assert comparable(table.to_pylist()) == comparable(
        fastavro_rows(schema, [bytes(b) for b in bodies])
    )


def test_a_block_of_100k_bodies() -> None:
    schema = curated_schema()
    records = [reading(i) for i in range(100_000)]
    table = decode_bodies(schema, encode(schema, records))
    assert table.num_rows == 100_000
    assert table.column("id").to_pylist() == list(range(100_000))
    assert table.column("serial_number")[99_999].as_py() == "SN-00099999"
    assert table.slice(54_321, 1).to_pylist() == [records[54_321]]


# --- corruption ----------------------------------------------------------------------------


def corrupted(bodies: list[bytes], damage: dict[int, bytes]) -> list[bytes]:
    return [damage.get(i, body) for i, body in enumerate(bodies)]


def assert_only_good_rows(
    schema: dict[str, Any], bodies: list[bytes], good: list[bytes], bad_indexes: list[int]
) -> None:
    table, bad = decode_bodies_checked(schema, bodies)
    assert [i for i, _ in bad] == bad_indexes
    assert all(reason for _, reason in bad)
    assert table.schema == arrow_schema_for(schema)
    got = table.to_pylist(maps_as_pydicts="strict")
    assert comparable(got) == comparable(fastavro_rows(schema, good))


def test_truncated_garbage_trailing_and_empty_bodies_are_reported_by_index() -> None:
    schema = curated_schema()
    bodies = encode(schema, awkward_readings())
    damage = {
        1: bodies[1][:-1],  # truncated
        3: b"\xff" * 40,  # garbage
        4: bodies[4] + b"\x00",  # one trailing byte
        6: b"",  # empty
        9: bodies[9] + b"\x02\x04",  # trailing bytes on the last body: polars ignores those
    }
    bad_bodies = corrupted(bodies, damage)
    good = [b for i, b in enumerate(bodies) if i not in damage]
    assert_only_good_rows(schema, bad_bodies, good, sorted(damage))
    reasons = dict(decode_bodies_checked(schema, bad_bodies)[1])
    assert "left after the end of the record" in reasons[4]
    assert "left after the end of the record" in reasons[9]


def test_a_body_that_kept_its_confluent_header_is_bad_not_garbage_data() -> None:
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(5)])
    damage = {2: b"\x00\x00\x00\x00\x07" + bodies[2]}
    good = [b for i, b in enumerate(bodies) if i != 2]
    assert_only_good_rows(schema, corrupted(bodies, damage), good, [2])


# --- whole Confluent values: the wire header as a checked prefix ----------------------------

HEADER = b"\x00\x00\x00\x00\x07"  # magic byte, schema id 7


def test_whole_values_with_their_wire_header_decode_like_bare_bodies() -> None:
    schema = curated_schema()
    bodies = encode(schema, awkward_readings())
    values = [HEADER + b for b in bodies]
    table, bad = decode_bodies_checked(schema, values, prefix=HEADER)
    assert bad == []
    expected = comparable(fastavro_rows(schema, bodies))
    assert table.schema == arrow_schema_for(schema)
    assert comparable(table.to_pylist()) == expected
    # memoryviews too, and on the fastavro path (a schema polars cannot read)
    views = decode_bodies(schema, [memoryview(v) for v in values], prefix=HEADER)
    assert comparable(views.to_pylist()) == expected
    maps = record([{"name": "m", "type": {"type": "map", "values": "long"}}])
    rows = [{"m": {"a": i}} for i in range(3)]
    assert (
        decode_bodies(maps, [HEADER + b for b in encode(maps, rows)], prefix=HEADER).to_pylist(
            maps_as_pydicts="strict"
        )
        == rows
    )


def test_a_value_with_another_header_or_none_is_bad_and_the_rest_decode() -> None:
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(200)])
    values = [HEADER + b for b in bodies]
    values[3] = b"\x00\x00\x00\x00\x08" + bodies[3]  # another schema id
    values[150] = bodies[150]  # no header at all
    values[199] = HEADER + bodies[199][:-1]  # truncated, last
    table, bad = decode_bodies_checked(schema, values, prefix=HEADER)
    assert [i for i, _ in bad] == [3, 150, 199]
    assert "expected prefix" in dict(bad)[3]
    good = [b for i, b in enumerate(bodies) if i not in (3, 150, 199)]
    assert table.equals(decode_bodies(schema, good))


def test_large_batches_decode_in_chunks_with_indexes_across_them(monkeypatch) -> None:
    monkeypatch.setattr(avro_arrow, "CHUNK_BODIES", 100)
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(350)])
    values = [HEADER + b for b in bodies]
    for i in (5, 100, 299):
        values[i] = values[i][:-1]
    table, bad = decode_bodies_checked(schema, values, prefix=HEADER)
    assert [i for i, _ in bad] == [5, 100, 299]
    good = [b for i, b in enumerate(bodies) if i not in (5, 100, 299)]
    assert table.to_pylist() == decode_bodies(schema, good).to_pylist()
    assert table.num_rows == 347


def test_the_prefix_field_never_clashes_with_a_field_of_the_schema() -> None:
    schema = record([{"name": "__sensorstream_prefix", "type": "long"}])
    values = [HEADER + b for b in encode(schema, [{"__sensorstream_prefix": i} for i in range(4)])]
    table = decode_bodies(schema, values, prefix=HEADER)
    assert table.column("__sensorstream_prefix").to_pylist() == [0, 1, 2, 3]


def test_bad_utf8_is_reported() -> None:
    schema = record([{"name": "a", "type": "long"}, {"name": "s", "type": ["null", "string"]}])
    bodies = encode(schema, [{"a": i, "s": f"s{i}"} for i in range(6)])
    damage = {1: b"\x02\x02\x04\xff\xfe"}  # a=1, s=<2 bytes that are not UTF-8>
    good = [b for i, b in enumerate(bodies) if i not in damage]
    assert_only_good_rows(schema, corrupted(bodies, damage), good, [1])


def test_a_union_branch_index_out_of_range_reads_as_the_value_branch() -> None:
    # A known limit, pinned so that a change in polars is noticed: polars takes any index
    # but null's as the value branch, and the body is correctly framed, so it decodes, where
    # fastavro would refuse it. (A bit flip from branch 1 to 2 thus keeps the right value.)
    schema = record([{"name": "a", "type": "long"}, {"name": "s", "type": ["null", "string"]}])
    bodies = encode(schema, [{"a": i, "s": f"s{i}"} for i in range(6)])
    bodies[4] = b"\x08\x06\x02A"  # a=4, union branch 3 of 2, "A"
    table, bad = decode_bodies_checked(schema, bodies)
    assert bad == []
    assert table.column("s").to_pylist() == ["s0", "s1", "s2", "s3", "A", "s5"]


def test_a_shifted_body_that_polars_would_read_as_the_right_number_of_rows_is_caught() -> None:
    # Doubles accept any 8 bytes: without the frame check one body 8 bytes too long reads as
    # the right number of rows of wrong values, with the last body's bytes left over.
    schema = record([{"name": "x", "type": "double"}])
    bodies = encode(schema, [{"x": float(i)} for i in range(4)])
    damage = {1: bodies[1] + bodies[2]}
    bad_bodies = corrupted(bodies, damage)
    good = [b for i, b in enumerate(bodies) if i != 1]
    assert_only_good_rows(schema, bad_bodies, good, [1])


def test_few_bad_bodies_in_a_large_batch_are_found_and_the_rest_kept_in_order() -> None:
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(20_000)])
    damage = {0: b"\x01", 7_777: bodies[7_777][:10], 19_999: bodies[19_999] + b"\x00"}
    table, bad = decode_bodies_checked(schema, corrupted(bodies, damage))
    assert [i for i, _ in bad] == sorted(damage)
    assert table.column("id").to_pylist() == [i for i in range(20_000) if i not in damage]


def test_every_body_bad() -> None:
    schema = curated_schema()
    bodies = [b"\xff" * 3] * (FASTAVRO_RUN * 3 + 5)
    table, bad = decode_bodies_checked(schema, bodies)
    assert table.num_rows == 0 and table.schema == CURATED_ARROW
    assert [i for i, _ in bad] == list(range(len(bodies)))


def test_decode_bodies_raises_listing_every_bad_body() -> None:
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(4)])
    with pytest.raises(MalformedBodies) as raised:
        decode_bodies(schema, corrupted(bodies, {0: b"", 3: b"\x00"}))
    assert [i for i, _ in raised.value.bad] == [0, 3]


# --- schema evolution ----------------------------------------------------------------------


def test_concat_evolving_adds_new_nullable_columns_at_the_end() -> None:
    v1 = curated_schema()
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "co2_ppm", "type": ["null", "double"], "default": None})
    old = decode_bodies(v1, encode(v1, [reading(0), reading(1)]))
    new = decode_bodies(v2, encode(v2, [{**reading(2), "co2_ppm": 412.5}]))
    both = concat_evolving([old, new])
    assert both.column_names == [*CURATED_ARROW.names, "co2_ppm"]
    assert both.schema.field("co2_ppm").type == pa.float64()
    assert both.column("co2_ppm").to_pylist() == [None, None, 412.5]
    assert both.column("id").to_pylist() == [0, 1, 2]
    assert concat_evolving([new, old]).column_names == [*CURATED_ARROW.names, "co2_ppm"]


def test_concat_evolving_promotes_int_to_long_and_keeps_a_single_table() -> None:
    v1 = record([{"name": "n", "type": "int"}])
    v2 = record([{"name": "n", "type": "long"}, {"name": "s", "type": ["null", "string"]}])
    old = decode_bodies(v1, encode(v1, [{"n": 1}]))
    new = decode_bodies(v2, encode(v2, [{"n": 2**40, "s": "x"}]))
    both = concat_evolving([old, new])
    assert both.schema == pa.schema([("n", pa.int64()), ("s", pa.string())])
    assert both.to_pylist() == [{"n": 1, "s": None}, {"n": 2**40, "s": "x"}]
    assert concat_evolving([old]) is old
    with pytest.raises(ValueError):
        concat_evolving([])


# --- what polars cannot read: the fastavro fallback -------------------------------------------


POINT = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "long"}]}
UNSUPPORTED: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], pa.Schema]] = {
    "map": (
        [{"name": "m", "type": {"type": "map", "values": ["null", "long"]}}],
        [{"m": {"a": 1, "b": None}}, {"m": {}}],
        pa.schema([("m", pa.map_(pa.string(), pa.int64()))]),
    ),
    "nullable_enum": (
        [{"name": "e", "type": ["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}]}],
        [{"e": "B"}, {"e": None}],
        pa.schema([("e", pa.string())]),
    ),
    "named_type_reference": (
        [{"name": "a", "type": POINT}, {"name": "b", "type": ["null", "test.Point"]}],
        [{"a": {"x": 1}, "b": {"x": 2}}, {"a": {"x": 3}, "b": None}],
        pa.schema([("a", pa.struct([("x", pa.int64())])), ("b", pa.struct([("x", pa.int64())]))]),
    ),
    "wide_decimal": (
        [{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 50}}],
        [{"d": Decimal(10**45)}, {"d": Decimal(-1)}],
        pa.schema([("d", pa.decimal256(50, 0))]),
    ),
    "null_field": (
        [{"name": "n", "type": "null"}, {"name": "k", "type": "long"}],
        [{"n": None, "k": 1}],
        pa.schema([("n", pa.null()), ("k", pa.int64())]),
    ),
    "single_branch_union": (
        [{"name": "k", "type": ["long"]}],
        [{"k": 5}],
        pa.schema([("k", pa.int64())]),
    ),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_schemas_polars_cannot_read_decode_with_fastavro(case: str) -> None:
    fields, records, arrow = UNSUPPORTED[case]
    schema = record(fields)
    assert not polars_can_read(schema)
    assert arrow_schema_for(schema) == arrow
    bodies = encode(schema, records)
    table = decode_bodies(schema, bodies)
    assert table.schema == arrow
    assert table.to_pylist(maps_as_pydicts="strict") == fastavro_rows(schema, bodies)


def test_unions_of_several_types_become_spark_member_structs() -> None:
    schema = record(
        [
            {"name": "u", "type": ["null", "long", "string", POINT]},
            {"name": "tags", "type": {"type": "array", "items": ["string", "double"]}},
            {"name": "uid", "type": ["null", {"type": "string", "logicalType": "uuid"}]},
        ]
    )
    member_type = pa.struct(
        [
            ("member0", pa.int64()),
            ("member1", pa.string()),
            ("member2", pa.struct([("x", pa.int64())])),
        ]
    )
    arrow = pa.schema(
        [
            ("u", member_type),
            ("tags", pa.list_(pa.struct([("member0", pa.string()), ("member1", pa.float64())]))),
            ("uid", pa.string()),
        ]
    )
    assert not polars_can_read(schema)
    assert arrow_schema_for(schema) == arrow
    the_uuid = uuid.UUID(int=7)
    records = [
        {"u": None, "tags": [], "uid": None},
        {"u": 5, "tags": ["a", 1.5], "uid": the_uuid},
        {"u": "five", "tags": [2.0], "uid": None},
        {"u": {"x": 6}, "tags": ["b"], "uid": None},
    ]
    table = decode_bodies(schema, encode(schema, records))
    nothing = {"member0": None, "member1": None, "member2": None}
    assert table.column("u").to_pylist() == [
        None,
        {**nothing, "member0": 5},
        {**nothing, "member1": "five"},
        {**nothing, "member2": {"x": 6}},
    ]
    assert table.column("tags").to_pylist()[1] == [
        {"member0": "a", "member1": None},
        {"member0": None, "member1": 1.5},
    ]
    assert table.column("uid").to_pylist() == [None, str(the_uuid), None, None]


def test_corrupt_bodies_of_an_unsupported_schema_are_reported_too() -> None:
    fields, records, _ = UNSUPPORTED["map"]
    schema = record(fields)
    bodies = encode(schema, records * 3)
    damage = {2: bodies[2] + b"\x00", 5: b"\x07"}
    good = [b for i, b in enumerate(bodies) if i not in damage]
    assert_only_good_rows(schema, corrupted(bodies, damage), good, [2, 5])


def test_recursive_records_have_no_arrow_type() -> None:
    schema = record(
        [
            {
                "name": "head",
                "type": {
                    "type": "record",
                    "name": "Node",
                    "fields": [{"name": "next", "type": ["null", "Node"]}],
                },
            }
        ]
    )
    with pytest.raises(ValueError, match="recursive"):
        arrow_schema_for(schema)


def test_a_schema_that_is_not_a_record_is_refused() -> None:
    with pytest.raises(ValueError, match="record"):
        arrow_schema_for({"type": "array", "items": "long"})


# --- throughput (printed, not asserted) -------------------------------------------------------


def measure(rows: int = 200_000) -> dict[str, float]:
    """Rows/s of decode_bodies and of fastavro record by record + from_pylist, curated readings."""
    schema = curated_schema()
    bodies = encode(schema, [reading(i) for i in range(rows)])
    parsed = parsed_schema(schema)
    target = arrow_schema_for(schema)

    def per_record() -> pa.Table:
        rows = [fastavro.schemaless_reader(io.BytesIO(b), parsed, None) for b in bodies]
        return pa.Table.from_pylist(rows, schema=target)

    runs = {"decode_bodies (polars)": lambda: decode_bodies(schema, bodies)}
    runs["fastavro per record + from_pylist"] = per_record
    rates = {}
    for name, run in runs.items():
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        rates[name] = rows / best
    return rates


if __name__ == "__main__":
    for name, rate in measure().items():
        print(f"{name}: {rate:,.0f} rows/s")
