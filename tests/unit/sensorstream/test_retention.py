"""The gap between where a consumer resumes and a partition's log start
(`sensorstream.retention`), and the router's and the sink's dead letters for it."""

from __future__ import annotations

from sensorstream.retention import HEADER_FIRST, HEADER_LAST, expired_records
from sinks.records import expired_dead_row
from stream_apps.expired import notice


def test_no_gap_when_the_consumer_resumes_at_or_past_the_log_start() -> None:
    assert expired_records("t", 0, resume=10, log_start=10) is None
    assert expired_records("t", 0, resume=11, log_start=10) is None
    assert expired_records("t", 0, resume=0, log_start=0) is None


def test_no_position_yet_has_nothing_to_miss() -> None:
    assert expired_records("t", 0, resume=-1001, log_start=500) is None  # OFFSET_INVALID
    assert expired_records("t", 0, resume=-2, log_start=500) is None  # OFFSET_BEGINNING


def test_a_gap_names_its_offsets_and_becomes_one_dead_row_at_its_last_offset() -> None:
    gap = expired_records("sensors.raw", 2, resume=40, log_start=55)
    assert gap is not None
    assert (gap.first, gap.last, gap.count) == (40, 54, 15)
    assert "offsets 40 to 54 of sensors.raw/2 (15 records" in gap.reason("router")
    assert "before the router read them" in gap.reason("router")
    row = expired_dead_row(gap, now_ms=1_700_000_000_000)
    assert (row.message.topic, row.message.partition, row.message.offset) == ("sensors.raw", 2, 54)
    assert row.message.value is None
    assert row.reason.startswith(gap.reason("sink")) and "not in the table" in row.reason
    assert dict(row.message.headers) == {HEADER_FIRST: b"40", HEADER_LAST: b"54"}


def test_the_routers_notice_names_the_gaps_offsets_as_its_source() -> None:
    gap = expired_records("sensors.readings", 1, resume=7, log_start=10)
    assert gap is not None
    letter = notice(gap)
    assert letter.stage == "router" and letter.value == b""
    assert letter.error.startswith(gap.reason("router")) and "not routed" in letter.error
    assert letter.source == {
        "topic": "sensors.readings",
        "partition": "1",
        "offset": "9",
        "first_offset": "7",
        "last_offset": "9",
    }
