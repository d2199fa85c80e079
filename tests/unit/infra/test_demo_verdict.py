"""The demo's exactly-once verdict is the audit's, and tells rows still in flight from rows lost.

A demo stopped before its pipeline caught up leaves rows in SQLite or Kafka that land on the
next run; calling them missing ("exactly once FAILED") would accuse the product of a loss it
did not have. These tests build a node's real SQLite file and the JSON report
`sensorstream audit` gives for its lake (from the audit's own report classes).
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from audit.findings import AuditReport, Span, Tally
from infra.local_stack.exactly_once import audit_verdict, check_node, this_run_of
from infra.local_stack.lake_report import LakeReport
from infra.local_stack.pipeline import ROUTES, EdgeNode
from infra.local_stack.summary import print_summary, verdict

NODE = "demo-eu-west-1"
TABLE = "sensor_readings"


def node_with_rows(tmp_path: Path, rows: int, start_rowid: int = 0) -> EdgeNode:
    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE sensor_readings (id INTEGER PRIMARY KEY, sensor_id TEXT)")
    ids = [(i,) for i in range(1, rows + 1)]
    conn.executemany("INSERT INTO sensor_readings VALUES (?, 's')", ids)
    conn.commit()
    conn.close()
    return EdgeNode("eu-west-1", NODE, db, seed=1, start_rowid=start_rowid)


def audited(
    last_rowid: int,
    in_raw: int,
    in_flight: int = 0,
    missing: tuple[int, ...] = (),
    report: AuditReport | None = None,
) -> dict:
    """The JSON report of `sensorstream audit` for the node, whose producer's checkpoint is
    at `last_rowid`."""
    report = report or AuditReport("s3://lake")
    tally = Tally(NODE, TABLE, True, last_rowid, last_rowid, 0, in_raw=in_raw)
    tally.in_flight, tally.missing = in_flight, len(missing)
    tally.missing_ranges = [(r, r) for r in missing]
    report.tallies.append(tally)
    data = report.to_json()
    data["exit_code"] = report.exit_code
    return data


def summary(node: EdgeNode, landed: int, audit: dict) -> tuple[str, LakeReport]:
    report = LakeReport(
        counts={label: {} for label in (*ROUTES, "regional")},
        uris={label: f"s3://lake/{label}" for label in (*ROUTES, "regional", "dlq")},
        checks=[check_node(node, landed, audit)],
        latencies_s=[],
        dead_letters=0,
        backlog=0,
        audit=audit_verdict(audit, this_run_of([node])),
    )
    out = io.StringIO()
    print_summary(out, "run", [node], report, "s3://lake", {"streaming": 1.0}, flush_s=2.0)
    return out.getvalue(), report


def test_rows_still_in_flight_are_counted_apart_and_never_called_missing(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    # Rows 1-6 landed; 7 and 8 are in Kafka past the committed offsets; 9 and 10 are after
    # the producer's checkpoint, still only in SQLite.
    text, report = summary(node, 6, audited(8, in_raw=6, in_flight=2))
    check = report.checks[0]
    assert (check.written, check.landed, check.in_flight, check.missing) == (10, 6, 4, 0)
    assert not check.ok and not check.broken
    assert verdict(report) == "INCOMPLETE"
    assert "exactly once      INCOMPLETE: 6 of 10 rows" in text
    assert "4 rows still in flight" in text
    assert f"{NODE}: 4 in flight, 0 missing, 0 duplicated" in text
    assert "audit             EXACT but for 2 rows in flight" in text
    assert "FAILED" not in text


def test_a_row_the_audit_finds_missing_fails_the_run(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    text, report = summary(node, 6, audited(8, in_raw=6, in_flight=1, missing=(7,)))
    check = report.checks[0]
    assert (check.in_flight, check.missing, check.missing_sample) == (3, 1, [7])
    assert check.broken and verdict(report) == "FAILED"
    assert "exactly once      FAILED: 6 of 10 rows" in text
    assert f"{NODE}: 3 in flight, 1 missing (e.g. rowids [7]), 0 duplicated" in text
    assert f"{NODE}/{TABLE}: rowids 7 sent but neither in raw nor dead-lettered" in text


def test_a_duplicate_fails_even_with_rows_in_flight(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    raw = AuditReport("s3://lake", duplicate_count={"raw": 1})
    raw.duplicate_spans.append(Span("raw", NODE, TABLE, 1, 3, 3))
    text, report = summary(node, 6, audited(6, in_raw=6, report=raw))
    assert verdict(report) == "FAILED"
    assert "exactly once      FAILED: 6 of 10 rows" in text
    assert "are in the raw table, 1 duplicated" in text
    assert f"{NODE}: 4 in flight, 0 missing, 1 duplicated" in text


def test_every_row_landed_once_is_ok(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    text, report = summary(node, 10, audited(10, in_raw=10))
    assert verdict(report) == "OK"
    assert "exactly once      OK: 10 of 10 rows" in text
    assert "audit             EXACT (`sensorstream audit`" in text
    assert "in flight" not in text and "missing" not in text


def test_a_duplicate_the_audit_finds_in_a_routed_table_fails_the_run(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    lake = AuditReport("s3://lake", duplicate_count={"emergency": 1})
    lake.duplicate_spans.append(Span("emergency", NODE, TABLE, 1, 4, 4))
    text, report = summary(node, 10, audited(10, in_raw=10, report=lake))
    assert verdict(report) == "FAILED"
    assert "exactly once      FAILED" in text
    assert f"emergency: {NODE}/{TABLE} 1 extra copies, rowids 4-4" in text


def test_discrepancies_in_rows_of_earlier_runs_are_shown_without_failing_this_run(tmp_path):
    """The demo's lake keeps every run: a duplicate an earlier run left is reported, but this
    run's rows are exact."""
    node = node_with_rows(tmp_path, 10, start_rowid=5)
    lake = AuditReport("s3://lake", duplicate_count={"raw": 2})
    lake.duplicate_spans.append(Span("raw", NODE, TABLE, 2, 3, 4))
    text, report = summary(node, 5, audited(10, in_raw=10, report=lake))
    assert verdict(report) == "OK"
    assert "exactly once      OK" in text
    assert "and 1 discrepancies in rows of earlier runs" in text
    assert f"raw: {NODE}/{TABLE} 2 extra copies, rowids 3-4" in text


def test_without_an_audit_there_is_no_ok(tmp_path) -> None:
    node = node_with_rows(tmp_path, 10)
    _, report = summary(node, 10, audited(10, in_raw=10))
    report = LakeReport(**{**report.__dict__, "audit": None})
    assert verdict(report) == "FAILED"
