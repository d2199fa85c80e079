"""Open-source Spark with Delta for tests of the Databricks job (infra/databricks).

The session is what a small Databricks cluster gives the job, minus Unity Catalog: pyspark 4.2
with delta-spark 4.4.1, whose jars ivy fetches from Maven Central once into a cache under
`~/.cache/sensorstream/` (override: SENSORSTREAM_SPARK_IVY_DIR), so only the first run of a
machine pays for the download. Two local cores, few shuffle partitions, no UI: the machine is
shared with Kafka, the registry and S3 running beside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

# The Python package is delta-spark 4.4.1, but Maven Central has no 4.4.1 of
# io.delta:delta-spark_4.2_2.13 (its maven-metadata.xml lists 4.4.0 only, checked 2026-11-23),
# so session start would fail to resolve. 4.4.0 is the same line; the Python side is a thin API.
DELTA_JARS_VERSION = "4.4.0"

ROOT = Path(__file__).resolve().parents[1]
# The job's package is a wheel of its own on Databricks (infra/databricks/pyproject.toml);
# here its source directory stands in for the installed wheel.
LAKEHOUSE_SRC = ROOT / "infra" / "databricks" / "src"
if str(LAKEHOUSE_SRC) not in sys.path:
    sys.path.insert(0, str(LAKEHOUSE_SRC))


def ivy_dir() -> Path:
    default = Path.home() / ".cache" / "sensorstream" / "ivy"
    return Path(os.environ.get("SENSORSTREAM_SPARK_IVY_DIR") or default)


def spark_session(warehouse: Path, app: str = "sensorstream-tests") -> SparkSession:
    """A local Spark session with Delta as its catalog, keeping managed tables in `warehouse`."""
    builder = (
        SparkSession.builder.master("local[2]")
        .appName(app)
        .config("spark.jars.ivy", str(ivy_dir()))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.sql.shuffle.partitions", "2")
        # Delta rebuilds a table's state with 50 tasks by default: far too many for tiny tables
        # on two shared cores.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
    )
    builder = configure_spark_with_delta_pip(builder)
    # configure_spark_with_delta_pip names the artifact for the installed pyspark and the
    # version of the installed delta-spark; the jars are pinned to the newest release Maven
    # Central has for that artifact.
    packages = builder._options["spark.jars.packages"]
    artifact = packages.split(",")[0].rsplit(":", 1)[0]
    return builder.config("spark.jars.packages", f"{artifact}:{DELTA_JARS_VERSION}").getOrCreate()


KAFKA_KEY = ("_kafka_topic", "_kafka_partition", "_kafka_offset")


def delta_rows(uri: str) -> dict[tuple, dict]:
    """The rows of a sink table as deltalake reads them, keyed by Kafka coordinates, with
    timestamps as microseconds since the epoch (the unit both engines store)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    table = DeltaTable(uri).to_pyarrow_table()
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            micros = pc.cast(pc.cast(table.column(i), pa.timestamp("us", "UTC")), pa.int64())
            table = table.set_column(i, field.name, micros)
    return {tuple(row[k] for k in KAFKA_KEY): row for row in table.to_pylist()}


def spark_rows(
    frame, columns: list[str] | None = None, key: tuple[str, ...] = KAFKA_KEY
) -> dict[tuple, dict]:
    """The rows of a Spark DataFrame in the shape of `delta_rows` (only `columns`, if given),
    keyed by the `key` columns."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType, TimestampType

    names = columns or frame.columns
    selected = [
        F.unix_micros(F.col(f"`{f.name}`")).alias(f.name)
        if isinstance(f.dataType, TimestampType | TimestampNTZType)
        else F.col(f"`{f.name}`")
        for f in frame.schema.fields
        if f.name in names
    ]
    rows = [row.asDict(recursive=True) for row in frame.select(*selected).collect()]
    return {tuple(row[k] for k in key): row for row in rows}
