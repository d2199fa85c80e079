"""Silver: one row per source reading, typed for analysis, checked by the expectations.

Rows are identified by where they came from (node, SQLite table, rowid), not by Kafka
coordinates: the same reading reaches bronze through the Delta and the landing variants and
through more than one route, and a micro-batch may be run again after a failure. Each batch is
therefore MERGEd insert-only on that identity, which makes silver exactly once whatever feeds
it, and the quality counts are appended with Delta's idempotent-write options (txnAppId,
txnVersion) so a batch run twice counts once.
"""

from __future__ import annotations

import logging
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from sensorstream_lakehouse.expectations import (
    QUALITY_SCHEMA,
    Action,
    Expectation,
    evaluate,
    quality_rows,
)

log = logging.getLogger("sensorstream_lakehouse.silver")

KEY = ("_node_id", "_source_table", "_source_rowid")
LOADED_AT = "_silver_loaded_at"


def cleanse(frame: DataFrame) -> DataFrame:
    """Typed columns analysts want: the 0/1 anomaly flag as a boolean, the hour of the event."""
    return (
        frame.withColumn("is_anomaly", F.col("anomaly_flag") == F.lit(1))
        .withColumn("event_hour_start", F.date_trunc("hour", F.col("timestamp")))
        .withColumn(LOADED_AT, F.current_timestamp())
    )


def _merge_condition() -> str:
    return " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in KEY)


def merge_batch(
    batch: DataFrame,
    batch_id: int,
    *,
    table: str,
    quality_table: str,
    rules: tuple[Expectation, ...],
    query_id: str,
) -> None:
    """The foreachBatch body: check, drop, count, then MERGE the survivors into `table`."""
    spark = batch.sparkSession
    cleaned = cleanse(batch).persist()
    try:
        kept, outcome = evaluate(cleaned, rules, table)
        (
            spark.createDataFrame(quality_rows(outcome, table, batch_id), QUALITY_SCHEMA)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", query_id)
            .option("txnVersion", batch_id)
            .saveAsTable(quality_table)
        )
        warned = {k: v for k, v in outcome.failed(Action.WARN).items() if v}
        if warned or outcome.dropped:
            log.warning(
                "%s batch %d: %d of %d rows dropped; warnings %s",
                table,
                batch_id,
                outcome.dropped,
                outcome.checked,
                warned,
            )
        rows = kept.dropDuplicates(list(KEY))
        if not spark.catalog.tableExists(table):
            rows.write.format("delta").saveAsTable(table)
            return
        view = f"sensorstream_silver_batch_{batch_id}"
        rows.createOrReplaceTempView(view)
        spark.sql(
            f"MERGE WITH SCHEMA EVOLUTION INTO {table} t USING {view} s "
            f"ON {_merge_condition()} WHEN NOT MATCHED THEN INSERT *"
        )
        spark.catalog.dropTempView(view)
    finally:
        cleaned.unpersist()


def start(
    spark: SparkSession,
    source_table: str,
    table: str,
    quality_table: str,
    checkpoint: str,
    rules: tuple[Expectation, ...],
    *,
    available_now: bool = True,
) -> StreamingQuery:
    """Stream a bronze table into silver. The checkpoint is per source table: silver can be
    fed from several bronze tables, each by its own query."""
    body = partial(
        merge_batch,
        table=table,
        quality_table=quality_table,
        rules=rules,
        query_id=f"silver:{source_table}",
    )
    writer = (
        spark.readStream.table(source_table)
        .writeStream.foreachBatch(body)
        .option("checkpointLocation", checkpoint)
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime="1 minute")
    )
    return writer.start()
