"""The demo's exactly-once check: every row a node wrote this run is in the raw table once.

The raw route takes every record, so the raw table must hold each of this run's rowids of each
node exactly once; anything else is a lost or a duplicated row, named by its rowid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.local_stack.pipeline import EdgeNode
from infra.local_stack.sqlite_probe import max_rowid


@dataclass(frozen=True)
class NodeCheck:
    """Did every row this run wrote to a node's SQLite land in the raw table exactly once?"""

    node: EdgeNode
    written: int
    landed: int  # distinct rowids of this run in the raw table
    duplicates: int
    missing_sample: list[int]

    @property
    def ok(self) -> bool:
        return self.landed == self.written and self.duplicates == 0


def check_node(node: EdgeNode, raw: Any | None) -> NodeCheck:
    """`node`'s rows of this run against `raw`, this run's rows of the raw table (None: no
    table yet)."""
    import pyarrow.compute as pc

    end = max_rowid(node.db)
    written = max(0, end - node.start_rowid)
    if raw is None:
        rowids: list[int] = []
    else:
        mine = raw.filter(pc.equal(raw["_node_id"], node.node_id))
        rowids = mine["_source_rowid"].to_pylist()
    distinct = set(rowids)
    missing = [] if len(distinct) >= written else _missing(node.start_rowid, end, distinct)
    return NodeCheck(node, written, len(distinct), len(rowids) - len(distinct), missing)


def _missing(start: int, end: int, present: set[int], limit: int = 10) -> list[int]:
    out = []
    for rowid in range(start + 1, end + 1):
        if rowid not in present:
            out.append(rowid)
            if len(out) == limit:
                break
    return out
