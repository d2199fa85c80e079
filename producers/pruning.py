"""Deleting streamed rows from the edge table, in the one way that never deletes an unstreamed row.

For edge applications that keep their database small by deleting what was shipped. The producer
itself never writes to SQLite; the application (or a cron job beside it) calls
`prune_streamed` with the producer's latest checkpoint.

The rule: delete every row at or below the checkpoint's rowid, and only while the row at that
rowid is still the row the checkpoint covers. The second half matters in a table whose rowids
are reused (no AUTOINCREMENT): once the table was emptied, new rows take rowids 1, 2, ... again,
and a checkpoint read a moment earlier can name a rowid that a new, unstreamed row has since
taken. Its fingerprint then differs and nothing is deleted; the next checkpoint will cover the
new rows. Deleting oldest first like this is also what the producer's `on_rowid_reuse: prune`
mode relies on to tell new rows from streamed ones.
"""

from __future__ import annotations

import sqlite3

from producers.checkpoint import Checkpoint, row_fingerprint
from schemas.sqlite_columns import quote_identifier


def prune_streamed(
    conn: sqlite3.Connection, table: str, timestamp_column: str, checkpoint: Checkpoint
) -> int:
    """Delete the rows `checkpoint` covers from `table`; how many were deleted (0 if none).

    `conn` is the application's own read-write connection; the delete is one IMMEDIATE
    transaction, so no row can be written between the check and the delete.
    """
    if checkpoint.rowid <= 0 or checkpoint.row_fingerprint is None:
        return 0
    name = quote_identifier(table)
    select = f"SELECT {quote_identifier(timestamp_column)} FROM {name} WHERE _rowid_ = ?"
    text_factory = conn.text_factory
    conn.text_factory = bytes  # the producer fingerprints text as it reads it: as bytes
    in_transaction = False
    try:
        conn.execute("BEGIN IMMEDIATE")
        in_transaction = True
        row = conn.execute(select, (checkpoint.rowid,)).fetchone()
        if row is None or row_fingerprint(checkpoint.rowid, row[0]) != checkpoint.row_fingerprint:
            conn.execute("ROLLBACK")
            return 0
        deleted = conn.execute(f"DELETE FROM {name} WHERE _rowid_ <= ?", (checkpoint.rowid,))
        conn.execute("COMMIT")
        return deleted.rowcount
    except BaseException:
        if in_transaction and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.text_factory = text_factory
