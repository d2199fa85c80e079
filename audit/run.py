"""The audit as one call: open the lake's tables, read the producers' checkpoints, reconcile."""

from __future__ import annotations

from audit.checkpoints import read_checkpoints
from audit.findings import AuditReport
from audit.lake import LakeTable, discover_tables
from audit.reconcile import LakeAudit


def audit_lake(
    lake_uri: str,
    storage_options: dict[str, str],
    kafka_config: dict[str, str] | None,
    checkpoint_topic: str,
) -> AuditReport:
    """Audit every Delta table under `lake_uri`; with `kafka_config`, against the producers'
    checkpoints too (None: the lake alone, as where no broker is reachable).

    Raises LakeNotFound when the lake does not exist.
    """
    names = discover_tables(lake_uri, storage_options)
    tables = [LakeTable(name, uri, storage_options) for name, uri in names.items()]
    checkpoints, unreadable = None, []
    if kafka_config is not None:
        checkpoints, bad = read_checkpoints(kafka_config, checkpoint_topic)
        unreadable = [f"{b.key}: {b.reason}" for b in bad]
    return LakeAudit(lake_uri, tables, checkpoints, unreadable).run()
