"""The Lakeflow (DLT) variant of the medallion job: the same functions and the same rules.

A pipeline source file, not part of the wheel: `dlt` and `spark` exist only inside a pipeline.
The rules are `sensorstream_lakehouse.rules.SILVER_READINGS`, applied with Lakeflow's own
expect_all / expect_all_or_drop / expect_all_or_fail, so a rule changed once changes both.
The pipeline installs the package from the synced bundle (resources/pipeline.yml).
"""

import dlt  # provided by the pipeline runtime
from pyspark.sql import SparkSession
from sensorstream_lakehouse import bronze, gold, silver
from sensorstream_lakehouse.expectations import lakeflow_decorator
from sensorstream_lakehouse.layout import Lakehouse
from sensorstream_lakehouse.rules import SILVER_READINGS

spark = SparkSession.getActiveSession()
LAKE_ROOT = spark.conf.get("sensorstream.lake_root")
ROUTES = [r for r in spark.conf.get("sensorstream.routes", "raw,emergency").split(",") if r]


def _bronze_table(route: str) -> None:
    @dlt.table(
        name=Lakehouse.bronze_name(route),
        comment=f"The sink's Delta table {route}, streamed with the Delta source",
    )
    def _table():
        uri = f"{LAKE_ROOT.rstrip('/')}/{route}"
        return bronze.with_load_time(bronze.read_route(spark, uri))


for _route in ROUTES:
    _bronze_table(_route)


@dlt.table(name="silver_readings", comment="One row per source reading, checked")
@lakeflow_decorator(dlt, SILVER_READINGS)
def silver_readings():
    # The Delta source reads each bronze row once, so no MERGE is needed here as in the job.
    return silver.cleanse(spark.readStream.table(Lakehouse.bronze_name("raw")))


@dlt.table(name="gold_sensor_hourly")
def gold_sensor_hourly():
    return gold.sensor_hourly(spark.read.table("silver_readings"))


@dlt.table(name="gold_region_daily")
def gold_region_daily():
    return gold.region_daily(spark.read.table("silver_readings"))


@dlt.table(name="emergency_alerts", comment="The job's emergency_alerts view, materialized")
def emergency_alerts():
    return spark.read.table(Lakehouse.bronze_name("emergency")).select(*gold.ALERT_COLUMNS)
