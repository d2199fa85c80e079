"""What a run left in the lake: rows per table and region, latency, the exactly-once check.

Read from the Delta tables themselves, as Databricks would read them, and limited to the
rows this run's nodes wrote (by node id and rowid), so earlier runs on the same tables do not
count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.local_stack.exactly_once import (
    AuditVerdict,
    NodeCheck,
    audit_verdict,
    check_node,
    this_run_of,
)
from infra.local_stack.pipeline import ROUTES, EdgeNode


@dataclass(frozen=True)
class LakeReport:
    counts: dict[str, dict[str, int]]  # table label -> region -> rows of this run
    uris: dict[str, str]  # table label -> URI (regional: with {region})
    checks: list[NodeCheck]
    latencies_s: list[float]  # p50, p99, max
    dead_letters: int
    backlog: int  # rows of earlier runs that this run landed
    audit: AuditVerdict | None = None  # `sensorstream audit` of the lake and every node's rows


def _read(uri: str, options: dict[str, str], columns: list[str], where: Any) -> Any | None:
    """The filtered rows of a Delta table, or None when the table does not exist (yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        return None
    dataset = table.to_pyarrow_dataset()
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present, filter=where)


def _this_run(table: Any, nodes: list[EdgeNode]) -> Any:
    """Rows of `table` that this run's simulators wrote: per node, rowids after its start."""
    import pyarrow.compute as pc

    mask = None
    for node in nodes:
        part = pc.and_(
            pc.equal(table["_node_id"], node.node_id),
            pc.greater(table["_source_rowid"], node.start_rowid),
        )
        mask = part if mask is None else pc.or_(mask, part)
    return table.filter(mask)


def _per_region(table: Any | None) -> dict[str, int]:
    if table is None or table.num_rows == 0:
        return {}
    counts = table["_region"].value_counts().to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def read_lake(
    lake_uri: str,
    options: dict[str, str],
    nodes: list[EdgeNode],
    started_at: datetime,
    audit: Mapping[str, Any],
) -> LakeReport:
    """Count this run's rows in every table, measure latency; the exactly-once verdict is the
    audit's (`audit`: the lake's `sensorstream audit` JSON report).

    The tables are read side by side: each read is mostly waiting on the S3 server.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    lake = lake_uri.rstrip("/")
    since = ds.field("_ingested_at") >= pa.scalar(started_at, pa.timestamp("us", "UTC"))
    # This run's rows landed after the demo started, with event times after it too (which
    # prunes older partitions); rowids then pick this run's rows among them.
    recent = (
        ds.field("_node_id").isin([n.node_id for n in nodes])
        & since
        & (ds.field("event_date") >= pa.scalar(started_at.date(), pa.date32()))
    )
    columns = ["_node_id", "_region", "_source_rowid", "timestamp", "_ingested_at"]
    uris = {route: f"{lake}/{route}" for route in ROUTES}
    uris |= {"regional": f"{lake}/regional/{{region}}", "dlq": f"{lake}/dlq"}
    reads = {route: (uris[route], columns, recent) for route in ROUTES}
    reads |= {n.region: (f"{lake}/regional/{n.region}", columns, recent) for n in nodes}
    reads["dlq"] = (uris["dlq"], ["_ingested_at"], since)
    with ThreadPoolExecutor(max_workers=len(reads)) as pool:
        futures = {
            key: pool.submit(_read, uri, options, cols, where)
            for key, (uri, cols, where) in reads.items()
        }
        tables = {key: future.result() for key, future in futures.items()}

    mine = {key: _this_run(t, nodes) for key, t in tables.items() if key != "dlq" and t is not None}
    counts = {route: _per_region(mine.get(route)) for route in ROUTES}
    counts["regional"] = {}
    for node in nodes:
        counts["regional"].update(_per_region(mine.get(node.region)))
    raw = mine.get("raw")
    backlog = 0 if raw is None else tables["raw"].num_rows - raw.num_rows
    latencies: list[float] = []
    if raw is not None and raw.num_rows:
        event = pc.cast(raw["timestamp"], pa.timestamp("us", "UTC"))
        micros = pc.cast(pc.subtract(raw["_ingested_at"], event), pa.int64())
        quantiles = pc.quantile(micros, q=[0.5, 0.99]).to_pylist()
        latencies = [q / 1e6 for q in quantiles] + [pc.max(micros).as_py() / 1e6]
    dlq = tables["dlq"]
    return LakeReport(
        counts=counts,
        uris=uris,
        checks=[check_node(node, _landed(raw, node), audit) for node in nodes],
        latencies_s=latencies,
        dead_letters=0 if dlq is None else dlq.num_rows,
        backlog=backlog,
        audit=audit_verdict(audit, this_run_of(nodes)),
    )


def _landed(raw: Any | None, node: EdgeNode) -> int:
    """This run's distinct rowids of `node` in raw (the summary's count; the audit judges)."""
    import pyarrow.compute as pc

    if raw is None:
        return 0
    mine = raw.filter(pc.equal(raw["_node_id"], node.node_id))
    return len(pc.unique(mine["_source_rowid"]))
