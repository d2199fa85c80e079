"""The audit as calls the CLI makes: open the lake's tables, read the producers' checkpoints,
reconcile; then, given an edge database, check its rows."""

from __future__ import annotations

from audit.checkpoints import read_checkpoints
from audit.findings import AuditReport
from audit.lake import LakeTable, discover_tables
from audit.reconcile import LakeAudit


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
) -> AuditReport:
    """Audit `tables`; with `kafka_config`, against the producers' checkpoints too (None: the
    lake alone, as where no broker is reachable)."""
    checkpoints, unreadable = None, []
    if kafka_config is not None:
        checkpoints, bad = read_checkpoints(kafka_config, checkpoint_topic)
        unreadable = [f"{b.key}: {b.reason}" for b in bad]
    return LakeAudit(lake_uri, tables, checkpoints, unreadable).run()
