"""The demo's exactly-once verdict tells rows still in flight from rows lost.

A demo stopped before its pipeline caught up leaves rows in SQLite or Kafka that land on the
next run; calling them missing ("exactly once FAILED") would accuse the product of a loss it
did not have. These tests build a node's real SQLite file and a real Arrow table as the raw
table, and say which rows the stopped pipeline still holds.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pyarrow as pa

from audit.findings import AuditReport, Copy, Duplicate, Span, Tally
from infra.local_stack.exactly_once import audit_findings, check_node
from infra.local_stack.in_flight import InFlight
from infra.local_stack.lake_report import LakeReport
from infra.local_stack.pipeline import ROUTES, EdgeNode
from infra.local_stack.summary import print_summary

NODE = "demo-eu-west-1"


def node_with_rows(tmp_path: Path, rows: int) -> EdgeNode:
    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE sensor_readings (id INTEGER PRIMARY KEY, sensor_id TEXT)")
    ids = [(i,) for i in range(1, rows + 1)]
    conn.executemany("INSERT INTO sensor_readings VALUES (?, 's')", ids)
    conn.commit()
    conn.close()
    return EdgeNode("eu-west-1", NODE, db, seed=1, start_rowid=0)


def raw_table(rowids: list[int]) -> pa.Table:
    return pa.table({"_node_id": [NODE] * len(rowids), "_source_rowid": rowids})


def summary(node: EdgeNode, raw: pa.Table, in_flight: InFlight | None) -> str:
    report = LakeReport(
        counts={label: {} for label in (*ROUTES, "regional")},
        uris={label: f"s3://lake/{label}" for label in (*ROUTES, "regional", "dlq")},
        checks=[check_node(node, raw, in_flight)],
        latencies_s=[],
        dead_letters=0,
        backlog=0,
    )
    out = io.StringIO()
    print_summary(out, "run", [node], report, "s3://lake", {"streaming": 1.0}, flush_s=2.0)
    return out.getvalue()


def test_rows_still_in_flight_are_counted_apart_and_never_called_missing(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    # Rows 1-6 landed; 7 and 8 are in Kafka past the committed offsets; 9 and 10 are after
    # the producer's checkpoint, still only in SQLite.
    held = InFlight(checkpoints={NODE: 8}, in_kafka={NODE: {7, 8}})
    check = check_node(node, raw_table([1, 2, 3, 4, 5, 6]), held)
    assert (check.written, check.landed, check.in_flight, check.missing) == (10, 6, 4, 0)
    assert not check.ok and not check.broken

    text = summary(node, raw_table([1, 2, 3, 4, 5, 6]), held)
    assert "exactly once      INCOMPLETE: 6 of 10 rows" in text
    assert "4 rows still in flight" in text
    assert f"{NODE}: 4 in flight, 0 missing, 0 duplicated" in text
    assert "FAILED" not in text


def test_a_row_the_pipeline_committed_past_is_missing(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    # Row 7 is nowhere: the producer's checkpoint and the groups' offsets are past it.
    held = InFlight(checkpoints={NODE: 8}, in_kafka={NODE: {8}})
    check = check_node(node, raw_table([1, 2, 3, 4, 5, 6]), held)
    assert (check.in_flight, check.missing, check.missing_sample) == (3, 1, [7])
    assert check.broken

    text = summary(node, raw_table([1, 2, 3, 4, 5, 6]), held)
    assert "exactly once      FAILED: 6 of 10 rows" in text
    assert f"{NODE}: 3 in flight, 1 missing (e.g. rowids [7]), 0 duplicated" in text


def test_a_duplicate_fails_even_with_rows_in_flight(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    held = InFlight(checkpoints={NODE: 6}, in_kafka={})
    text = summary(node, raw_table([1, 2, 3, 3, 4, 5, 6]), held)
    assert "exactly once      FAILED: 6 of 10 rows" in text
    assert "are in the raw table, 1 duplicated" in text
    assert f"{NODE}: 4 in flight, 0 missing, 1 duplicated" in text


def test_every_row_landed_once_is_ok(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    text = summary(node, raw_table(list(range(1, 11))), InFlight(checkpoints={NODE: 10}))
    assert "exactly once      OK: 10 of 10 rows" in text
    assert "in flight" not in text and "missing" not in text


def test_without_knowing_what_is_in_flight_every_absent_row_is_missing(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    check = check_node(node, raw_table([1, 2, 3]), None)
    assert (check.in_flight, check.missing, check.missing_sample) == (0, 7, [4, 5, 6, 7, 8, 9, 10])


def audited_summary(node: EdgeNode, audit: AuditReport, held: InFlight) -> str:
    report = LakeReport(
        counts={label: {} for label in (*ROUTES, "regional")},
        uris={label: f"s3://lake/{label}" for label in (*ROUTES, "regional", "dlq")},
        checks=[check_node(node, raw_table(list(range(1, 11))), held)],
        latencies_s=[],
        dead_letters=0,
        backlog=0,
        audit=audit_findings(audit, held),
    )
    out = io.StringIO()
    print_summary(out, "run", [node], report, "s3://lake", {"streaming": 1.0}, flush_s=2.0)
    return out.getvalue()


def test_the_summary_states_the_audit_of_the_whole_lake(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    held = InFlight(checkpoints={NODE: 10})
    exact = AuditReport("s3://lake", tallies=[Tally(NODE, "sensor_readings", True, 10, 10)])
    text = audited_summary(node, exact, held)
    assert "exactly once      OK" in text
    assert "audit             EXACT" in text


def test_a_duplicate_the_audit_finds_in_a_routed_table_fails_the_run(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    held = InFlight(checkpoints={NODE: 10})
    audit = AuditReport("s3://lake", duplicate_count={"emergency": 1})
    audit.duplicates.append(
        Duplicate("emergency", NODE, "sensor_readings", 4, [Copy("t", 0, 5, 1), Copy("t", 0, 5, 2)])
    )
    audit.duplicate_spans.append(Span("emergency", NODE, "sensor_readings", 1, 4, 4))
    text = audited_summary(node, audit, held)
    assert "exactly once      FAILED" in text
    assert f"emergency: {NODE}/sensor_readings 1 extra copies, rowids 4-4" in text


def test_rows_the_audit_misses_that_are_in_flight_do_not_fail_the_run(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    held = InFlight(checkpoints={NODE: 10}, in_kafka={NODE: {9, 10}})
    short = Tally(NODE, "sensor_readings", True, 10, 10, in_raw=8, missing=2)
    short.missing_ranges = [(9, 10)]
    text = audited_summary(node, AuditReport("s3://lake", tallies=[short]), held)
    assert "FAILED" not in text
    assert "audit             EXACT but for 2 rows in flight" in text
    lost = Tally(NODE, "sensor_readings", True, 10, 10, in_raw=8, missing=2)
    lost.missing_ranges = [(3, 4)]
    text = audited_summary(node, AuditReport("s3://lake", tallies=[lost]), held)
    assert "exactly once      FAILED" in text
    assert f"{NODE}/sensor_readings: rowid 3 sent but neither in raw" in text


def test_discrepancies_in_rows_of_earlier_runs_are_shown_without_failing_this_run(tmp_path):
    """The demo's lake keeps every run: a duplicate an earlier run left is reported, but this
    run's rows are exact."""
    node = node_with_rows(tmp_path, 10)
    held = InFlight(checkpoints={NODE: 10})
    audit = AuditReport("s3://lake", duplicate_count={"raw": 2})
    audit.duplicate_spans.append(Span("raw", NODE, "sensor_readings", 2, 3, 4))
    report = LakeReport(
        counts={label: {} for label in (*ROUTES, "regional")},
        uris={label: f"s3://lake/{label}" for label in (*ROUTES, "regional", "dlq")},
        checks=[check_node(node, raw_table(list(range(1, 11))), held)],
        latencies_s=[],
        dead_letters=0,
        backlog=0,
        audit=audit_findings(audit, held, lambda _node, rowid: rowid > 5),
    )
    out = io.StringIO()
    print_summary(out, "run", [node], report, "s3://lake", {"streaming": 1.0}, flush_s=2.0)
    text = out.getvalue()
    assert "exactly once      OK" in text
    assert "and 1 discrepancies in rows of earlier runs" in text
    assert f"raw: {NODE}/sensor_readings 2 extra copies, rowids 3-4" in text
