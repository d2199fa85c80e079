"""`sensorstream audit` on a lake the real producer, router and sink wrote: exit 0 when every
row is once in every table, then each kind of discrepancy planted in the lake (a duplicate, a
gap, a routed row that is not in raw) is named, with exit 1."""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from infra.local_stack.audit_cli import findings, run_audit
from producers.tailer import EdgeTailer
from sensorstream.cli import main
from sinks.app import DeltaSink
from stream_apps.app import RouterApp
from tests.edge_nodes import fleet_node_settings
from tests.integration.sinks.test_sink import sink_settings
from tests.integration.stream_apps.test_router import (
    EXPECTED,
    READINGS,
    router_settings,
    routing_file,
    write_node,
)
from tests.lake_audit import assert_exactly_once, fleet_env, fleet_flags

pytestmark = pytest.mark.integration

NODES = {"edge-a": "eu-west-1", "edge-b": "us-east-1"}


def add_bad_row(db) -> None:
    """A reading whose temperature is text: the producer dead-letters it."""
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO sensor_readings (timestamp, sensor_id, temperature) VALUES (?, ?, ?)",
        ("2026-11-20T08:00:09+00:00", "edge-a-bad", "hot"),
    )
    conn.commit()
    conn.close()


def run_pipeline(tmp_path, connection, unique) -> None:
    for node, region in NODES.items():
        db = tmp_path / f"{node}.db"
        write_node(db, node)
        if node == "edge-a":
            add_bad_row(db)
        produced = EdgeTailer(fleet_node_settings(db, node, region, unique), connection).run()
        assert produced.rows == len(READINGS) + (node == "edge-a")
    routed = RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    assert routed.routed == len(NODES) * len(READINGS)
    regional = [f"regional.{region}" for region in NODES.values()]
    topics = [f"t.{unique}.{route}" for route in (*EXPECTED, *regional, "dlq")]
    settings = sink_settings(unique).model_copy(update={"topics": topics})
    # --once lands everything that was there when it started: one run is the whole table.
    assert DeltaSink(settings, connection).run().rows.get("raw", 0) == routed.routed


def point_at(monkeypatch, connection) -> None:
    """The audit's connection: this test's broker and registry, never the defaults. The
    registry decodes the router's dead letters; on another one (a stack on the default port
    beside a CI stack on moved ports) an id names another schema, and the letters of this
    test's rows were not found."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", connection.kafka_bootstrap_servers)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", connection.schema_registry_url)


def audit(monkeypatch, capsys, connection, lake: str, unique: str) -> tuple[int, dict]:
    point_at(monkeypatch, connection)
    for key, value in connection.storage_options().items():
        if key.startswith("AWS_") and key != "AWS_ALLOW_HTTP":
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(["audit", "--lake", lake, "--checkpoint-topic", f"t.{unique}.ckpt", "--json"])
    captured = capsys.readouterr()
    assert captured.out, (code, captured.err)
    return code, json.loads(captured.out)


def human(monkeypatch, capsys, lake: str, unique: str) -> str:
    capsys.readouterr()
    main(["audit", "--lake", lake, "--checkpoint-topic", f"t.{unique}.ckpt"])
    return capsys.readouterr().out


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_audit_names_each_planted_discrepancy(
    kind, kafka, schema_registry, s3, s3_bucket, connection, tmp_path, unique, monkeypatch, capsys
):
    if kind == "s3":
        lake = f"s3://{s3_bucket}/{unique}/lake"
        connection = connection.model_copy(update={"sensorstream_lake_uri": lake})
    lake = connection.sensorstream_lake_uri
    options = connection.storage_options() if kind == "s3" else None
    run_pipeline(tmp_path, connection, unique)

    code, clean = audit(monkeypatch, capsys, connection, lake, unique)
    assert code == 0, (clean["edge"], clean["edge_tallies"])
    assert clean["exact"] and clean["discrepancies"] == 0
    tallies = {t["node_id"]: t for t in clean["tallies"]}
    assert set(tallies) == set(NODES)
    assert (tallies["edge-a"]["rows_sent"], tallies["edge-a"]["in_raw"]) == (len(READINGS) + 1, 6)
    assert tallies["edge-a"]["dead_lettered"] == 1
    assert (tallies["edge-b"]["rows_sent"], tallies["edge-b"]["in_raw"]) == (len(READINGS), 6)
    stages = {(c["stage"], c["reason"]): c["count"] for c in clean["dead_letters"]}
    assert stages[("producer", "temperature")] == 1
    assert any(stage == "router" for stage, _ in stages)
    assert {"raw", "emergency", "dlq", "regional/eu-west-1"} <= set(clean["tables"])

    # A duplicate: edge-a's rowid 2 landed a second time in raw.
    raw_uri, emergency_uri = f"{lake}/raw", f"{lake}/emergency"
    raw = DeltaTable(raw_uri, storage_options=options).to_pyarrow_table()
    mine = pc.and_(pc.equal(raw["_node_id"], "edge-a"), pc.equal(raw["_source_rowid"], 2))
    write_deltalake(raw_uri, raw.filter(mine), mode="append", storage_options=options)
    planted_at = DeltaTable(raw_uri, storage_options=options).version()
    # A gap: edge-b's rowid 4 gone from raw.
    DeltaTable(raw_uri, storage_options=options).delete("_node_id = 'edge-b' AND _source_rowid = 4")
    # A routed row that is not in raw: an emergency row of edge-a under a rowid never sent.
    emergency = DeltaTable(emergency_uri, storage_options=options).to_pyarrow_table()
    stray = emergency.filter(pc.equal(emergency["_node_id"], "edge-a")).slice(0, 1)
    stray = stray.set_column(
        stray.column_names.index("_source_rowid"), "_source_rowid", pa.array([999], pa.int64())
    )
    write_deltalake(emergency_uri, stray, mode="append", storage_options=options)

    code, found = audit(monkeypatch, capsys, connection, lake, unique)
    assert code == 1
    assert found["duplicate_count"] == {"raw": 1}
    [duplicate] = found["duplicates"]
    assert (duplicate["node_id"], duplicate["rowid"]) == ("edge-a", 2)
    assert len(duplicate["copies"]) == 2
    offset = raw.filter(mine)["_kafka_offset"][0].as_py()
    assert {c["offset"] for c in duplicate["copies"]} == {offset}
    versions = {c["version"] for c in duplicate["copies"]}
    assert planted_at in versions and len(versions) == 2
    # The stray row, and edge-b's rowid 4 (out of range: filtered, emergency, regional) that
    # the gap took from raw but not from the routed tables.
    assert found["not_in_raw_count"] == {"emergency": 2, "filtered": 1, "regional/us-east-1": 1}
    assert [(r["table"], r["node_id"], r["rowid"]) for r in found["not_in_raw"]] == [
        ("emergency", "edge-a", 999),
        ("emergency", "edge-b", 4),
        ("filtered", "edge-b", 4),
        ("regional/us-east-1", "edge-b", 4),
    ]
    problems = {t["node_id"]: t for t in found["tallies"] if t["problems"]}
    assert set(problems) == {"edge-b"}
    assert problems["edge-b"]["missing"] == 1
    assert problems["edge-b"]["missing_ranges"] == [[4, 4]]
    assert found["discrepancies"] == 1 + 4 + 1

    text = human(monkeypatch, capsys, lake, unique)
    assert "DUPLICATES" in text and "edge-a/sensor_readings rowid 2 x2" in text
    assert (
        "ROUTED ROWS NOT IN RAW" in text and "emergency: edge-a/sensor_readings rowid 999" in text
    )
    assert "edge-b/sensor_readings: 1 rows sent but neither" in text
    assert "missing rowids: 4" in text


def test_every_edge_row_is_in_raw_once_or_dead_lettered_and_in_the_tables_its_routes_select(
    kafka, schema_registry, connection, tmp_path, unique, monkeypatch, capsys
):
    lake = connection.sensorstream_lake_uri
    run_pipeline(tmp_path, connection, unique)
    db = tmp_path / "edge-a.db"
    add_bad_row(db)  # written after the producer ran: not yet sent, not a finding
    point_at(monkeypatch, connection)
    edge = ["--sqlite", str(db), "--node-id", "edge-a", "--control-topic", f"t.{unique}.control"]
    edge += ["--topic-prefix", f"t.{unique}.", "--checkpoint-topic", f"t.{unique}.ckpt", "--json"]

    def run() -> tuple[int, dict]:
        capsys.readouterr()
        code = main(["audit", "--lake", lake, *edge])
        captured = capsys.readouterr()
        assert captured.out, (code, captured.err)
        return code, json.loads(captured.out)

    code, clean = run()
    assert code == 0, (clean["edge"], clean["edge_tallies"])
    [tally] = clean["edge_tallies"]
    assert (tally["source_rows"], tally["checked"], tally["not_yet_sent"]) == (8, 7, 1)
    assert (tally["in_raw"], tally["dead_lettered"]) == (6, 1)
    assert tally["dead_letter_reasons"] == {"temperature": 1}
    assert (tally["route_checked"], tally["route_unknown_version"]) == (6, 0)
    assert tally["route_dead_letters"] == {"schematized": 1}  # out_of_range

    # rowid 2 gone from raw; rowid 3 ("hot") gone from emergency; rowid 1 ("normal") planted
    # in emergency, whose rules do not select it.
    DeltaTable(f"{lake}/raw").delete("_node_id = 'edge-a' AND _source_rowid = 2")
    emergency = DeltaTable(f"{lake}/emergency")
    emergency.delete("_node_id = 'edge-a' AND _source_rowid = 3")
    hot = DeltaTable(f"{lake}/raw").to_pyarrow_table()
    normal = hot.filter(
        pc.and_(pc.equal(hot["_node_id"], "edge-a"), pc.equal(hot["_source_rowid"], 1))
    )
    normal = normal.select(
        [c for c in normal.column_names if c in emergency.schema().to_arrow().names]
    )
    write_deltalake(f"{lake}/emergency", normal, mode="append", schema_mode="merge")
    # The router's dead letter of rowid 4 (out of range: the schematized route refuses it) gone.
    DeltaTable(f"{lake}/dlq").delete("stage = 'router'")

    code, found = run()
    assert code == 1
    problems = {(r["rowid"], r["problem"]) for r in found["edge"]}
    assert (2, "missing: neither in raw nor in the dead letters") in problems
    assert (3, "missing from emergency, which routing version 1 selects it for") in problems
    assert (1, "in emergency, which routing version 1 does not select it for") in problems
    assert (
        4,
        "not in the dead letters, which route schematized of routing version 1 sends it to once",
    ) in problems


def test_a_lake_that_is_not_there_is_bad_usage(tmp_path, capsys):
    code = main(["audit", "--lake", str(tmp_path / "nowhere"), "--no-checkpoints"])
    assert code == 2
    assert "no lake at" in capsys.readouterr().err


def test_rows_on_their_way_are_in_flight_not_missing_until_the_pipeline_is_settled(
    kafka, schema_registry, connection, tmp_path, unique
):
    """A running fleet: rows the producer sent that the router, then the sink, have not yet
    passed on are counted in flight, not missing (exit 0); `--settled` (a drained pipeline, as
    in CI) makes them findings; once landed they are neither."""
    run_pipeline(tmp_path, connection, unique)
    env, flags = fleet_env(connection, unique), fleet_flags(unique)
    db = tmp_path / "edge-b.db"
    write_node(db, "edge-b")  # six more readings, sent but not routed
    sent = EdgeTailer(fleet_node_settings(db, "edge-b", NODES["edge-b"], unique), connection).run()
    assert sent.rows == len(READINGS)

    running = run_audit(env, *flags)
    assert running["exit_code"] == 0, findings(running)
    tally = next(t for t in running["tallies"] if t["node_id"] == "edge-b")
    assert (tally["rows_sent"], tally["in_raw"]) == (2 * len(READINGS), len(READINGS))
    assert (tally["in_flight"], tally["missing"]) == (len(READINGS), 0)
    assert running["in_flight"] == len(READINGS) and running["exact"]

    settled = run_audit(env, *flags, "--settled")
    assert settled["exit_code"] == 1 and settled["discrepancies"] == len(READINGS)
    assert "edge-b/sensor_readings: 6 rows sent, still in flight" in findings(settled)

    # Routed, not yet landed: on their way in the routed topics, past the sink's offsets.
    RouterApp(router_settings(routing_file(tmp_path, unique), unique), connection).run()
    edge = run_audit(env, *flags, sqlite=db, node_id="edge-b")
    assert edge["exit_code"] == 0, findings(edge)
    [rows] = edge["edge_tallies"]
    assert (rows["source_rows"], rows["in_raw"], rows["in_flight"]) == (12, 6, 6)

    settings = sink_settings(unique).model_copy(
        update={"topics": json.loads(env["SENSORSTREAM_SINK_TOPICS"])}
    )
    DeltaSink(settings, connection).run()
    [landed] = assert_exactly_once(env, flags, {"edge-b": db})
    assert landed["in_flight"] == 0
