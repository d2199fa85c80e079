"""Nodes of one fleet with tables of different shapes, through producer -> router -> sink on the
real broker, registry and a Delta lake: every row lands once in the same route tables, whose
columns are the union of the shapes (null where a node lacks a column), and every version the
registry accepted passed its BACKWARD check."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from producers.simulator import create_readings_table
from producers.tailer import EdgeTailer
from schemas.registry import SchemaRegistry
from sinks.app import DeltaSink
from stream_apps.app import RouterApp
from stream_apps.versions import known_fields
from tests.edge_nodes import fleet_node_settings
from tests.integration.sinks.test_sink import sink_settings
from tests.integration.stream_apps.test_router import (
    EXPECTED,
    READINGS,
    router_settings,
    routing_file,
)
from tests.kafka_helpers import AvroDecoder, read_topic
from tests.lake_audit import assert_exactly_once, fleet_env, fleet_flags

pytestmark = pytest.mark.integration

# A sensor_readings table with 8 of the curated 26 columns (older firmware).
LITE_DDL = (
    "CREATE TABLE sensor_readings(id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, "
    "sensor_id TEXT NOT NULL, temperature REAL, vibration REAL, status_code INTEGER, "
    "anomaly_flag INTEGER DEFAULT 0, anomaly_type TEXT)"
)
# Another vendor's firmware: another table name, its own key column, columns of its own.
OTHER_DDL = (
    "CREATE TABLE readings(rid INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, sensor_id TEXT NOT "
    "NULL, temperature REAL, vibration REAL, status_code INTEGER, anomaly_flag INTEGER, "
    "anomaly_type TEXT, battery_level REAL, firmware TEXT)"
)
NODES = {  # node -> (region, table, DDL or None for the full curated table)
    "edge-full": ("eu-west-1", "sensor_readings", None),
    "edge-lite": ("eu-west-1", "sensor_readings", LITE_DDL),
    "edge-other": ("us-east-1", "readings", OTHER_DDL),
}


def write_rows(db: Path, node: str, table: str, ddl: str | None, round_: int) -> None:
    """One row per READINGS entry, with the columns this node's table has."""
    conn = sqlite3.connect(db)
    if ddl is None:
        create_readings_table(conn)
    else:
        conn.execute(ddl.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for i, (name, values) in enumerate(READINGS.items()):
        row = {
            "timestamp": f"2026-11-20T0{8 + round_}:00:0{i}+00:00",
            "sensor_id": f"{node}-{name}-{round_}",
            "humidity": 40.0,
            "latitude": 52.123456,
            "longitude": 4.987654,
            "serial_number": f"SN-{node}-{i}",
            "location": "hall 3",
            "battery_level": 3.5 + i,
            "firmware": "v9",
            **values,
        }
        row = {k: v for k, v in row.items() if k in columns}
        conn.execute(
            f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    conn.commit()
    conn.close()


def produce(tmp_path, connection, unique, round_: int) -> None:
    for node, (region, table, ddl) in NODES.items():
        db = tmp_path / f"{node}.db"
        write_rows(db, node, table, ddl, round_)
        result = EdgeTailer(fleet_node_settings(db, node, region, unique), connection).run()
        assert (result.rows, result.dead_letters) == (len(READINGS), 0), node


def sink_every_route(connection, unique: str) -> None:
    """Every routed topic of the default routes, the regional ones and the DLQ, into the lake."""
    routed = [f"t.{unique}.{route}" for route in (*EXPECTED, "dlq")]
    topics = [*routed, f"^t\\.{unique}\\.regional\\..+"]
    DeltaSink(sink_settings(unique).model_copy(update={"topics": topics}), connection).run()


def lake_rows(lake: str, table: str) -> list[dict]:
    return DeltaTable(f"{lake}/{table}").to_pyarrow_table().to_pylist()


def test_nodes_of_different_shapes_land_in_the_same_tables_once(
    kafka, schema_registry, connection, tmp_path, unique
):
    # Two rounds: each node registers (or finds) its version after the others did theirs.
    produce(tmp_path, connection, unique, 0)
    produce(tmp_path, connection, unique, 1)
    result = RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    assert result.routed == 2 * len(NODES) * len(READINGS)
    sink_every_route(connection, unique)

    # The proof: every row of every node once in raw, in each table its routes select and no
    # other, in the dead letters of each route refusing it; nothing doubled or left in flight.
    reports = assert_exactly_once(
        fleet_env(connection, unique),
        fleet_flags(unique),
        {node: tmp_path / f"{node}.db" for node in NODES},
    )
    assert {(t.get("node_id"), t["in_raw"]) for r in reports for t in r["edge_tallies"]} == {
        (node, 2 * len(READINGS)) for node in NODES
    }
    assert {(t["node_id"], t["rows_sent"], t["in_raw"]) for t in reports[0]["tallies"]} == {
        (node, 2 * len(READINGS), 2 * len(READINGS)) for node in NODES
    }

    # What the routes select, by name: the default routes' meaning, which the audit takes
    # from the routing versions themselves.
    lake = connection.sensorstream_lake_uri
    expected_names = {**EXPECTED, "regional": set(READINGS)}
    for route, names in expected_names.items():
        if route == "regional":
            rows = lake_rows(lake, "regional/eu-west-1") + lake_rows(lake, "regional/us-east-1")
        else:
            rows = lake_rows(lake, route)
        assert {row["sensor_id"] for row in rows} == {
            f"{node}-{name}-{round_}" for node in NODES for name in names for round_ in (0, 1)
        }, route

    raw = {row["sensor_id"]: row for row in lake_rows(lake, "raw")}
    # Columns merged: the curated ones, the other vendor's own, its key column.
    some = next(iter(raw.values()))
    assert {"humidity", "latitude", "battery_level", "firmware", "rid", "id"} <= set(some)
    for round_ in (0, 1):
        full = raw[f"edge-full-normal-{round_}"]
        lite = raw[f"edge-lite-normal-{round_}"]
        other = raw[f"edge-other-normal-{round_}"]
        assert (full["humidity"], full["battery_level"], full["rid"]) == (40.0, None, None)
        assert (lite["humidity"], lite["latitude"], lite["battery_level"]) == (None, None, None)
        assert lite["id"] is not None and lite["_source_table"] == "sensor_readings"
        assert (other["humidity"], other["id"]) == (None, None)
        assert (other["battery_level"], other["firmware"]) == (3.5, "v9")
        assert other["rid"] == other["_source_rowid"] and other["_source_table"] == "readings"
        for row in (full, lite, other):
            assert row["temperature"] == 21.0 and row["status_code"] == 0
    assert raw["edge-other-hot-1"]["_region"] == "us-east-1"

    # Route-specific columns held for every shape: severity on emergency, privacy on filtered.
    emergency = {row["sensor_id"]: row for row in lake_rows(lake, "emergency")}
    assert emergency["edge-other-hot-0"]["severity"] == "critical"
    assert emergency["edge-lite-anomaly-1"]["matched_rules"] == ["anomaly"]
    filtered = {row["sensor_id"]: row for row in lake_rows(lake, "filtered")}
    assert filtered["edge-full-normal-0"]["latitude"] == 52.12
    assert filtered["edge-other-normal-0"]["latitude"] is None

    # One record name for the whole subject: the registry checked each version against the
    # latest, so the fleet's shapes share it.
    registry = SchemaRegistry(connection.schema_registry_config())
    versions = registry.value_schemas(f"t.{unique}.in")
    assert len(versions) >= 3
    assert {schema["name"] for schema in versions} == {"SensorReading"}
    dead = DeltaTable(f"{lake}/dlq").to_pyarrow_table().to_pylist()
    # Only the readings the schematized route's validation refuses (out of range), per node
    # and round: nothing went to the dead letters because of its shape.
    assert sorted(Counter(row["stage"] for row in dead).items()) == [("router", 2 * len(NODES))]


def test_routing_rules_may_name_a_column_the_latest_version_lacks(connection, unique):
    """The nodes take turns registering the latest version: a column only some nodes have is
    still a field the routing file may name."""
    registry = SchemaRegistry(connection.schema_registry_config())
    topic = f"t.{unique}.in"
    with_battery = {
        "type": "record",
        "name": "SensorReading",
        "namespace": "sensorstream",
        "fields": [
            {"name": "sensor_id", "type": ["null", "string"], "default": None},
            {"name": "battery_level", "type": ["null", "double"], "default": None},
        ],
    }
    without = {**with_battery, "fields": with_battery["fields"][:1]}
    registry.register_value_schema(topic, with_battery)
    registry.register_value_schema(topic, without)
    assert "battery_level" not in {f["name"] for f in registry.latest_value_schema(topic)["fields"]}
    assert "battery_level" in known_fields(registry, topic)


TS_DDL = (
    "CREATE TABLE events(eid INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL, sensor_id TEXT NOT "
    "NULL, temperature REAL, vibration REAL, status_code INTEGER, anomaly_flag INTEGER)"
)


def test_a_node_whose_event_time_has_another_name_lands_partitioned_by_it(
    kafka, schema_registry, connection, tmp_path, unique
):
    """Event time in `recorded_at`: the raw table partitions the node's rows by it (its
    `timestamp` is null); the default schematized route requires `timestamp`, so it sends the
    node's records to the dead letters, saying so, rather than dropping them."""
    nodes = {
        "edge-full": ("eu-west-1", "sensor_readings", None),
        "edge-ts": ("eu-west-1", "events", TS_DDL),
    }
    for node, (region, table, ddl) in nodes.items():
        db = tmp_path / f"{node}.db"
        conn = sqlite3.connect(db)
        if ddl is None:
            create_readings_table(conn)
        else:
            conn.execute(ddl)
        time_column = "timestamp" if ddl is None else "recorded_at"
        conn.execute(
            f"INSERT INTO {table} ({time_column}, sensor_id, temperature, vibration, status_code, "
            "anomaly_flag) VALUES ('2026-11-19T23:59:00Z', ?, 21.0, 1.0, 0, 0)",
            (f"{node}-normal",),
        )
        conn.commit()
        conn.close()
        result = EdgeTailer(
            fleet_node_settings(db, node, region, unique, table=table), connection
        ).run()
        assert (result.rows, result.dead_letters) == (1, 0), node
    RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    sink_every_route(connection, unique)

    assert_exactly_once(
        fleet_env(connection, unique),
        fleet_flags(unique),
        {node: tmp_path / f"{node}.db" for node in nodes},
    )
    lake = connection.sensorstream_lake_uri
    raw = {row["sensor_id"]: row for row in lake_rows(lake, "raw")}
    assert set(raw) == {"edge-full-normal", "edge-ts-normal"}
    ts_row = raw["edge-ts-normal"]
    assert ts_row["timestamp"] is None and ts_row["recorded_at"] is not None
    assert str(ts_row["event_date"]) == "2026-11-19"
    assert [row["sensor_id"] for row in lake_rows(lake, "schematized")] == ["edge-full-normal"]
    dead = lake_rows(lake, "dlq")
    assert len(dead) == 1 and "required.timestamp: missing" in dead[0]["error"], dead


def test_nodes_of_different_shapes_starting_together_all_register_and_stream(
    kafka, schema_registry, connection, tmp_path, unique
):
    """A fleet deployed at once: the nodes race for the subject's first versions. Whichever
    wins, each of the others evolves from what it finds and streams every row once."""
    tailers = []
    for round_, (node, (region, table, ddl)) in enumerate(
        [*NODES.items(), *((f"{n}-2", spec) for n, spec in NODES.items())]
    ):
        db = tmp_path / f"{node}.db"
        write_rows(db, node, table, ddl, round_ % 2)
        tailers.append(EdgeTailer(fleet_node_settings(db, node, region, unique), connection))
    results: dict[str, object] = {}

    def run(tailer: EdgeTailer) -> None:
        try:
            results[tailer.settings.node_id] = tailer.run()
        except BaseException as exc:  # reported below
            results[tailer.settings.node_id] = exc

    threads = [threading.Thread(target=run, args=(t,)) for t in tailers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for node, result in results.items():
        assert not isinstance(result, BaseException), (node, result)
        assert (result.rows, result.dead_letters) == (len(READINGS), 0), node
    assert len(results) == len(tailers)

    decoder = AvroDecoder(schema_registry.url)
    seen = Counter(
        (record["_node_id"], record["_source_rowid"])
        for record in (
            decoder.decode(m.value())[1]
            for m in read_topic(kafka.bootstrap_servers, f"t.{unique}.in")
        )
    )
    assert set(seen.values()) == {1}
    assert len(seen) == len(tailers) * len(READINGS)
