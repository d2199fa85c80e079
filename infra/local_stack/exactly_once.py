"""The demo's exactly-once check: every row a node wrote this run is in the raw table once.

The raw route takes every record, so the raw table must hold each of this run's rowids of each
node exactly once. A row that is not there is either still in flight (the stopped pipeline
holds it, see `in_flight`: it lands on the next run) or missing (a lost row); the two are
counted apart, so a slow pipeline is never reported as one that lost rows. Missing and
duplicated rows are named by their rowids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.local_stack.in_flight import InFlight
from infra.local_stack.pipeline import EdgeNode
from infra.local_stack.sqlite_probe import max_rowid

SAMPLE = 10  # missing rowids named in the summary


@dataclass(frozen=True)
class NodeCheck:
    """Did every row this run wrote to a node's SQLite land in the raw table exactly once?"""

    node: EdgeNode
    written: int
    landed: int  # distinct rowids of this run in the raw table
    duplicates: int
    in_flight: int  # not landed, and still held by the pipeline: late, not lost
    missing: int  # not landed, and nowhere in the pipeline: lost
    missing_sample: list[int]

    @property
    def ok(self) -> bool:
        return self.landed == self.written and self.duplicates == 0

    @property
    def broken(self) -> bool:
        """Exactly-once broken: a row lost or landed twice (rows in flight do not break it)."""
        return self.missing > 0 or self.duplicates > 0


def check_node(node: EdgeNode, raw: Any | None, in_flight: InFlight | None = None) -> NodeCheck:
    """`node`'s rows of this run against `raw`, this run's rows of the raw table (None: no
    table yet); `in_flight` says which rows the stopped pipeline still holds (None: none)."""
    import pyarrow.compute as pc

    end = max_rowid(node.db)
    written = max(0, end - node.start_rowid)
    if raw is None:
        rowids: list[int] = []
    else:
        mine = raw.filter(pc.equal(raw["_node_id"], node.node_id))
        rowids = mine["_source_rowid"].to_pylist()
    distinct = set(rowids)
    held, lost = 0, []
    if len(distinct) < written:
        holds = in_flight.holds if in_flight is not None else lambda _node, _rowid: False
        for rowid in range(node.start_rowid + 1, end + 1):
            if rowid in distinct:
                continue
            if holds(node.node_id, rowid):
                held += 1
            else:
                lost.append(rowid)
    return NodeCheck(
        node,
        written,
        len(distinct),
        len(rowids) - len(distinct),
        in_flight=held,
        missing=len(lost),
        missing_sample=lost[:SAMPLE],
    )


@dataclass(frozen=True)
class AuditVerdict:
    """`sensorstream audit` over the whole lake, with rows the stopped pipeline still holds
    told apart (the audit sees a row in Kafka but not yet landed as missing), and findings
    about earlier runs' rows apart from this run's: the demo's lake keeps every run."""

    findings: list[str]  # this run's discrepancies, which break exactly-once, one line each
    in_flight: int  # rows the audit found missing that the pipeline still holds
    earlier: list[str] = field(default_factory=list)  # about rows of earlier runs

    @property
    def exact(self) -> bool:
        return not self.findings


def _times(n: int) -> str:
    return "twice" if n == 2 else f"{n} times"


RowFilter = Callable[[str, int], bool]
"""(node id, rowid) -> is it one of this run's rows?"""


def _missing(tally: Any) -> list[int] | None:
    """The rowids `tally` misses, or None when the audit lists fewer than it counts."""
    rowids = [r for a, b in tally.missing_ranges for r in range(a, b + 1)]
    return rowids if len(rowids) >= tally.missing else None


def audit_findings(
    audit: Any, in_flight: InFlight | None, this_run: RowFilter | None = None
) -> AuditVerdict:
    """The audit's discrepancies as lines for the summary: this run's rows (`this_run`; None:
    every row) apart from earlier runs', rows in flight counted apart."""
    mine = this_run or (lambda _node, _rowid: True)
    now: list[str] = []
    before: list[str] = []

    def add(node: str, rowid: int, line: str) -> None:
        (now if mine(node, rowid) else before).append(line)

    def span(kind: str, sp: Any) -> None:
        """A span of findings is this run's when any of its rowids may be."""
        line = (
            f"{sp.table}: {sp.node_id}/{sp.source_table} {sp.rows} {kind}, rowids "
            f"{sp.min_rowid}-{sp.max_rowid}"
        )
        add(sp.node_id, sp.max_rowid, line)

    for sp in audit.duplicate_spans:
        span("extra copies", sp)
    spanned = {sp.table for sp in audit.duplicate_spans}
    for table, extra in sorted(audit.duplicate_count.items()):
        if table not in spanned:  # the dead-letter table: duplicates listed one by one
            now.append(f"{table}: {extra} extra copies")
    for sp in audit.not_in_raw_spans:
        span("rows not in raw", sp)
    now += [f"{t}: {n} rows without provenance" for t, n in audit.unidentified.items()]
    now += [f"unreadable checkpoint {key}" for key in audit.unreadable_checkpoints]
    held = 0
    for tally in audit.tallies:
        name = f"{tally.node_id}/{tally.source_table}"
        problems = [p for p in tally.problems if "neither in raw" not in p]
        now += [f"{name}: {p}" for p in problems]
        if not tally.missing:
            continue
        rowids = _missing(tally)
        if rowids is None:
            now.append(f"{name}: {tally.missing} rows sent but neither in raw nor dead-lettered")
            continue
        holds = in_flight.holds if in_flight is not None else lambda _n, _r: False
        lost = [r for r in rowids if not holds(tally.node_id, r)]
        held += len(rowids) - len(lost)
        for rowid in lost:
            add(
                tally.node_id,
                rowid,
                f"{name}: rowid {rowid} sent but neither in raw nor dead-lettered",
            )
    return AuditVerdict(now, held, before)
