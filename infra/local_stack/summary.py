"""The end of a demo run: a table of rows per route and region, latency, the exactly-once
verdict, where the tables are, and a query to try on them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

from infra.local_stack.display import count, grid, shown
from infra.local_stack.lake_report import LakeReport
from infra.local_stack.pipeline import ROUTES, EdgeNode
from sinks.settings import TableSettings

DEFAULT_FLUSH_S = TableSettings.model_fields["max_latency_s"].default

AUDIT_LINES = 8  # audit findings printed in the summary


def uv_command() -> str:
    """How the printed commands call uv: `uv` when the shell finds one on PATH, otherwise the
    uv running the demo (`uv run` sets UV), which `make` installs under .tools/ on a machine
    without uv; relative to the working directory, the repository root, when it is inside it.
    A newcomer pastes the commands as printed, so they must name a uv that exists."""
    if shutil.which("uv"):
        return "uv"
    running = os.environ.get("UV")
    if not running:
        return "uv"
    path = Path(running).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def example_query(lake_uri: str) -> str:
    """A copy-pasteable one-liner: alerts per region and severity from the emergency table.

    polars reads Delta through deltalake. The one-liner ends with os._exit: deltalake can abort
    a process at exit after reading over S3 (delta-rs issue 2184), which would print a scary
    trace after the right answer.
    """
    code = (
        "import os, polars as pl; "
        "opts = {k: v for k, v in os.environ.items() if k.startswith('AWS_')}; "
        f"t = pl.read_delta('{lake_uri.rstrip('/')}/emergency', storage_options=opts); "
        "print(t.group_by('_region', 'severity').len().sort('_region', 'severity'), flush=True); "
        "os._exit(0)"
    )
    return f'{uv_command()} run python -c "{code}"'


def verdict(report: LakeReport) -> str:
    """`sensorstream audit`'s verdict on this run. OK: every row landed once. FAILED: the
    audit found a discrepancy in this run's rows. INCOMPLETE: nothing lost or doubled, but rows
    still in flight (the pipeline was stopped before landing them)."""
    audit_failed = report.audit is None or not report.audit.exact
    if any(c.broken for c in report.checks) or audit_failed:
        return "FAILED"
    if all(c.ok for c in report.checks) and not report.audit.in_flight:
        return "OK"
    return "INCOMPLETE"


def print_summary(
    out: IO[str],
    run_id: str,
    nodes: list[EdgeNode],
    report: LakeReport,
    lake_uri: str,
    timings: dict[str, float],
    flush_s: float,
) -> None:
    """The summary of one run; `flush_s` is the flush latency the run gave its sinks."""
    regions = [n.region for n in nodes]

    def p(line: str = "") -> None:
        print(line, file=out)

    p()
    p(f"sensorstream demo: summary of run {run_id} ({len(nodes)} edge nodes, this run's rows)")
    p()
    rows = [["Delta table", *regions, "total", "URI"]]
    for label in (*ROUTES, "regional"):
        cells = [report.counts[label].get(r, 0) for r in regions]
        rows.append([label, *map(count, cells), count(sum(cells)), report.uris[label]])
    written = [c.written for c in report.checks]
    db_dir = shown(nodes[0].db.parent)
    rows.append(["SQLite", *map(count, written), count(sum(written)), f"{db_dir}/<node>.db"])
    # The URIs go last, left-aligned, after the aligned numbers.
    for line, row in zip(grid([row[:-1] for row in rows]), rows, strict=True):
        p(f"{line}  {row[-1]}")
    p()
    p(
        f"  dead letters      {count(report.dead_letters)} landed in {report.uris['dlq']} "
        "during this run"
    )
    if report.latencies_s:
        p50, p99, worst = report.latencies_s
        p(
            f"  latency           p50 {p50:.1f} s, p99 {p99:.1f} s, max {worst:.1f} s from SQLite "
            f"insert to Delta commit (raw table;\n                    the demo's sink flushes "
            f"every {flush_s:g} s, its default is {DEFAULT_FLUSH_S:g} s)"
        )
    total = sum(c.written for c in report.checks)
    landed = sum(c.landed for c in report.checks)
    dups = sum(c.duplicates for c in report.checks)
    p(
        f"  exactly once      {verdict(report)}: {count(landed)} of {count(total)} rows "
        f"written to SQLite are in the raw table, {count(dups)} duplicated"
    )
    in_flight = sum(c.in_flight for c in report.checks)
    if in_flight:
        p(
            f"    {count(in_flight)} rows still in flight: in SQLite or Kafka, not yet landed, "
            "not lost;\n    they land when the pipeline runs again (the next `make demo`)"
        )
    for check in report.checks:
        if not check.ok:
            missing = f"{count(check.missing)} missing"
            if check.missing_sample:
                missing += f" (e.g. rowids {check.missing_sample})"
            p(
                f"    {check.node.node_id}: {count(check.in_flight)} in flight, {missing}, "
                f"{count(check.duplicates)} duplicated"
            )
    if report.audit is not None:
        audit = report.audit
        if audit.exact:
            late = f" but for {count(audit.in_flight)} rows in flight" if audit.in_flight else ""
            p(f"  audit             EXACT{late} (`sensorstream audit`: every table of the lake)")
            if audit.earlier:
                p(
                    f"    and {len(audit.earlier)} discrepancies in rows of earlier runs "
                    "(run `sensorstream audit`; docs/runbook.md says what to do), e.g."
                )
                for line in audit.earlier[:3]:
                    p(f"    {line}")
        else:
            p(
                f"  audit             {len(audit.findings)} discrepancies "
                "(`sensorstream audit`: every table of the lake; docs/runbook.md says what to do)"
            )
            for line in audit.findings[:AUDIT_LINES]:
                p(f"    {line}")
    if report.backlog:
        p(f"  also landed       {count(report.backlog)} rows an earlier, interrupted run had left")
    phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items())
    p(f"  time              {sum(timings.values()):.0f} s ({phases})")
    p("  logs              .stack/logs/demo-*.log")
    p()
    p("  Query it (alerts per region and severity):")
    p(f'    eval "$({uv_command()} run sensorstream stack env)"')
    p(f"    {example_query(lake_uri)}")
    p("  The stack keeps running for the next run; stop it with: make stack-down")
    out.flush()
