"""`sensorstream audit` run the way an operator runs it: as its own process, with the
pipeline's environment, answering in JSON. The demo, the chaos run and the integration tests
prove exactly-once with it and with nothing else, so the check they trust is the one shipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AUDIT_TIMEOUT_S = 900.0  # a loaded machine reading a lake and topics over S3 and Kafka


class AuditFailed(RuntimeError):
    """The audit itself did not run (bad usage, broker or S3 unreachable): no verdict."""


def run_audit(
    env: Mapping[str, str],
    *flags: str,
    sqlite: Path | None = None,
    node_id: str | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """The audit's JSON report, with its exit code as `exit_code` (0 exact, 1 findings).

    `env` is added to this process's environment (the connection and the components'
    settings: consumer groups, topics); `sqlite` and `node_id` check every row of one node.
    """
    command = [sys.executable, "-m", "sensorstream", "audit", "--json", *flags]
    if sqlite is not None:
        command += ["--sqlite", str(sqlite), "--node-id", str(node_id)]
    done = subprocess.run(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=AUDIT_TIMEOUT_S,
    )
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise AuditFailed(
            f"`{' '.join(command[2:])}` exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    report = json.loads(done.stdout)
    report["exit_code"] = done.returncode
    return report


Located = tuple[str, str | None, int | None]
"""A finding's line, and the node and highest rowid it is about (None: it names none)."""


def located_findings(report: Mapping[str, Any]) -> list[Located]:
    """Every discrepancy of a JSON report: its line, and the node and rowid it names."""
    found: list[Located] = []

    def spans(key: str, what: str) -> None:
        for sp in report[key]:
            line = (
                f"{sp['table']}: {sp['node_id']}/{sp['source_table']} {sp['rows']} {what}, "
                f"rowids {sp['min_rowid']}-{sp['max_rowid']}"
            )
            found.append((line, sp["node_id"], sp["max_rowid"]))

    spans("duplicate_spans", "extra copies")
    spanned = {sp["table"] for sp in report["duplicate_spans"]}
    for table, extra in sorted(report["duplicate_count"].items()):
        if table not in spanned:  # the dead-letter table: its duplicates one by one
            found.append((f"{table}: {extra} extra copies", None, None))
    spans("not_in_raw_spans", "rows not in raw")
    found += [
        (f"{t}: {n} rows without provenance", None, None) for t, n in report["unidentified"].items()
    ]
    found += [
        (f"unreadable checkpoint {key}", None, None) for key in report["unreadable_checkpoints"]
    ]
    for tally in report["tallies"]:
        node, name = tally["node_id"], f"{tally['node_id']}/{tally['source_table']}"
        for problem in tally["problems"]:
            if tally["missing_ranges"] and "neither in raw" in problem:
                continue  # the line naming the rowids says it
            found.append((f"{name}: {problem}", None, None))
        for first, last in tally["missing_ranges"]:
            rows = str(first) if first == last else f"{first}-{last}"
            line = f"{name}: rowids {rows} sent but neither in raw nor dead-lettered"
            found.append((line, node, last))
        if report["settled"] and tally["in_flight"]:
            found.append((f"{name}: {tally['in_flight']} rows sent, still in flight", None, None))
    for row in report["edge"]:
        line = f"{row['node_id']}/{row['source_table']} rowid {row['rowid']}: {row['problem']}"
        found.append((line, row["node_id"], row["rowid"]))
    if report["edge_count"] > len(report["edge"]):
        found.append(
            (f"... {report['edge_count'] - len(report['edge'])} more edge rows", None, None)
        )
    if report["settled"]:
        for t in report["edge_tallies"]:
            late = t["in_flight"] + t["route_in_flight"]
            if late or t["not_yet_sent"]:
                line = (
                    f"edge {t['node_id']}/{t['source_table']}: {t['not_yet_sent']} rows not "
                    f"yet sent, {late} in flight"
                )
                found.append((line, None, None))
    return found


def findings(report: Mapping[str, Any]) -> list[str]:
    """Every discrepancy of a JSON report, one line each (the lines a failed run shows)."""
    return [line for line, _, _ in located_findings(report)]


def unproven(report: Mapping[str, Any]) -> list[str]:
    """Why a report of `--settled` (with `--sqlite`) does not prove exactly-once: its findings,
    and what would leave rows unchecked (checkpoints or rows in flight not read, rows whose
    routing version the audit could not read, rows of the database not checked)."""
    lines = findings(report)
    if report["exit_code"] != 0 and not lines:
        lines.append(f"exit {report['exit_code']} with {report['discrepancies']} discrepancies")
    if not report["settled"]:
        lines.append("not audited as settled: rows in flight would pass")
    if not (report["checkpoints_read"] and report["in_flight_read"]):
        lines.append("the producers' checkpoints or the rows in flight were not read")
    for t in report["edge_tallies"]:
        name = f"edge {t['node_id']}/{t['source_table']}"
        if not 0 < t["checked"] == t["source_rows"]:
            lines.append(f"{name}: {t['checked']} of {t['source_rows']} rows checked")
        if t["route_unknown_version"] or t["route_checked"] != t["in_raw"]:
            lines.append(
                f"{name}: routes checked for {t['route_checked']} of {t['in_raw']} rows in raw "
                f"({t['route_unknown_version']} without a routing version the audit can read)"
            )
    return lines
