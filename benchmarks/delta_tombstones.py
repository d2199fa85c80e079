"""Delta tombstones benchmark: what a week of continuous compaction leaves in a table's log.

    uv run python -m benchmarks.delta_tombstones                    # ~1 min, local tables
    uv run python -m benchmarks.delta_tombstones --flush-s 1        # a table committed every second

Every file a sink commits is compacted away sooner or later, and each removal stays in the
table's state, so in every checkpoint, until it is older than the table's
`delta.deletedFileRetentionDuration` (7 days unless set). A table committing a file every
`--flush-s` seconds therefore holds about 86,400 / flush-s removals per retention day, however
small compaction keeps its live files. `benchmarks.delta_log` measures opens after many
commits without compaction; this one measures what those removals cost, at the retentions
given (`--retention-days`, default 7 and 1):

- the checkpoint's size, and the CPU it takes to write it (the sink writes one every 20
  commits: about a minute at 3 s flushes);
- opening the table at its worst case, 19 commits after the checkpoint, as a reader or a
  restarting sink does (median of `--opens`), against a fresh table with the same commits and
  no removals, built and opened in the same run.

The removals are made by registering `add` actions for files that are never written, then
deleting every row (a metadata-only `remove` per file): the log is the same as compaction's,
without writing and reading the data. Results: benchmarks/results/delta_tombstones.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import AddAction

from benchmarks import harness
from sinks.delta_writer import DeltaTableWriter
from sinks.settings import SinkSettings
from sinks.table_log import DEFAULT_CHECKPOINT_INTERVAL
from sinks.tables import target_for

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "delta_tombstones.json"
OPEN_TARGET = 1.5
"""Opening a table that commits for days at most this many times a fresh one's open."""
ADDS_PER_COMMIT = 50_000
"""Registered files per add commit while building (one huge commit is slow to write)."""
TOPIC = "sensors.raw"
BATCH_ROWS = 300
"""Rows per sink commit in the writer's part: a route's 3 s at 100 rows/s."""
STATS = '{"numRecords":300,"minValues":{"v":1},"maxValues":{"v":300},"nullCount":{"v":0}}'


def _rows(first: int, count: int = 1) -> pa.Table:
    """`count` rows of the sink's Kafka columns, offsets from `first`, on one day."""
    offsets = pa.array(range(first, first + count), pa.int64())
    return pa.table(
        {
            "v": offsets,
            "event_date": pa.array([date(2026, 12, 3)] * count, pa.date32()),
            "_kafka_topic": pa.array([TOPIC] * count),
            "_kafka_partition": pa.array([0] * count, pa.int32()),
            "_kafka_offset": offsets,
        }
    )


def _append(uri: str, value: int) -> None:
    write_deltalake(uri, _rows(value), mode="append", partition_by=["event_date"])


def build(uri: str, removals: int) -> float:
    """A table holding `removals` removals, checkpointed, then 19 commits past the checkpoint
    (the open's worst case at the sink's interval); returns the checkpoint's CPU seconds."""
    write_deltalake(
        uri,
        _rows(0),
        partition_by=["event_date"],
        configuration={"delta.checkpointInterval": str(DEFAULT_CHECKPOINT_INTERVAL)},
    )
    remaining = removals
    while remaining > 0:
        count = min(remaining, ADDS_PER_COMMIT)
        table = DeltaTable(uri)
        now_ms = int(time.time() * 1000)
        adds = [
            AddAction(
                f"event_date=2026-12-03/part-{uuid.uuid4()}-c000.snappy.parquet",
                5000,
                {"event_date": "2026-12-03"},
                now_ms,
                True,
                STATS,
            )
            for _ in range(count)
        ]
        table.create_write_transaction(
            adds, mode="append", schema=table.schema(), partition_by=["event_date"]
        )
        remaining -= count
    if removals:
        DeltaTable(uri).delete()  # a remove per file, as compaction leaves them
        _append(uri, 0)
    table = DeltaTable(uri)
    started = time.process_time()
    table.create_checkpoint()
    checkpoint_cpu = time.process_time() - started
    for i in range(DEFAULT_CHECKPOINT_INTERVAL - 1):
        _append(uri, i + 1)
    return checkpoint_cpu


def measure(uri: str, opens: int) -> dict[str, Any]:
    """The newest checkpoint's size, the log's, and the median open time of the table."""
    log = Path(uri) / "_delta_log"
    checkpoint = max(log.glob("*.checkpoint*.parquet"), key=lambda p: p.name)
    seconds = []
    for _ in range(opens):
        started = time.perf_counter()
        DeltaTable(uri)
        seconds.append(time.perf_counter() - started)
    return {
        "checkpoint_bytes": checkpoint.stat().st_size,
        "log_bytes": sum(p.stat().st_size for p in log.iterdir() if p.is_file()),
        "open_ms_median": 1000 * statistics.median(seconds),
        "open_ms_all": [round(1000 * s, 2) for s in seconds],
    }


def writer_cpu(lake: str, removals: int, commits: int, stretch: bool) -> dict[str, Any]:
    """CPU per commit of the sink's Delta writer on a table holding `removals`, its
    checkpoints written at the table's interval (`stretch` off) or spaced out while they take
    long (on): the process's CPU, so the log keeper's thread and delta-rs's are in it."""
    target = target_for(TOPIC, SinkSettings(), lake)
    build(target.uri, removals)
    checkpoint_seconds: list[float] = []
    writer = DeltaTableWriter(
        target,
        None,
        DEFAULT_CHECKPOINT_INTERVAL,
        stretch_checkpoints=stretch,
        on_checkpoint=checkpoint_seconds.append,
    )
    first = 1_000
    writer.write(_rows(first, BATCH_ROWS), {(TOPIC, 0): first + BATCH_ROWS - 1})
    writer.settle()
    started_cpu, started = time.process_time(), time.perf_counter()
    for i in range(1, commits + 1):
        offset = first + i * BATCH_ROWS
        writer.write(_rows(offset, BATCH_ROWS), {(TOPIC, 0): offset + BATCH_ROWS - 1})
    writer.settle()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    writer.close()
    return {
        "removals": removals,
        "stretch": stretch,
        "commits": commits,
        "cpu_ms_per_commit": 1000 * cpu / commits,
        "wall_ms_per_commit": 1000 * wall / commits,
        "checkpoints": len(checkpoint_seconds),
        "checkpoint_s_median": statistics.median(checkpoint_seconds) if checkpoint_seconds else 0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_day = round(86_400 / args.flush_s)
    cases = {"fresh": 0} | {f"{d:g} days": round(per_day * d) for d in args.retention_days}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="delta-tombstones-") as work:
        for name, removals in cases.items():
            print(f"[delta-tombstones] {name}: {removals:,} removals", file=sys.stderr, flush=True)
            uri = str(Path(work) / name.replace(" ", "-"))
            checkpoint_cpu = build(uri, removals)
            results[name] = {"removals": removals, "checkpoint_cpu_ms": 1000 * checkpoint_cpu}
            results[name] |= measure(uri, args.opens)
        # the fresh table again, last: the machine's drift shows between the two
        fresh_again = measure(str(Path(work) / "fresh"), args.opens)
        week = round(per_day * max(args.retention_days))
        writer = {}
        if args.commits:
            for name, removals, stretch in (
                ("fresh", 0, True),
                ("aged, checkpoints at the interval", week, False),
                ("aged, checkpoints spaced out", week, True),
            ):
                print(f"[delta-tombstones] writer, {name}", file=sys.stderr, flush=True)
                lake = str(Path(work) / f"writer-{len(writer)}")
                writer[name] = writer_cpu(lake, removals, args.commits, stretch)
    fresh_ms = min(results["fresh"]["open_ms_median"], fresh_again["open_ms_median"])
    results["fresh"]["open_ms_median_again"] = fresh_again["open_ms_median"]
    for case in results.values():
        case["open_vs_fresh"] = case["open_ms_median"] / fresh_ms
        case["open_target_met"] = case["open_vs_fresh"] <= OPEN_TARGET
    return {
        "benchmark": "delta_tombstones",
        "run_id": harness.new_run_id(),
        "load_average": list(os.getloadavg()),
        "machine": harness.machine_info("deltalake"),
        "params": {
            "flush_s": args.flush_s,
            "removals_per_day": per_day,
            "checkpoint_interval": DEFAULT_CHECKPOINT_INTERVAL,
            "opens": args.opens,
            "open_target": f"<= {OPEN_TARGET} x fresh",
        },
        "cases": results,
        "writer": writer,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delta_tombstones")
    parser.add_argument("--flush-s", type=float, default=3.0, help="a file every N seconds")
    parser.add_argument(
        "--retention-days",
        type=float,
        action="append",
        help="removals kept (delta.deletedFileRetentionDuration); default 7 and 1",
    )
    parser.add_argument("--opens", type=int, default=7)
    parser.add_argument(
        "--commits", type=int, default=200, help="sink writer commits per case (0: none)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.retention_days:
        args.retention_days = [7.0, 1.0]
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    for name, case in results["cases"].items():
        print(
            f"{name:<9} {case['removals']:>9,} removals: checkpoint "
            f"{case['checkpoint_bytes'] / 1e6:7.2f} MB written in "
            f"{case['checkpoint_cpu_ms']:7.1f} ms CPU; open {case['open_ms_median']:6.1f} ms "
            f"({case['open_vs_fresh']:.2f}x fresh)"
        )
    for name, case in results["writer"].items():
        print(
            f"writer, {name}: {case['cpu_ms_per_commit']:.1f} ms CPU per commit "
            f"({case['checkpoints']} checkpoints of {case['checkpoint_s_median']:.2f} s)"
        )
    print(f"run {results['run_id']}, results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
