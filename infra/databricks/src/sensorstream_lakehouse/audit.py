"""The exactly-once audit where the data lives: the same lake checks as `sensorstream audit`,
in Spark over the sink's Delta tables, as a task of the bundle's job.

Checks, reading only the provenance and Kafka columns: every table holds each source row
(node, source table, source rowid) at most once; every routed table's rows are rows of `raw`;
dead letters are counted by stage and reason. The producers' checkpoints live in Kafka, which
a Databricks job does not read: their per-node counts stay with `sensorstream audit` on the
operators' side. Findings are appended to the `audit_findings` table (one row per kind, table
and run) and a run with any discrepancy fails, so the job's alerting tells the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorstream_lakehouse.layout import Lakehouse

log = logging.getLogger("sensorstream_lakehouse.audit")

KEY = ["_node_id", "_source_table", "_source_rowid"]
KAFKA = ["_kafka_topic", "_kafka_partition", "_kafka_offset"]
FINDINGS = "audit_findings"
SAMPLE = 20


class AuditFailed(Exception):
    """The lake is not exact: the message lists what the audit found."""


@dataclass
class AuditResult:
    duplicates: dict[str, int] = field(default_factory=dict)  # table -> extra copies
    not_in_raw: dict[str, int] = field(default_factory=dict)  # table -> rows
    samples: dict[str, list[dict]] = field(default_factory=dict)  # "<kind> <table>" -> rows
    dead_letters: list[tuple[str, str, int]] = field(default_factory=list)  # stage, reason, n

    @property
    def exact(self) -> bool:
        return not any(self.duplicates.values()) and not any(self.not_in_raw.values())

    def describe(self) -> str:
        lines = [f"{t}: {n} extra copies of rows" for t, n in self.duplicates.items() if n]
        lines += [f"{t}: {n} rows not in raw" for t, n in self.not_in_raw.items() if n]
        for kind, rows in self.samples.items():
            lines += [f"  {kind}: {row}" for row in rows]
        return "\n".join(lines) or "exact"


def _keys(spark: SparkSession, uri: str) -> DataFrame:
    frame = spark.read.format("delta").load(uri)
    present = [c for c in [*KEY, *KAFKA] if c in frame.columns]
    return frame.select(*present).where(" AND ".join(f"{c} IS NOT NULL" for c in KEY))


def duplicates(keys: DataFrame) -> tuple[int, list[dict]]:
    """Extra copies of source rows in one table, and a sample with their Kafka offsets."""
    counted = keys.groupBy(*KEY).agg(
        F.count(F.lit(1)).alias("copies"), F.collect_list("_kafka_offset").alias("offsets")
    )
    repeated = counted.where(F.col("copies") > 1).cache()
    extra = repeated.agg(F.sum(F.col("copies") - 1)).first()[0] or 0
    sample = [r.asDict() for r in repeated.orderBy(*KEY).limit(SAMPLE).collect()]
    repeated.unpersist()
    return int(extra), sample


def not_in_raw(keys: DataFrame, raw: DataFrame) -> tuple[int, list[dict]]:
    missing = keys.select(*KEY).join(raw.select(*KEY).distinct(), KEY, "left_anti").cache()
    count = missing.count()
    sample = [r.asDict() for r in missing.orderBy(*KEY).limit(SAMPLE).collect()]
    missing.unpersist()
    return count, sample


def dead_letter_counts(spark: SparkSession, uri: str) -> list[tuple[str, str, int]]:
    """Dead letters by stage and reason (the error up to its first colon, numbers as N)."""
    frame = spark.read.format("delta").load(uri)
    reason = F.regexp_replace(F.trim(F.substring_index(F.col("error"), ":", 1)), "[0-9]+", "N")
    rows = (
        frame.groupBy(
            F.coalesce(F.col("stage"), F.lit("(unknown)")).alias("stage"), reason.alias("reason")
        )
        .count()
        .orderBy("stage", "reason")
        .collect()
    )
    return [(r["stage"], r["reason"], int(r["count"])) for r in rows]


def run_audit(spark: SparkSession, lake: Lakehouse, routes: Sequence[str]) -> AuditResult:
    """Audit raw, each of `routes` and the dead-letter table; record the findings."""
    result = AuditResult()
    raw = _keys(spark, lake.source_uri("raw")).cache()
    for route in ["raw", *(r for r in routes if r not in ("raw", "dlq"))]:
        keys = raw if route == "raw" else _keys(spark, lake.source_uri(route))
        extra, sample = duplicates(keys)
        result.duplicates[route] = extra
        if sample:
            result.samples[f"duplicate {route}"] = sample
        if route != "raw":
            count, sample = not_in_raw(keys, raw)
            result.not_in_raw[route] = count
            if sample:
                result.samples[f"not in raw {route}"] = sample
    raw.unpersist()
    result.dead_letters = dead_letter_counts(spark, lake.source_uri("dlq"))
    _record(spark, lake, result)
    return result


def _record(spark: SparkSession, lake: Lakehouse, result: AuditResult) -> None:
    at = datetime.now(UTC)
    rows = [(at, "duplicates", t, n) for t, n in result.duplicates.items()]
    rows += [(at, "not_in_raw", t, n) for t, n in result.not_in_raw.items()]
    rows += [
        (at, f"dead_letters {stage}: {reason}", "dlq", n)
        for stage, reason, n in result.dead_letters
    ]
    frame = spark.createDataFrame(
        rows, "audited_at timestamp, kind string, route string, rows long"
    )
    frame.write.format("delta").mode("append").saveAsTable(lake.table(FINDINGS))


def check(result: AuditResult) -> None:
    """Fail the task when the lake is not exact, naming what was found."""
    if not result.exact:
        raise AuditFailed("the lake is not exactly once:\n" + result.describe())
    log.info("audit: exact (%s)", ", ".join(f"{t} checked" for t in result.duplicates))
