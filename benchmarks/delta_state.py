"""Delta writer memory over many commits (issue 5): does a long-running sink's table state grow?

    uv run python -m benchmarks.delta_state [--commits 3000] [--out FILE]

Results go to benchmarks/results/delta_state.json unless --out says otherwise.

The sink commits its emergency table every second, 86,400 times a day. Each variant runs in a
fresh process: one `DeltaTableWriter` makes `--commits` commits of 1,000 rows (with their txn
versions, checkpoints every 100 commits, as the product writes them) to a table on a local
path, and its resident memory (VmRSS) is read every `--every` commits.

- writer: the product's writer, which opens its table afresh after each checkpoint.
- baseline, same run: the same writer with that reopening switched off: one `DeltaTable` kept
  up to date with `update_incremental`, as the writer did before.

Judged: RSS growth per 1,000 commits over the last two thirds of the run (the first third
warms up: allocator pools, caches), as a ratio of the writer's to the baseline's (the target,
< 0.25, says the growth is gone rather than slower), and the writer's median commit time
against the baseline's (reopening must not make commits slower: at most 1.2 times).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import harness

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "delta_state.json"
TOPIC = "bench.raw"
ROWS = 1000
TARGETS = {"growth_ratio": 0.25, "commit_time_ratio": 1.2}


def _worker(spec: dict[str, Any]) -> None:
    import pyarrow as pa

    from sinks.delta_writer import DeltaTableWriter
    from sinks.settings import SinkSettings
    from sinks.tables import target_for

    target = target_for(TOPIC, SinkSettings(topics=[TOPIC], topic_prefix="bench."), spec["lake"])
    writer = DeltaTableWriter(
        target,
        None,
        checkpoint_interval=100,
        reopen_after_checkpoint=spec["variant"] != "baseline",  # baseline: the writer before
    )
    values = [f"sensor-{i % 20:02d}" for i in range(ROWS)]
    readings, seconds = [], []
    for commit in range(spec["commits"]):
        first = commit * ROWS
        offsets = pa.array(range(first, first + ROWS), pa.int64())
        data = pa.table(
            {
                "sensor_id": pa.array(values, pa.string()),
                "value": pa.array([float(i) for i in range(ROWS)], pa.float64()),
                "_kafka_topic": pa.array([TOPIC] * ROWS, pa.string()),
                "_kafka_partition": pa.array([0] * ROWS, pa.int32()),
                "_kafka_offset": offsets,
                "event_date": pa.array([date(2026, 11, 23)] * ROWS, pa.date32()),
            }
        )
        started = time.perf_counter()
        writer.write(data, {(TOPIC, 0): first + ROWS - 1})
        seconds.append(time.perf_counter() - started)
        if (commit + 1) % spec["every"] == 0:
            readings.append((commit + 1, round(harness.vm_mb("VmRSS"), 1)))
    harness.emit({"rss_mb": readings, "median_commit_ms": 1000 * statistics.median(seconds)})


def _run(variant: str, commits: int, every: int) -> dict[str, Any]:
    lake = tempfile.mkdtemp(prefix=f"delta-state-{variant}-")
    try:
        spec = {"variant": variant, "commits": commits, "every": every, "lake": lake}
        command = [sys.executable, "-m", "benchmarks.delta_state", "--worker", json.dumps(spec)]
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
        result = harness.parse_worker_output(out)
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    readings = result["rss_mb"]
    (first_at, first), (last_at, last) = readings[len(readings) // 3], readings[-1]
    result["growth_mb_per_1000_commits"] = 1000 * (last - first) / (last_at - first_at)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delta_state")
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250, help="read RSS every N commits")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return 0
    started = time.perf_counter()
    # baseline, writer, baseline: the machine's drift shows as a difference between baselines
    runs = {}
    order = (("baseline", "baseline"), ("writer", "writer"), ("baseline2", "baseline"))
    for name, variant in order:
        print(f"[delta-state] {name}: {args.commits:,} commits", file=sys.stderr, flush=True)
        runs[name] = _run(variant, args.commits, args.every)
    baseline = min(
        (runs["baseline"], runs["baseline2"]), key=lambda r: r["growth_mb_per_1000_commits"]
    )
    writer = runs["writer"]
    growth = writer["growth_mb_per_1000_commits"] / baseline["growth_mb_per_1000_commits"]
    commit_time = writer["median_commit_ms"] / min(
        runs["baseline"]["median_commit_ms"], runs["baseline2"]["median_commit_ms"]
    )
    results = {
        "benchmark": "delta_state",
        "machine": harness.machine_info(),
        "params": {"commits": args.commits, "rows_per_commit": ROWS, "checkpoint_interval": 100},
        "runs": runs,
        "ratios": {
            "growth_writer_vs_baseline": growth,
            "commit_time_writer_vs_baseline": commit_time,
        },
        "targets": {
            "growth_ratio": {
                "target": f"< {TARGETS['growth_ratio']}",
                "met": growth < TARGETS["growth_ratio"],
            },
            "commit_time_ratio": {
                "target": f"<= {TARGETS['commit_time_ratio']}",
                "met": commit_time <= TARGETS["commit_time_ratio"],
            },
        },
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    for name, run in runs.items():
        print(
            f"{name:<10} RSS {run['rss_mb'][0][1]:,.0f} -> {run['rss_mb'][-1][1]:,.0f} MB "
            f"({run['growth_mb_per_1000_commits']:+.1f} MB per 1,000 commits), "
            f"median commit {run['median_commit_ms']:.1f} ms"
        )
    print(
        f"growth writer / baseline {growth:.2f} (target < {TARGETS['growth_ratio']}); "
        f"commit time {commit_time:.2f} (target <= {TARGETS['commit_time_ratio']})"
    )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
