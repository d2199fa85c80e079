"""Open-source Spark beside the local stack: the session that tests of the Databricks job and
the Spark benchmark share.

pyspark 4.2 with delta-spark's jars, which ivy fetches from Maven Central once into a cache
under `~/.cache/sensorstream/` (override: SENSORSTREAM_SPARK_IVY_DIR), so only the first run of
a machine pays for the download. Two local cores, few shuffle partitions, no UI: the machine is
shared with Kafka, the registry and S3 running beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# The Python package is delta-spark 4.4.1, but Maven Central has no 4.4.1 of
# io.delta:delta-spark_4.2_2.13 (its maven-metadata.xml lists 4.4.0 only, checked 2026-11-23),
# so session start would fail to resolve. 4.4.0 is the same line; the Python side is a thin API.
DELTA_JARS_VERSION = "4.4.0"

# Spark's own connectors, at the version of the installed pyspark (`spark_version()`).
SPARK_KAFKA = "org.apache.spark:spark-sql-kafka-0-10_2.13"
SPARK_AVRO = "org.apache.spark:spark-avro_2.13"
# s3a: hadoop-aws at the Hadoop version pyspark ships (hadoop-client-api-<v>.jar), which
# brings the AWS SDK v2 bundle it was built against.
HADOOP_AWS = "org.apache.hadoop:hadoop-aws"


def ivy_dir() -> Path:
    default = Path.home() / ".cache" / "sensorstream" / "ivy"
    return Path(os.environ.get("SENSORSTREAM_SPARK_IVY_DIR") or default)


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def hadoop_version() -> str:
    """The Hadoop version of the jars pyspark ships: hadoop-aws must match it exactly."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    raise RuntimeError(f"no hadoop-client-api jar in {jars}: is pyspark installed whole?")


def connector_packages(*, kafka: bool = False, avro: bool = False, s3: bool = False) -> list[str]:
    """Maven coordinates of the connectors asked for, at versions matching the installed
    pyspark (Delta's jars come with every session)."""
    packages = []
    if kafka:
        packages.append(f"{SPARK_KAFKA}:{spark_version()}")
    if avro:
        packages.append(f"{SPARK_AVRO}:{spark_version()}")
    if s3:
        packages.append(f"{HADOOP_AWS}:{hadoop_version()}")
    return packages


def s3a_conf(endpoint_url: str, access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """Hadoop s3a settings for an S3-compatible server on this machine (path-style, plain
    http when the endpoint says so); `s3a://bucket/path` then reaches it."""
    prefix = "spark.hadoop.fs.s3a."
    return {
        f"{prefix}endpoint": endpoint_url,
        f"{prefix}endpoint.region": region,
        f"{prefix}access.key": access_key,
        f"{prefix}secret.key": secret_key,
        f"{prefix}path.style.access": "true",
        f"{prefix}connection.ssl.enabled": str(endpoint_url.startswith("https")).lower(),
        f"{prefix}aws.credentials.provider": (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        ),
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    }


def spark_session(
    app: str,
    *,
    master: str = "local[2]",
    packages: Iterable[str] = (),
    conf: Mapping[str, str] | None = None,
    jars: str | None = None,
):
    """A local Spark session with Delta's SQL extension and catalog, plus `packages` (Maven
    coordinates) and `conf`.

    `jars` (the `spark.jars` of an earlier session with the same packages, see `jar_files`)
    loads those files instead of resolving the packages again: ivy checks Maven Central on
    every start even when everything is cached (about 30 s here), which a cluster with its
    libraries installed never does."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.jars.ivy", str(ivy_dir()))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
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
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    if jars:
        return builder.config("spark.jars", jars).getOrCreate()
    builder = configure_spark_with_delta_pip(builder)
    # configure_spark_with_delta_pip names the artifact for the installed pyspark and the
    # version of the installed delta-spark; the jars are pinned to the newest release Maven
    # Central has for that artifact.
    delta = builder._options["spark.jars.packages"].split(",")[0].rsplit(":", 1)[0]
    coordinates = ",".join([f"{delta}:{DELTA_JARS_VERSION}", *packages])
    return builder.config("spark.jars.packages", coordinates).getOrCreate()


def jar_files(session) -> str:
    """The local jar files a session resolved its packages to (its `spark.jars`)."""
    return session.sparkContext.getConf().get("spark.jars", "")
