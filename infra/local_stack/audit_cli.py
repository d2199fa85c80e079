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


def findings(report: Mapping[str, Any]) -> list[str]:
    """Every discrepancy of a JSON report, one line each (the lines a failed run shows)."""
    lines = [
        f"{sp['table']}: {sp['node_id']}/{sp['source_table']} {sp['rows']} extra copies, "
        f"rowids {sp['min_rowid']}-{sp['max_rowid']}"
        for sp in report["duplicate_spans"]
    ]
    spanned = {sp["table"] for sp in report["duplicate_spans"]}
    lines += [
        f"{table}: {extra} extra copies"
        for table, extra in sorted(report["duplicate_count"].items())
        if table not in spanned
    ]
    lines += [
        f"{sp['table']}: {sp['node_id']}/{sp['source_table']} {sp['rows']} rows not in raw, "
        f"rowids {sp['min_rowid']}-{sp['max_rowid']}"
        for sp in report["not_in_raw_spans"]
    ]
    lines += [f"{t}: {n} rows without provenance" for t, n in report["unidentified"].items()]
    lines += [f"unreadable checkpoint {key}" for key in report["unreadable_checkpoints"]]
    for tally in report["tallies"]:
        name = f"{tally['node_id']}/{tally['source_table']}"
        lines += [f"{name}: {problem}" for problem in tally["problems"]]
        if tally["missing_ranges"]:
            ranges = ", ".join(f"{a}-{b}" for a, b in tally["missing_ranges"])
            lines.append(f"{name}: missing rowids {ranges}")
        if report["settled"] and tally["in_flight"]:
            lines.append(f"{name}: {tally['in_flight']} rows sent, still in flight")
    for row in report["edge"]:
        lines.append(
            f"{row['node_id']}/{row['source_table']} rowid {row['rowid']}: {row['problem']}"
        )
    if report["edge_count"] > len(report["edge"]):
        lines.append(f"... {report['edge_count'] - len(report['edge'])} more edge rows")
    if report["settled"]:
        for t in report["edge_tallies"]:
            late = t["in_flight"] + t["route_in_flight"]
            if late or t["not_yet_sent"]:
                lines.append(
                    f"edge {t['node_id']}/{t['source_table']}: {t['not_yet_sent']} rows not yet "
                    f"sent, {late} in flight"
                )
    return lines
