"""The audit as calls the CLI makes: read what the producers sent and what the stages still
hold, open the lake's tables, reconcile; then, given an edge database, check its rows.

The order matters on a running fleet: the checkpoints first, then the rows in flight, then
the tables. A row a checkpoint covers is then either past some group's committed offset when
the rows in flight are read, or already in the tables opened afterwards (`audit.in_flight`).
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.checkpoints import SentRows, read_checkpoints
from audit.findings import AuditReport
from audit.in_flight import InFlight, Stage, read_in_flight
from audit.lake import LakeTable, discover_tables
from audit.reconcile import LakeAudit


@dataclass
class Pipeline:
    """What the audit reads from Kafka: the producers' checkpoints (None: not read), the
    checkpoints it cannot read, and the rows the stages still hold (None: not read)."""

    checkpoints: dict[tuple[str, str], SentRows] | None
    unreadable: list[str]
    in_flight: InFlight | None = None


def read_pipeline(
    kafka_config: dict[str, str],
    checkpoint_topic: str,
    registry_config: dict[str, str] | None = None,
    stages: list[Stage] | None = None,
) -> Pipeline:
    """The checkpoints, then (given `stages` and the registry to decode records) the rows in
    flight: in this order, before the lake's tables are opened."""
    checkpoints, bad = read_checkpoints(kafka_config, checkpoint_topic)
    in_flight = None
    if stages is not None and registry_config is not None:
        in_flight = read_in_flight(kafka_config, registry_config, stages)
    return Pipeline(checkpoints, [f"{b.key}: {b.reason}" for b in bad], in_flight)


def open_lake(lake_uri: str, storage_options: dict[str, str]) -> list[LakeTable]:
    """Every Delta table under `lake_uri`, each at its current version for the whole audit.

    Raises LakeNotFound when the lake does not exist.
    """
    names = discover_tables(lake_uri, storage_options)
    return [LakeTable(name, uri, storage_options) for name, uri in names.items()]


def audit_lake(
    lake_uri: str,
    tables: list[LakeTable],
    kafka_config: dict[str, str] | None,
    checkpoint_topic: str,
    *,
    pipeline: Pipeline | None = None,
    settled: bool = False,
) -> AuditReport:
    """Audit `tables` against `pipeline` (read before the tables were opened); without it,
    with `kafka_config`, against the producers' checkpoints read now (None: the lake alone,
    as where no broker is reachable). `settled`: rows in flight are findings."""
    if pipeline is None and kafka_config is not None:
        pipeline = read_pipeline(kafka_config, checkpoint_topic)
    if pipeline is None:
        return LakeAudit(lake_uri, tables, None, settled=settled).run()
    return LakeAudit(
        lake_uri,
        tables,
        pipeline.checkpoints,
        pipeline.unreadable,
        pipeline.in_flight,
        settled=settled,
    ).run()
