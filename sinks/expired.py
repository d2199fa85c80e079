"""A retention gap as a row of the sink's dead-letter table (see `sensorstream.retention`).

The row stands where the records would have been: at the gap's last offset, which is also the
txn version it is written with, so that meeting the same gap again (a new assignment before a
batch past it has landed) finds it already there.
"""

from __future__ import annotations

from sensorstream.retention import ExpiredRecords
from sinks.batch import SinkMessage
from sinks.records import DeadRow

HEADER_FIRST = "dlq.expired.first_offset"
HEADER_LAST = "dlq.expired.last_offset"


def expired_dead_row(gap: ExpiredRecords, now_ms: int) -> DeadRow:
    """The dead-letter row for `gap`, its first and last offsets also as headers."""
    headers = [(HEADER_FIRST, str(gap.first).encode()), (HEADER_LAST, str(gap.last).encode())]
    message = SinkMessage(
        topic=gap.topic,
        partition=gap.partition,
        offset=gap.last,
        timestamp_ms=now_ms,
        key=None,
        value=None,
        headers=headers,
    )
    return DeadRow(message, f"{gap.reason('sink')}; they are not in the table")
