"""A table's txn versions (the last offset it holds per topic-partition), kept up to date
commit by commit instead of looked up from the log every time.

`DeltaTable.transaction_version` replays the table's log from its last checkpoint on every
call: one GET per commit since then, for each topic-partition asked about. A sink asks for every
partition of a batch before each commit, so with a checkpoint every 100 commits a table
committed every few seconds cost about 150 GETs per commit (most of the sink's object-store
requests, and much of its CPU parsing them again and again). Here each partition is looked up
once; after that, only the commits made since are read, one small commit file each, and their
`txn` actions applied in order: the table's txn version for an app id is the one of the last
commit that set it, so the result is exactly what a lookup would return.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from deltalake import DeltaTable


def txn_actions(commit: bytes) -> Iterable[tuple[str, int]]:
    """The (app id, version) of each `txn` action of a raw commit file, in order."""
    for line in commit.splitlines():
        if b'"txn"' not in line:
            continue
        txn = json.loads(line).get("txn")
        if txn is not None:
            yield txn["appId"], int(txn["version"])


class TxnVersions:
    """Txn versions of one table as of a table version, caught up with each later commit.

    `read_commit(v)` returns the raw commit file of version v. A commit file that is gone (the
    log was cleaned up) or a table whose version went back (recreated) makes it start afresh
    from lookups.
    """

    def __init__(self, read_commit: Callable[[int], bytes]) -> None:
        self._read_commit = read_commit
        self._as_of: int | None = None
        self._known: dict[str, int | None] = {}
        self.lookups = 0
        """Log replays made (`DeltaTable.transaction_version` calls): for tests and metrics."""

    def versions(self, table: DeltaTable, app_ids: Iterable[str]) -> dict[str, int | None]:
        """The txn version of each of `app_ids` in `table` at its current version."""
        self._catch_up(table.version())
        out = {}
        for app_id in app_ids:
            if app_id not in self._known:
                self.lookups += 1
                self._known[app_id] = table.transaction_version(app_id)
            out[app_id] = self._known[app_id]
        return out

    def committed(self, version: int, txns: dict[str, int]) -> None:
        """This writer committed `txns` as `version`: note them without reading the commit back,
        when it directly follows the version known (else the next catch-up reads it)."""
        if self._as_of is not None and version == self._as_of + 1:
            self._known.update(txns)
            self._as_of = version

    def forget(self) -> None:
        """Look everything up again (after a commit whose outcome is not known, say)."""
        self._as_of = None
        self._known.clear()

    def _catch_up(self, version: int) -> None:
        if self._as_of is None or version < self._as_of:
            self.forget()
            self._as_of = version
            return
        for v in range(self._as_of + 1, version + 1):
            try:
                commit = self._read_commit(v)
            except FileNotFoundError:
                self.forget()
                self._as_of = version
                return
            for app_id, txn_version in txn_actions(commit):
                self._known[app_id] = txn_version
            self._as_of = v
