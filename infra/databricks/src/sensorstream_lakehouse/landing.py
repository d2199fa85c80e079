"""Bronze from the sink's Parquet landing area, for teams that want Auto Loader.

The landing files are named `<topic>+<partition>+<startOffset>.parquet` and appear whole, and a
sink that writes a batch again rewrites the same names with the same rows (sinks/landing.py).
Auto Loader remembers the paths it has ingested and, with `cloudFiles.allowOverwrites` left
false, does not ingest a rewritten path again: each record lands in bronze once.

Open-source Spark has no Auto Loader. Its Parquet file stream source behaves the same way for
this layout (it also remembers ingested paths and skips names starting with '.' or '_', like
the landing writer's temporary files); `auto_loader=False` uses it, with the schema kept at the
schema location the way Auto Loader keeps it, so a stream's schema does not change under it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

PARTITION_COLUMN = "event_date"
SOURCE_FILE = "_source_file"
_SCHEMA_FILE = "schema.json"


def auto_loader_options(schema_location: str) -> dict[str, str]:
    return {
        "cloudFiles.format": "parquet",
        "cloudFiles.schemaLocation": schema_location,
        # A new column (a new Avro schema version) stops the stream once, then is added.
        "cloudFiles.schemaEvolutionMode": "addNewColumns",
        "cloudFiles.partitionColumns": PARTITION_COLUMN,
        "cloudFiles.includeExistingFiles": "true",
        # A replayed batch rewrites the same file names: never ingest a path twice.
        "cloudFiles.allowOverwrites": "false",
    }


def read_landing(
    spark: SparkSession, uri: str, schema_location: str, *, auto_loader: bool = True
) -> DataFrame:
    """A stream of the landed rows of one route, with the file each row came from."""
    if auto_loader:
        reader = spark.readStream.format("cloudFiles").options(
            **auto_loader_options(schema_location)
        )
    else:
        schema = _kept_schema(spark, uri, Path(schema_location))
        reader = spark.readStream.format("parquet").schema(schema)
    frame = reader.load(uri)
    return frame.withColumn(SOURCE_FILE, F.col("_metadata.file_path"))


def _kept_schema(spark: SparkSession, uri: str, location: Path) -> StructType:
    """The schema of the first start, inferred from the files then (local paths only)."""
    kept = location / _SCHEMA_FILE
    if kept.exists():
        return StructType.fromJson(json.loads(kept.read_text()))
    try:
        schema = spark.read.parquet(uri).schema
    except AnalysisException as exc:  # no files yet: nothing to infer from
        raise ValueError(
            f"landing area {uri}: no Parquet files to infer a schema from yet ({exc})"
        ) from exc
    location.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(schema.jsonValue()))
    return schema
