"""The audit's findings for a person (a summary that names every kind of discrepancy and what
it means) and for scripts (`--json`)."""

from __future__ import annotations

import json
from typing import IO

from audit.findings import AuditReport


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def print_json(report: AuditReport, out: IO[str]) -> None:
    json.dump(report.to_json(), out, indent=2, default=str)
    out.write("\n")


def print_summary(report: AuditReport, out: IO[str]) -> None:
    def p(line: str = "") -> None:
        print(line, file=out)

    p(f"sensorstream audit of {report.lake_uri}")
    for name, version in report.tables.items():
        p(f"  {name:<24} version {version:<6} {report.rows.get(name, 0):>12,} rows")
    if not report.tables:
        p("  (no Delta tables yet)")
    p()
    if report.duplicate_count:
        p("DUPLICATES (the same source row more than once in a table):")
        for name, extra in sorted(report.duplicate_count.items()):
            p(f"  {name}: {extra} extra copies")
        for d in report.duplicates:
            where = "; ".join(
                f"{c.topic}[{c.partition}]@{c.offset} version "
                + ("?" if c.version is None else str(c.version))
                for c in d.copies
            )
            row = f"{d.node_id}/{d.source_table} rowid {d.rowid}"
            p(f"    {d.table}: {row} x{len(d.copies)}: {where}")
    if report.not_in_raw_count:
        p("ROUTED ROWS NOT IN RAW (every routed row must be a row of raw):")
        for name, n in sorted(report.not_in_raw_count.items()):
            p(f"  {name}: {n} rows")
        for r in report.not_in_raw:
            p(f"    {r.table}: {r.node_id}/{r.source_table} rowid {r.rowid}")
    for name, n in sorted(report.unidentified.items()):
        p(f"ROWS WITHOUT PROVENANCE: {name}: {n} rows lack _node_id/_source_table/_source_rowid")
    for key in report.unreadable_checkpoints:
        p(f"UNREADABLE CHECKPOINT: {key}")
    problems = [t for t in report.tallies if t.problems]
    if problems:
        p("NODES WHOSE ROWS DO NOT ADD UP (producer checkpoint vs raw + dead letters):")
        for t in problems:
            p(f"  {t.node_id}/{t.source_table}: " + "; ".join(t.problems))
            if t.missing_ranges:
                p(f"    missing rowids: {_ranges(t.missing_ranges)}")
    if report.unsettled:
        p("ROWS NOT LANDED ALTHOUGH THE PIPELINE IS SETTLED (--settled):")
        for t in report.tallies:
            if t.in_flight:
                p(f"  {t.node_id}/{t.source_table}: {t.in_flight} rows sent, still in flight")
        for t in report.edge_tallies:
            late = t.in_flight + t.route_in_flight
            if late or t.not_yet_sent:
                p(
                    f"  edge {t.node_id}/{t.source_table}: {t.not_yet_sent} rows not yet sent, "
                    f"{late} still in flight"
                )
    if report.edge_count:
        p(f"EDGE ROWS NOT WHERE EXACTLY-ONCE PUTS THEM: {report.edge_count}")
        for edge in report.edge:
            p(f"  {edge}")
    for t in report.edge_tallies:
        p(
            f"edge {t.node_id}/{t.source_table}: {t.source_rows:,} rows in the database, "
            f"{t.checked:,} checked ({t.in_raw:,} in raw, {t.dead_lettered:,} dead-lettered), "
            f"{t.in_flight:,} in flight, {t.not_yet_sent:,} not yet sent, "
            f"{t.pruned_at_edge:,} pruned at the edge; {t.route_in_flight:,} routed rows in "
            "flight; routes "
            f"checked for {t.route_checked:,} rows ({t.route_unknown_version:,} without a known "
            "routing version)"
        )
    p()
    nodes = len(report.tallies)
    sent = sum(t.rows_sent or 0 for t in report.tallies)
    landed = sum(t.in_raw for t in report.tallies)
    dead = sum(t.dead_lettered for t in report.tallies)
    if report.checkpoints_read:
        late = sum(t.in_flight for t in report.tallies)
        flight = f", {late:,} in flight" if report.in_flight_read else " (in flight not read)"
        p(
            f"per node: {nodes} node tables; {sent:,} rows sent by their producers, "
            f"{landed:,} in raw, {dead:,} dead-lettered at the edge{flight}"
        )
    else:
        p(f"per node: {nodes} node tables, {landed:,} rows in raw (checkpoints not read)")
    if report.dead_letters:
        p("dead letters by stage and reason:")
        for c in report.dead_letters:
            p(f"  {c.stage:<9} {c.count:>9,}  {c.reason}")
    if report.exit_code:
        verdict = (
            f"DISCREPANCIES: {report.discrepancies} (see above; docs/runbook.md says what to do)"
        )
    elif report.in_flight:
        verdict = (
            f"EXACT but for {report.in_flight:,} rows in flight (sent, not landed yet: late, "
            "not lost; --settled after a drain makes them findings)"
        )
    else:
        verdict = "EXACT: every row once in every table"
    p(f"audit: {verdict}")
    out.flush()
