"""Entry points of the bundle's job tasks: `sensorstream-lakehouse <stage> [options]`.

Each stage is a `run_*` function taking a Spark session and a `Lakehouse`; `main` only parses
the task's parameters into them. Streams run with trigger availableNow: a task takes what has
landed since its last run, commits, and ends, so the job's schedule sets the latency.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorstream_lakehouse import audit, bronze, gold, landing, silver
from sensorstream_lakehouse.layout import Lakehouse
from sensorstream_lakehouse.rules import SILVER_READINGS

log = logging.getLogger("sensorstream_lakehouse")

SILVER = "silver_readings"
SILVER_QUALITY = "silver_readings_quality"
GOLD_SENSOR_HOURLY = "gold_sensor_hourly"
GOLD_REGION_DAILY = "gold_region_daily"
ALERTS_VIEW = "emergency_alerts"


def _await(queries: list[StreamingQuery]) -> None:
    """Wait for every query; the first failure is raised once all have stopped."""
    failure: BaseException | None = None
    for query in queries:
        try:
            query.awaitTermination()
        except Exception as exc:  # StreamingQueryException, raised again below
            failure = failure or exc
    if failure:
        raise failure


def run_bronze(
    spark: SparkSession, lake: Lakehouse, routes: Sequence[str], available_now: bool = True
) -> None:
    """The sink's Delta table of each route into its bronze table, one query per route."""
    queries = []
    for route in routes:
        name = Lakehouse.bronze_name(route)
        frame = bronze.with_load_time(bronze.read_route(spark, lake.source_uri(route)))
        queries.append(
            bronze.append_stream(
                frame,
                lake.table(name),
                lake.checkpoint(f"bronze/{name}"),
                available_now=available_now,
                query_name=name,
            )
        )
    _await(queries)


def run_landing(
    spark: SparkSession,
    lake: Lakehouse,
    routes: Sequence[str],
    *,
    auto_loader: bool = True,
    available_now: bool = True,
) -> None:
    """The landing area of each route into its `bronze_landing_*` table (Auto Loader)."""
    queries = []
    for route in routes:
        name = Lakehouse.bronze_name(route, landing=True)
        frame = landing.read_landing(
            spark,
            lake.landing_uri(route),
            lake.checkpoint(f"schemas/{name}"),
            auto_loader=auto_loader,
        )
        queries.append(
            bronze.append_stream(
                bronze.with_load_time(frame),
                lake.table(name),
                lake.checkpoint(f"bronze/{name}"),
                available_now=available_now,
                query_name=name,
            )
        )
    _await(queries)


def run_silver(
    spark: SparkSession,
    lake: Lakehouse,
    source_route: str = "raw",
    *,
    from_landing: bool = False,
    available_now: bool = True,
) -> None:
    name = Lakehouse.bronze_name(source_route, landing=from_landing)
    query = silver.start(
        spark,
        lake.table(name),
        lake.table(SILVER),
        lake.table(SILVER_QUALITY),
        lake.checkpoint(f"silver/{name}"),
        SILVER_READINGS,
        available_now=available_now,
    )
    _await([query])


def run_gold(
    spark: SparkSession, lake: Lakehouse, emergency_route: str | None = "emergency"
) -> None:
    readings = spark.read.table(lake.table(SILVER))
    gold.replace_table(gold.sensor_hourly(readings), lake.table(GOLD_SENSOR_HOURLY))
    gold.replace_table(gold.region_daily(readings), lake.table(GOLD_REGION_DAILY))
    if emergency_route:
        gold.create_emergency_alerts_view(
            spark, lake.table(ALERTS_VIEW), lake.table(Lakehouse.bronze_name(emergency_route))
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorstream-lakehouse", description=__doc__)
    parser.add_argument("stage", choices=["bronze", "landing", "silver", "gold", "audit"])
    parser.add_argument("--catalog", default=None, help="Unity Catalog catalog")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--lake-root", required=True, help="the sink's SENSORSTREAM_LAKE_URI")
    parser.add_argument("--checkpoint-root", required=True)
    parser.add_argument(
        "--routes", default="raw", help="comma-separated, e.g. raw,emergency,regional/eu-west-1"
    )
    parser.add_argument("--source-route", default="raw", help="silver: the bronze route to read")
    parser.add_argument("--from-landing", action="store_true", help="silver: bronze_landing_*")
    parser.add_argument("--emergency-route", default="emergency", help="gold: '' for no view")
    parser.add_argument(
        "--file-source",
        action="store_true",
        help="landing: Spark's Parquet file source instead of Auto Loader (open-source Spark)",
    )
    parser.add_argument(
        "--continuous", action="store_true", help="streams keep running (1-minute triggers)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    lake = Lakehouse(
        schema=args.schema,
        lake_root=args.lake_root,
        checkpoint_root=args.checkpoint_root,
        catalog=args.catalog or None,
    )
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    available_now = not args.continuous
    spark = SparkSession.builder.getOrCreate()
    log.info("stage %s on %s (lake %s)", args.stage, lake.schema_name(), lake.lake_root)
    if args.stage == "bronze":
        run_bronze(spark, lake, routes, available_now)
    elif args.stage == "landing":
        run_landing(
            spark, lake, routes, auto_loader=not args.file_source, available_now=available_now
        )
    elif args.stage == "silver":
        run_silver(
            spark,
            lake,
            args.source_route,
            from_landing=args.from_landing,
            available_now=available_now,
        )
    elif args.stage == "audit":
        audit.check(audit.run_audit(spark, lake, routes))
    else:
        run_gold(spark, lake, args.emergency_route or None)


if __name__ == "__main__":
    main()
