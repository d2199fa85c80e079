"""The Databricks job's transformations on open-source Spark, over tables the real sink wrote.

Readings go through the real pipeline: SQLite -> edge tailer -> Kafka -> router (the default
routing file) -> sink -> Delta tables and the Parquet landing area on a local path (Spark would
need the hadoop-aws jars for s3a; the sink writes local and S3 lakes with the same code). The
job's functions then stream those tables into bronze (trigger availableNow), build silver and
gold, and every result is checked row for row against what deltalake reads from the sink's
tables, including the expectations: rows a drop rule removes, a fail rule that stops a batch,
warnings counted. Spark stands in for Databricks with pyspark 4.2 and delta-spark (see
tests/spark_helpers.py), and its Parquet file stream source for Auto Loader.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.errors import StreamingQueryException

from sinks.app import DeltaSink
from sinks.landing import LandingWriter
from sinks.maintenance import compact
from sinks.settings import TableSettings
from stream_apps.app import RouterApp
from tests.integration.sinks.test_sink import connection_for, sink_settings
from tests.integration.stream_apps.test_router import produce_nodes, router_settings, routing_file
from tests.spark_helpers import delta_rows, spark_rows, spark_session

# isort: split
# Importable once tests/spark_helpers.py has put the job's source directory on sys.path.
from sensorstream_lakehouse import jobs, silver
from sensorstream_lakehouse.expectations import (
    Action,
    Expectation,
    ExpectationFailed,
    evaluate,
    lakeflow_decorator,
)
from sensorstream_lakehouse.layout import Lakehouse
from sensorstream_lakehouse.rules import SILVER_READINGS

# The module's fixtures run the whole pipeline and the job once; on two busy cores that alone
# can take minutes, and pytest-timeout counts fixture setup against the first test.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

FIRST_NODES = {"edge-a": "eu-west-1", "edge-b": "us-east-1"}
LATER_NODES = {"edge-c": "eu-west-1"}
ROUTES = ["raw", "emergency", "regional/eu-west-1", "regional/us-east-1", "dlq"]
DROPPED = "out_of_range"  # temperature 180.5: outside [-40, 125], dropped by silver
WARNED = "degraded"  # status_code 2: kept, counted by the known_status_code warning


@dataclass
class Pipeline:
    """The real pipeline of one test module, with a lake on a local path."""

    kafka: object
    schema_registry: object
    s3: object
    root: Path
    unique: str

    @property
    def lake_uri(self) -> str:
        return str(self.root / "lake")

    @property
    def connection(self):
        return connection_for(self.kafka, self.schema_registry, self.s3, self.lake_uri)

    def sink_settings(self):
        """The routed topics only (not the producer's input and checkpoint topics); the raw
        route also writes the Parquet landing area."""
        u = self.unique
        topics = [f"t.{u}.{r}" for r in ("raw", "schematized", "filtered", "emergency", "dlq")]
        settings = sink_settings(u, routes={"raw": TableSettings(landing=True)})
        return settings.model_copy(update={"topics": [*topics, f"^t\\.{u}\\.regional\\..+"]})

    def feed(self, nodes: dict[str, str]) -> None:
        """Readings of `nodes` through producer, router and sink into the lake."""
        produce_nodes(self.root, self.connection, self.unique, nodes)
        routes = routing_file(self.root, self.unique)
        RouterApp(router_settings(routes, self.unique), self.connection).run()
        DeltaSink(self.sink_settings(), self.connection).run()

    def table(self, route: str) -> dict[tuple, dict]:
        return delta_rows(f"{self.lake_uri}/{route}")


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    session = spark_session(tmp_path_factory.mktemp("warehouse"))
    yield session
    session.stop()


@pytest.fixture(scope="module")
def pipeline(kafka, schema_registry, s3, tmp_path_factory) -> Pipeline:
    pipeline = Pipeline(
        kafka, schema_registry, s3, tmp_path_factory.mktemp("pipeline"), uuid.uuid4().hex[:12]
    )
    pipeline.feed(FIRST_NODES)
    return pipeline


@pytest.fixture(scope="module")
def lake(spark, pipeline: Pipeline) -> Lakehouse:
    """The job's first run over what the sink wrote: bronze, silver, gold."""
    lake = Lakehouse(
        schema=f"sensorstream_{pipeline.unique}",
        lake_root=pipeline.lake_uri,
        checkpoint_root=str(pipeline.root / "checkpoints"),
    )
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {lake.schema_name()}")
    run_medallion(spark, lake)
    return lake


def run_medallion(spark, lake: Lakehouse) -> None:
    jobs.run_bronze(spark, lake, ROUTES)
    jobs.run_silver(spark, lake, "raw")
    jobs.run_gold(spark, lake)


def bronze(spark, lake: Lakehouse, route: str, landing: bool = False):
    return spark.read.table(lake.table(Lakehouse.bronze_name(route, landing=landing)))


def assert_same_rows(spark_frame, expected: dict[tuple, dict]) -> None:
    columns = list(next(iter(expected.values())))
    got = spark_rows(spark_frame, columns)
    assert set(got) == set(expected)
    for key, row in expected.items():
        assert got[key] == row, key


def expected_silver(pipeline: Pipeline) -> dict[tuple, dict]:
    """The sink's raw rows minus the readings the drop rules remove, keyed by source row."""
    return {
        (r["_node_id"], r["_source_table"], r["_source_rowid"]): r
        for r in pipeline.table("raw").values()
        if not r["sensor_id"].endswith(f"-{DROPPED}")
    }


def test_bronze_holds_each_sink_table_row_for_row(spark, pipeline, lake):
    for route in ROUTES:
        expected = pipeline.table(route)
        assert expected, route
        assert_same_rows(bronze(spark, lake, route), expected)


def test_silver_drops_and_counts_by_the_expectations(spark, pipeline, lake):
    readings = spark.read.table(lake.table(jobs.SILVER))
    expected = expected_silver(pipeline)
    got = {
        (r["_node_id"], r["_source_table"], r["_source_rowid"]): r
        for r in spark_rows(readings).values()
    }
    assert set(got) == set(expected)
    for key, row in expected.items():
        assert {c: got[key][c] for c in row} == row, key
        assert got[key]["is_anomaly"] == (row["anomaly_flag"] == 1)

    quality = spark.read.table(lake.table(jobs.SILVER_QUALITY)).collect()
    totals: dict[str, int] = defaultdict(int)
    checked = 0
    for row in quality:
        totals[row["rule"]] += row["failed_rows"]
        if row["rule"] == "has_identity":
            checked += row["checked_rows"]
    raw = pipeline.table("raw").values()
    assert checked == len(raw)
    dropped = sum(1 for r in raw if r["sensor_id"].endswith(f"-{DROPPED}"))
    warned = sum(1 for r in raw if r["sensor_id"].endswith(f"-{WARNED}"))
    assert dropped and warned
    assert totals["temperature_in_range"] == dropped
    assert totals["known_status_code"] == warned
    assert all(totals[r.name] == 0 for r in SILVER_READINGS if r.action is Action.FAIL)
    # A warned row stays in silver; a dropped row does not.
    assert any(r["sensor_id"].endswith(f"-{WARNED}") for r in got.values())


def test_gold_aggregates_and_the_alerts_view(spark, pipeline, lake):
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in expected_silver(pipeline).values():
        hour = row["timestamp"] - row["timestamp"] % 3_600_000_000
        groups[(row["sensor_id"], row["_region"], hour)].append(row)
    gold = spark.read.table(lake.table(jobs.GOLD_SENSOR_HOURLY))
    got = spark_rows(gold, key=("sensor_id", "_region", "hour_start"))
    assert set(got) == set(groups)
    for key, rows in groups.items():
        temperatures = [r["temperature"] for r in rows]
        assert got[key]["readings"] == len(rows)
        assert got[key]["anomalies"] == sum(r["anomaly_flag"] == 1 for r in rows)
        assert got[key]["temperature_max"] == max(temperatures)
        assert got[key]["temperature_avg"] == pytest.approx(sum(temperatures) / len(rows))

    daily = {
        (r["_region"], r["event_date"]): r["readings"]
        for r in spark.read.table(lake.table(jobs.GOLD_REGION_DAILY)).collect()
    }
    per_region: dict[tuple, int] = defaultdict(int)
    for row in expected_silver(pipeline).values():
        per_region[(row["_region"], row["event_date"])] += 1
    assert daily == per_region

    alerts = spark.read.table(lake.table(jobs.ALERTS_VIEW)).collect()
    emergency = pipeline.table("emergency").values()
    assert sorted((a["sensor_id"], a["severity"], a["matched_rules"]) for a in alerts) == sorted(
        (e["sensor_id"], e["severity"], e["matched_rules"]) for e in emergency
    )
    assert {a["sensor_id"].split("-", 2)[2] for a in alerts} == {
        "anomaly",
        "hot",
        "out_of_range",
        "shaking",
    }


def test_a_fail_rule_stops_the_batch_before_anything_is_written(spark, pipeline, lake):
    strict = (
        *SILVER_READINGS,
        Expectation("calm", "vibration IS NULL OR vibration <= 50", Action.FAIL),
    )
    target = lake.table("silver_strict")
    query = silver.start(
        spark,
        lake.table(Lakehouse.bronze_name("raw")),
        target,
        lake.table("silver_strict_quality"),
        lake.checkpoint("silver_strict"),
        strict,
    )
    with pytest.raises(StreamingQueryException) as failure:
        query.awaitTermination()
    assert "calm" in str(failure.value) and ExpectationFailed.__name__ in str(failure.value)
    shaking = sum(1 for r in pipeline.table("raw").values() if r["sensor_id"].endswith("shaking"))
    assert f"calm ({shaking} of" in str(failure.value)
    assert not spark.catalog.tableExists(target)
    assert not spark.catalog.tableExists(lake.table("silver_strict_quality"))

    # A rule that does not resolve on the table is named, not taken for 'every row failed'.
    broken = (Expectation("typo", "temprature > 0", Action.WARN),)
    frame = bronze(spark, lake, "raw")
    with pytest.raises(ValueError, match="expectation typo: 'temprature > 0'"):
        evaluate(frame, broken, "t")


class FakeLakeflow:
    """Records what the pipeline's expect_all* decorators are given (the real `dlt` module
    exists only inside a Databricks pipeline)."""

    def __init__(self) -> None:
        self.given: dict[str, dict[str, str]] = {}

    def __getattr__(self, name: str):
        def expect(conditions: dict[str, str]):
            self.given[name] = conditions
            return lambda function: function

        return expect


def test_lakeflow_gets_the_same_rules_with_the_same_verdicts(spark, lake):
    dlt = FakeLakeflow()
    lakeflow_decorator(dlt, SILVER_READINGS)(lambda: None)
    by_action = {"expect_all": Action.WARN, "expect_all_or_drop": Action.DROP}
    by_action["expect_all_or_fail"] = Action.FAIL
    assert {by_action[k]: set(v) for k, v in dlt.given.items()} == {
        action: {r.name for r in SILVER_READINGS if r.action is action} for action in Action
    }
    # Each condition as Lakeflow gets it passes exactly the rows the job's evaluation passes.
    frame = silver.cleanse(bronze(spark, lake, "raw"))
    _, outcome = evaluate(frame, SILVER_READINGS, "check")
    conditions = {name: c for given in dlt.given.values() for name, c in given.items()}
    names = sorted(conditions)
    counts = frame.selectExpr(*[f"count_if(NOT ({conditions[n]})) AS `{n}`" for n in names]).first()
    assert {n: counts[n] for n in names} == outcome.failures
    assert outcome.failures["temperature_in_range"] > 0  # the rules were really exercised


def test_landing_area_streams_in_once_even_when_files_are_rewritten(spark, pipeline, lake):
    jobs.run_landing(spark, lake, ["raw"], auto_loader=False)
    expected = pipeline.table("raw")
    landed = bronze(spark, lake, "raw", landing=True)
    assert_same_rows(landed, expected)
    for (topic, partition, offset), row in spark_rows(landed).items():
        name = Path(row["_source_file"]).name
        assert name.startswith(f"{topic}+{partition}+") and name.endswith(".parquet")
        assert int(name.split("+")[2].removesuffix(".parquet")) <= offset

    # A sink that retries a batch rewrites the same files with the same rows (sinks/landing.py).
    root = Path(pipeline.lake_uri) / "landing" / "raw"
    files = sorted(root.rglob("*.parquet"))
    assert files
    writer = LandingWriter(pipeline.lake_uri)
    for path in files:
        before = path.read_bytes()
        rows = pq.read_table(path)
        date = path.parent.name.split("=", 1)[1]
        rows = rows.append_column("event_date", pa.array([date] * rows.num_rows).cast(pa.date32()))
        topic, partition, _ = path.name.split("+")
        (rewritten,) = writer.write("raw", topic, int(partition), rows)
        assert Path(rewritten) == path and path.read_bytes() == before
    assert sorted(root.rglob("*.parquet")) == files

    jobs.run_landing(spark, lake, ["raw"], auto_loader=False)
    assert_same_rows(bronze(spark, lake, "raw", landing=True), expected)

    # Silver fed from the landing variant as well still holds each reading once.
    jobs.run_silver(spark, lake, "raw", from_landing=True)
    readings = spark.read.table(lake.table(jobs.SILVER))
    assert readings.count() == len(expected_silver(pipeline))


def test_new_readings_stream_in_once_after_a_compaction(spark, pipeline, lake):
    pipeline.feed(LATER_NODES)
    raw_uri = f"{pipeline.lake_uri}/raw"
    result = compact(raw_uri, None)
    assert result.files_removed > 1  # the OPTIMIZE commit the Delta source must skip

    run_medallion(spark, lake)
    for route in ROUTES:
        assert_same_rows(bronze(spark, lake, route), pipeline.table(route))
    readings = spark.read.table(lake.table(jobs.SILVER))
    keys = [(r["_node_id"], r["_source_rowid"]) for r in readings.collect()]
    assert len(keys) == len(set(keys)) == len(expected_silver(pipeline))
    assert {node for node, _ in keys} == set(FIRST_NODES) | set(LATER_NODES)


def test_the_audit_task_agrees_with_the_audit_command_and_names_planted_discrepancies(
    spark, pipeline, lake, tmp_path
):
    """The bundle's audit task over the tables the real sink wrote: exact, with the same dead
    letter counts as `sensorstream audit`; then, on a copy of the lake with a duplicate in raw
    and an emergency row that raw does not have, it names both and fails the task."""
    import shutil

    import pyarrow.compute as pc
    from deltalake import DeltaTable, write_deltalake
    from sensorstream_lakehouse import audit as lake_audit

    from audit.run import audit_lake, open_lake

    clean = lake_audit.run_audit(spark, lake, ROUTES)
    assert clean.exact, clean.describe()
    assert set(clean.duplicates) == {r for r in ROUTES if r != "dlq"}
    command = audit_lake(pipeline.lake_uri, open_lake(pipeline.lake_uri, {}), None, "")
    assert command.exit_code == 0
    by_stage = {(c.stage, c.reason): c.count for c in command.dead_letters}
    assert {(s, r): n for s, r, n in clean.dead_letters} == by_stage
    assert sum(by_stage.values()) > 0  # the default routes dead-letter out-of-range readings
    findings = spark.read.table(lake.table(lake_audit.FINDINGS)).collect()
    assert {(row["kind"], row["route"]) for row in findings} >= {("duplicates", "raw")}

    copy = tmp_path / "lake"
    shutil.copytree(pipeline.lake_uri, copy)
    raw = DeltaTable(str(copy / "raw")).to_pyarrow_table()
    write_deltalake(str(copy / "raw"), raw.slice(0, 1), mode="append")
    emergency = DeltaTable(str(copy / "emergency")).to_pyarrow_table().slice(0, 1)
    column = emergency.column_names.index("_source_rowid")
    emergency = emergency.set_column(column, "_source_rowid", pa.array([10**9], pa.int64()))
    write_deltalake(str(copy / "emergency"), emergency, mode="append")
    planted = Lakehouse(
        schema=lake.schema, lake_root=str(copy), checkpoint_root=str(tmp_path / "checkpoints")
    )
    found = lake_audit.run_audit(spark, planted, ROUTES)
    assert found.duplicates["raw"] == 1
    [duplicate] = found.samples["duplicate raw"]
    first = raw.slice(0, 1).to_pylist()[0]
    assert (duplicate["_node_id"], duplicate["_source_rowid"]) == (
        first["_node_id"],
        first["_source_rowid"],
    )
    assert duplicate["offsets"] == [first["_kafka_offset"]] * 2
    assert found.not_in_raw == {"emergency": 1, "regional/eu-west-1": 0, "regional/us-east-1": 0}
    assert [r["_source_rowid"] for r in found.samples["not in raw emergency"]] == [10**9]
    assert pc.sum(pc.equal(raw["_source_rowid"], 10**9)).as_py() in (None, 0)
    with pytest.raises(lake_audit.AuditFailed, match="raw: 1 extra copies"):
        jobs.main(
            [
                "audit",
                f"--schema={lake.schema}",
                f"--lake-root={copy}",
                f"--checkpoint-root={tmp_path / 'checkpoints'}",
                f"--routes={','.join(ROUTES)}",
            ]
        )
