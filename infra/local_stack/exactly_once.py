"""The demo's exactly-once check: every row a node wrote this run is in the raw table once.

The raw route takes every record, so the raw table must hold each of this run's rowids of each
node exactly once. A row that is not there is either still in flight (the stopped pipeline
holds it, see `in_flight`: it lands on the next run) or missing (a lost row); the two are
counted apart, so a slow pipeline is never reported as one that lost rows. Missing and
duplicated rows are named by their rowids.
"""

from __future__ import annotations

from dataclasses import dataclass
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
