"""Sink memory benchmark: peak RSS of `sensorstream sink --once` on a Kafka backlog.

    uv run python -m benchmarks.sink_memory                      # 1M records, 3 rounds
    uv run python -m benchmarks.sink_memory --records 5000000    # the 5M backlog, 1 round
    ... --dedicated-kafka   # on a broker of the run's own, when the stack's is busy

The sink runs as operators run it, `sensorstream sink --once --config <file>`, in a process of
its own, once with the product's defaults and once with the previous defaults passed
explicitly (`OLD_DEFAULTS`), interleaved round by round on the same backlog so that the
machine's other load falls on both alike. Each run has its own consumer group and its own
Delta table on the stack's S3 server.

- Input: `--records` readings from `benchmarks.sink` (the same curated, Avro-encoded readings,
  cached in benchmarks/.data; a backlog over 1M cycles through the first 1M, each copy at new
  offsets), produced once into `bench.<run>.raw` (3 partitions) as the tailer produces.
- Peak RSS: sampled from /proc every 50 ms, the sum of VmRSS over the sink process and its
  descendants, and the sink process's own high-water mark (VmHWM, read until it exits); the
  larger is reported.
- Rows/s: records over the sink's own run time as it reports it (from its start to its last
  commit, group join included); the process's wall time is reported beside. CPU: user +
  system seconds of the process and its children (`wait4`), per million rows.
- Checked after each run: the table holds exactly `--records` rows with unique
  (_kafka_partition, _kafka_offset).
- Reported: per variant the median over rounds; the ratios new / old of rows/s and of peak
  RSS; the load average at the start and the end.

`--variant NAME=JSON` adds a variant: the `sink:` settings in JSON on top of the defaults,
under "environment" variables for its process (for trying one setting at a time), and under
"checkout" another source tree to run the sink from (an earlier commit's, extracted with
`git archive`), to compare code, not only settings, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.sink import (
    check_table,
    cleanup,
    ensure_bucket,
    generate_messages,
    produce_backlog,
    register_schema,
    use_stack_environment,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results" / "sink-memory.json"
GENERATED = 1_000_000
"""Distinct readings generated; a larger backlog cycles through them."""
SAMPLE_S = 0.05
TARGETS = {"peak_rss_mb": 400.0, "rows_per_s_vs_old": 0.9}

OLD_DEFAULTS: dict[str, Any] = {
    "max_buffered_rows": 500_000,
    "max_buffered_bytes": 2**40,
    "poll_batch": 5000,
    "fetch_queue_kbytes": 65536,
    "fetch_queue_records": 100_000,
    "defaults": {"max_rows": 100_000, "max_bytes": 64 * 1024 * 1024},
    "decode_ahead_bytes": 2**40,
}
"""The memory-related sink settings before the memory bound was by bytes: what the old
defaults were, passed explicitly (a byte bound out of reach stands for "none")."""
OLD_ENVIRONMENT = {"_RJEM_MALLOC_CONF": ""}
"""An empty value keeps polars' and delta-rs's jemalloc at its own defaults, as before."""


_log = harness.logger("sink-memory")


# -- one sink process, sampled from /proc ---------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in kB ({} once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
    return found


def run_sink(
    config: Path,
    lake: str,
    timeout: float,
    environment: dict[str, str] | None = None,
    checkout: Path = REPO,
) -> dict[str, Any]:
    """`sensorstream sink --once --config config` into `lake`, in a process of its own, run
    from the source tree `checkout`: its peak RSS (sampled), CPU seconds, wall time and what
    it printed."""
    with tempfile.TemporaryFile(mode="w+") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "sensorstream", "sink", "--once", "--config", str(config)],
            cwd=checkout,  # `-m` imports the code of the directory it runs in first
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            # the environment beats the file
            env={**os.environ, **(environment or {}), "SENSORSTREAM_LAKE_URI": lake},
        )
        peak_tree_kb = peak_hwm_kb = 0
        timeline: list[tuple[float, int]] = []
        next_mark = 0.0
        while True:
            waited = os.wait4(process.pid, os.WNOHANG)
            if waited[0] == process.pid:
                _, status, usage = waited
                break
            own = _status(process.pid)
            tree = own.get("VmRSS", 0) + sum(
                _status(child).get("VmRSS", 0) for child in _descendants(process.pid)
            )
            peak_tree_kb = max(peak_tree_kb, tree)
            peak_hwm_kb = max(peak_hwm_kb, own.get("VmHWM", 0))
            elapsed = time.monotonic() - started
            if elapsed >= next_mark:
                timeline.append((round(elapsed, 1), tree // 1024))
                next_mark = elapsed + 1.0
            if elapsed > timeout:
                process.kill()
                raise RuntimeError(f"the sink ran over {timeout:.0f} s")
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout = process.stdout.read() if process.stdout else ""
        log_file.seek(0)
        log_text = log_file.read()
    if process.returncode != 0:
        raise RuntimeError(f"the sink exited {process.returncode}:\n{log_text[-3000:]}")
    landed = re.search(
        r"landed (\d+) rows in (\d+) commits .*; (\d+) dead letters; ([\d.]+) s", stdout
    )
    if landed is None:
        raise RuntimeError(f"the sink printed no summary: {stdout!r}")
    return {
        "rows": int(landed.group(1)),
        "commits": int(landed.group(2)),
        "dead_letters": int(landed.group(3)),
        "sink_seconds": float(landed.group(4)),
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": max(peak_tree_kb, peak_hwm_kb) / 1024,
        "peak_tree_rss_mb": peak_tree_kb / 1024,
        "vm_hwm_mb": peak_hwm_kb / 1024,
        "rss_timeline_mb": timeline,
    }


def _config(path: Path, run_id: str, variant: str, round_no: int, topic: str, extra: dict) -> Path:
    """The YAML (JSON is YAML) of one run: its topic and group, plus `extra`."""
    sink = {
        "consumer_group": f"bench-{run_id}-{variant}-{round_no}",
        "topics": [topic],
        "topic_prefix": topic.removesuffix("raw"),
        "dead_letter_topic": topic.removesuffix("raw") + "dlq",
        "metrics_port": 0,
        "join_timeout_s": 900,  # a loaded broker can take minutes to form a new group
        **extra,
    }
    path.write_text(json.dumps({"sink": sink}, indent=2))
    return path


def _one(
    run_id: str, variant: str, extra: dict, round_no: int, topic: str, records: int, work: Path
) -> dict[str, Any]:
    extra = dict(extra)
    environment = extra.pop("environment", None)
    checkout = Path(extra.pop("checkout", REPO))
    config = _config(work / f"{variant}-{round_no}.yaml", run_id, variant, round_no, topic, extra)
    _log(f"round {round_no}, {variant}: sink settings {json.dumps(extra)}, env {environment}")
    lake = f"s3://sensorstream-bench/{run_id}/{variant}-{round_no}/lake"
    result = run_sink(config, lake, records / 2000 + 600, environment, checkout)
    table = check_table(f"{lake}/raw", records)
    if not table["exact"] or result["dead_letters"] or result["rows"] != records:
        raise RuntimeError(f"{variant}: the table is not exact: {table}, {result}")
    result.update(
        rows_per_s=records / result["sink_seconds"],
        cpu_s_per_million_rows=1e6 * result["cpu_seconds"] / records,
        table={k: table[k] for k in ("rows", "exact", "commits", "files", "file_mb_mean")},
    )
    _log(
        f"round {round_no}, {variant}: peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"{result['rows_per_s']:,.0f} rows/s, {result['cpu_s_per_million_rows']:.1f} CPU s/M rows, "
        f"{table['commits']} commits, {table['files']} files"
    )
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.dedicated_kafka:
        return _run(args)
    from infra.local_stack.dedicated_kafka import DedicatedKafka

    with tempfile.TemporaryDirectory() as directory, DedicatedKafka(Path(directory)) as kafka:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        _log(f"a broker of this run's own at {kafka.bootstrap_servers}")
        return {**_run(args), "kafka": "dedicated broker"}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("SENSORSTREAM_STACK_DIR", str(REPO / ".stack"))
    use_stack_environment()
    ensure_bucket()
    run_id = harness.new_run_id()
    topic = f"bench.{run_id}.raw"
    old = {**OLD_DEFAULTS, "environment": OLD_ENVIRONMENT}
    variants: dict[str, dict] = {"new_defaults": {}, "old_defaults": old}
    for spec in args.variant:
        name, _, settings = spec.partition("=")
        variants[name] = json.loads(settings)
    if args.only:
        variants = {name: v for name, v in variants.items() if name in args.only}
    load_start = os.getloadavg()
    produced: dict[str, Any] = {"topic": args.topic}
    if args.topic:
        topic = args.topic  # an earlier run's backlog, kept with --keep
    else:
        schema, schema_id = register_schema(topic)
        messages = generate_messages(min(args.records, GENERATED), schema, schema_id)
        _log(f"producing a backlog of {args.records:,} records into {topic}")
        produced = produce_backlog(topic, messages, args.records)
        del messages
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    groups: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as work:
            for round_no in range(1, args.rounds + 1):
                order = list(variants) if round_no % 2 else list(reversed(variants))
                for name in order:
                    result = _one(
                        run_id, name, variants[name], round_no, topic, args.records, Path(work)
                    )
                    runs[name].append(result)
                    groups.append(f"bench-{run_id}-{name}-{round_no}")
    finally:
        cleanup(run_id, groups, args.keep)
    load_end = os.getloadavg()
    summary = {
        name: {
            "peak_rss_mb": _median(r, "peak_rss_mb"),
            "peak_rss_mb_max": max(x["peak_rss_mb"] for x in r),
            "rows_per_s": _median(r, "rows_per_s"),
            "cpu_s_per_million_rows": _median(r, "cpu_s_per_million_rows"),
        }
        for name, r in runs.items()
    }
    new, old = summary.get("new_defaults"), summary.get("old_defaults")
    ratios = {}
    if new and old:
        ratios = {
            "rows_per_s_new_vs_old": new["rows_per_s"] / old["rows_per_s"],
            "peak_rss_new_vs_old": new["peak_rss_mb"] / old["peak_rss_mb"],
            "cpu_per_row_new_vs_old": new["cpu_s_per_million_rows"] / old["cpu_s_per_million_rows"],
        }
    return {
        "run_id": run_id,
        "records": args.records,
        "rounds": args.rounds,
        "machine": harness.machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "produced": produced,
        "variants": variants,
        "summary": summary,
        "ratios": ratios,
        "targets": TARGETS,
        "met": {
            "peak_rss_mb": bool(new) and new["peak_rss_mb_max"] <= TARGETS["peak_rss_mb"],
            "rows_per_s_vs_old": bool(ratios)
            and ratios["rows_per_s_new_vs_old"] >= TARGETS["rows_per_s_vs_old"],
        },
        "runs": runs,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"sink memory, {results['records']:,} records, {results['rounds']} round(s), "
        f"load average {results['load_average_start'][0]:.1f} -> "
        f"{results['load_average_end'][0]:.1f}",
        "| variant | peak RSS (median; max) | rows/s | CPU s per 1M rows |",
        "|---|---|---|---|",
    ]
    for name, s in results["summary"].items():
        lines.append(
            f"| {name} | {s['peak_rss_mb']:,.0f} MB; {s['peak_rss_mb_max']:,.0f} MB | "
            f"{s['rows_per_s']:,.0f} | {s['cpu_s_per_million_rows']:.1f} |"
        )
    r = results["ratios"]
    if r:
        lines.append(
            f"new / old: rows/s {r['rows_per_s_new_vs_old']:.2f}, peak RSS "
            f"{r['peak_rss_new_vs_old']:.2f}, CPU per row {r['cpu_per_row_new_vs_old']:.2f}"
        )
    lines.append(f"targets met: {results['met']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (1 over 1M records)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT.name}")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only these variants"
    )
    parser.add_argument("--keep", action="store_true", help="leave topics, groups and tables")
    parser.add_argument(
        "--dedicated-kafka",
        action="store_true",
        help="run on a broker of this run's own (the stack's registry and S3 still)",
    )
    parser.add_argument("--topic", help="reuse this backlog (of --records) from a --keep run")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.records <= 1_000_000 else 1
    if args.out is None:
        suffix = "" if args.records == 1_000_000 else f"-{args.records // 1_000_000 or 1}M"
        args.out = DEFAULT_OUT.with_name(f"sink-memory{suffix}.json")
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    print(table(results))
    _log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
