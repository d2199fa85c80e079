"""Gold: aggregates of silver for dashboards, and the emergency-alerts view.

The aggregates are recomputed from silver on each run and replace the table: they are small
(one row per sensor and hour, per region and day), a recompute is always right even when late
readings arrive for old hours, and there is no aggregation state to lose.

The alerts view reads the `emergency` route's bronze table, whose rows carry the router's own
`severity` and `matched_rules` (stream_apps/routes.yaml): the alert rules live in one place,
the routing file, and are not written again in SQL here.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ALERT_COLUMNS = (
    "sensor_id",
    "timestamp",
    "severity",
    "matched_rules",
    "temperature",
    "vibration",
    "anomaly_type",
    "_region",
    "_node_id",
    "_ingested_at",
)


def _anomalies() -> F.Column:
    return F.sum(F.when(F.col("is_anomaly"), 1).otherwise(0)).cast("long")


def sensor_hourly(silver: DataFrame) -> DataFrame:
    """Per sensor and hour of event time: readings, anomalies, temperature and vibration."""
    return silver.groupBy(
        "sensor_id", "_region", F.col("event_hour_start").alias("hour_start")
    ).agg(
        F.count(F.lit(1)).alias("readings"),
        _anomalies().alias("anomalies"),
        F.avg("temperature").alias("temperature_avg"),
        F.min("temperature").alias("temperature_min"),
        F.max("temperature").alias("temperature_max"),
        F.max("vibration").alias("vibration_max"),
    )


def region_daily(silver: DataFrame) -> DataFrame:
    """Per region and UTC day: readings, distinct sensors and nodes, anomalies."""
    return silver.groupBy("_region", "event_date").agg(
        F.count(F.lit(1)).alias("readings"),
        F.countDistinct("sensor_id").alias("sensors"),
        F.countDistinct("_node_id").alias("nodes"),
        _anomalies().alias("anomalies"),
        F.avg("temperature").alias("temperature_avg"),
    )


def replace_table(frame: DataFrame, table: str) -> None:
    frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").saveAsTable(
        table
    )


def emergency_alerts_view_sql(view: str, emergency_table: str) -> str:
    columns = ", ".join(f"`{c}`" for c in ALERT_COLUMNS)
    return (
        f"CREATE OR REPLACE VIEW {view} "
        "COMMENT 'Readings the router sent to the emergency route, newest first' AS "
        f"SELECT {columns} FROM {emergency_table} ORDER BY `timestamp` DESC"
    )


def create_emergency_alerts_view(spark: SparkSession, view: str, emergency_table: str) -> None:
    spark.sql(emergency_alerts_view_sql(view, emergency_table))
