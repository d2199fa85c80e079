"""Open-source Spark with Delta for tests of the Databricks job (infra/databricks).

The session is what a small Databricks cluster gives the job, minus Unity Catalog: the local
Spark of `infra.local_stack.spark` (pyspark 4.2, delta-spark's jars from Maven Central, cached).
"""

from __future__ import annotations

import sys
from pathlib import Path

from infra.local_stack.spark import spark_session as local_spark_session

ROOT = Path(__file__).resolve().parents[1]
# The job's package is a wheel of its own on Databricks (infra/databricks/pyproject.toml);
# here its source directory stands in for the installed wheel.
LAKEHOUSE_SRC = ROOT / "infra" / "databricks" / "src"
if str(LAKEHOUSE_SRC) not in sys.path:
    sys.path.insert(0, str(LAKEHOUSE_SRC))


def spark_session(warehouse: Path, app: str = "sensorstream-tests"):
    """A local Spark session with Delta as its catalog, keeping managed tables in `warehouse`."""
    return local_spark_session(app, conf={"spark.sql.warehouse.dir": str(warehouse)})


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
