"""The demo's exactly-once verdict, from `sensorstream audit` and nothing else.

After the demo stopped its processes it runs `sensorstream audit` over its lake (`audit_cli`):
every table against the producers' checkpoints, with rows the stopped pipeline still holds
(past the router's or sink's committed offsets) counted by the audit itself as in flight: they
land on the next run, late, not lost; rows in SQLite after a producer's checkpoint are not yet
sent, late too. The demo's lake keeps every run, so the audit's findings are split by rowid
into this run's rows (they fail the run) and earlier runs' (shown, not failing this run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.local_stack.audit_cli import located_findings
from infra.local_stack.pipeline import EdgeNode
from infra.local_stack.sqlite_probe import SOURCE_TABLE, max_rowid, rows_after

SAMPLE = 10  # missing rowids named in the summary


@dataclass(frozen=True)
class NodeCheck:
    """Did every row this run wrote to a node's SQLite land in the raw table exactly once?"""

    node: EdgeNode
    written: int
    landed: int  # distinct rowids of this run in the raw table
    duplicates: int  # extra copies of this run's rows the audit found in raw
    in_flight: int  # the audit: not landed, and still held by the pipeline: late, not lost
    missing: int  # the audit: not landed, and nowhere in the pipeline: lost
    missing_sample: list[int]

    @property
    def ok(self) -> bool:
        return self.landed == self.written and not self.broken and not self.in_flight

    @property
    def broken(self) -> bool:
        """Exactly-once broken: a row lost or landed twice (rows in flight do not break it)."""
        return self.missing > 0 or self.duplicates > 0


def check_node(node: EdgeNode, landed: int, audit: Mapping[str, Any]) -> NodeCheck:
    """`node`'s rows of this run: `landed` of them in raw (the lake's count, for the table),
    and what `audit`, the lake's `sensorstream audit` JSON report, says of them."""
    written = max(0, max_rowid(node.db) - node.start_rowid)
    key = (node.node_id, SOURCE_TABLE)
    tally = next((t for t in audit["tallies"] if (t["node_id"], t["source_table"]) == key), None)
    last = 0 if tally is None else tally["last_rowid"] or 0
    lost = [
        rowid
        for first, end in ([] if tally is None else tally["missing_ranges"])
        for rowid in range(max(first, node.start_rowid + 1), end + 1)
    ]
    extra = sum(
        sp["rows"]
        for sp in audit["duplicate_spans"]
        if sp["table"] == "raw"
        and (sp["node_id"], sp["source_table"]) == key
        and sp["max_rowid"] > node.start_rowid
    )
    held = rows_after(node.db, last) + (0 if tally is None else tally["in_flight"])
    return NodeCheck(node, written, landed, extra, held, len(lost), lost[:SAMPLE])


@dataclass(frozen=True)
class AuditVerdict:
    """`sensorstream audit` of the whole lake and every node's rows, findings about this run's
    rows apart from earlier runs': the demo's lake keeps every run."""

    findings: list[str]  # this run's discrepancies, which break exactly-once, one line each
    in_flight: int  # rows the stopped pipeline still holds (the audit counts them apart)
    earlier: list[str] = field(default_factory=list)  # about rows of earlier runs

    @property
    def exact(self) -> bool:
        return not self.findings


RowFilter = Callable[[str, int], bool]
"""(node id, rowid) -> is it one of this run's rows?"""


def audit_verdict(audit: Mapping[str, Any], this_run: RowFilter) -> AuditVerdict:
    """The audit's findings split into this run's (`this_run`) and earlier runs'; a finding
    that names no rowid is this run's: it cannot be told apart."""
    now: list[str] = []
    before: list[str] = []
    for line, node, rowid in located_findings(audit):
        mine = node is None or rowid is None or this_run(node, rowid)
        (now if mine else before).append(line)
    return AuditVerdict(now, audit["in_flight"], before)


def this_run_of(nodes: list[EdgeNode]) -> RowFilter:
    """This run's rows: per node, the rowids after the highest its database held at start."""
    starts = {node.node_id: node.start_rowid for node in nodes}
    return lambda node_id, rowid: node_id in starts and rowid > starts[node_id]
