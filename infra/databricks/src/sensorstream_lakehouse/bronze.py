"""Bronze: the sink's Delta tables, streamed as they are into tables of the workspace.

The source is read with the Delta streaming source, never with Auto Loader on the table's data
files (DESIGN section 8): a failed write or a compaction leaves Parquet files in the directory
that are not, or no longer, part of the table, and only the Delta log says which are. The log
also makes the stream exact: each commit is read once, and the OPTIMIZE commits of
`sensorstream compact` carry dataChange=false, so the stream skips them instead of reading the
compacted rows a second time.

The bronze write is a Delta streaming sink with a checkpoint, which is idempotent per
micro-batch; `mergeSchema` lets a new source column (a new Avro schema version, DESIGN section
4) become a bronze column. The Delta source itself stops at such a schema change and continues
with the new schema on restart, which is why the job's bronze task has retries.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

LOADED_AT = "_bronze_loaded_at"


def read_route(
    spark: SparkSession, uri: str, max_files_per_trigger: int | None = None
) -> DataFrame:
    """A stream of the rows of the sink's table at `uri`, from its first version on."""
    reader = spark.readStream.format("delta")
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    return reader.load(uri)


def with_load_time(frame: DataFrame) -> DataFrame:
    """Adds when bronze took the row; the sink's `_ingested_at` says when it left Kafka."""
    return frame.withColumn(LOADED_AT, F.current_timestamp())


def append_stream(
    frame: DataFrame,
    table: str,
    checkpoint: str,
    *,
    available_now: bool = True,
    query_name: str | None = None,
) -> StreamingQuery:
    """Append the stream to `table`; `available_now` takes what is there and stops, which is
    what a scheduled job wants (a continuous job passes False and gets a one-minute trigger)."""
    writer = (
        frame.writeStream.format("delta")
        .outputMode("append")
        .option("checkpointLocation", checkpoint)
        .option("mergeSchema", "true")
    )
    if query_name:
        writer = writer.queryName(query_name)
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime="1 minute")
    return writer.toTable(table)
