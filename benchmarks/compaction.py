"""Continuous compaction benchmark: fresh tables that stay healthy and cheap to read.

    uv run python -m benchmarks.compaction [--minutes 60] [--rate 2000] [--sample-s 15]

The pipeline of `benchmarks.e2e_stack` (three simulated edge nodes writing a combined `--rate`
rows/s, producers, one router, one sink) with the sink flushing every table every `--flush-s`
seconds (default: as shipped) and `sensorstream maintain` beside it with its shipped defaults
(`--window-s` shortens the closed-partition window for short runs). The lake is on local disk,
so the local Spark reads it without s3a jars; the sink and the compactor write it with the same
code as an s3:// lake (the integration tests run them on the S3 server).

Measured, written to `--out`:

- **layout over the run**: every `--sample-s`, per table and partition, the active files and
  their sizes (buckets < 1 MiB, < 8 MiB, < 64 MiB, < 128 MiB, >= 128 MiB). Target: at most 16
  active files per table and day partition once compaction has caught up (the run's samples
  after the first `--warmup-s`; the worst sample and the share of samples within it are
  reported, and the layout once the compactor has caught up after the load stops).
- **readers pay nothing for freshness**: after the load, Spark (local[2], Delta) runs a count
  and a group-by over the day on `raw` as the pipeline left it (drained: its current version)
  and on a fully compacted copy of that version's rows (one file per
  partition, written by the same Parquet writer, delta-rs), alternating, `--queries` times
  each after one warm-up each; ratio of medians, live / compacted. Target: at most 1.5.
- **closed partitions**: the load stopped, the compactor keeps running until `--window-s`
  has passed; then every file of every partition must be at least 64 MiB, or be the
  partition's only file.
- **exactly once**: `sensorstream audit`'s check of the lake against the producers'
  checkpoints, after all compactions: every row once.

The load average is recorded at the start, every sample and the end. A run longer than 20
minutes is meant to run outside the shared benchmark lock and says so in its result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "compaction.json"
MiB = 2**20
SIZE_BUCKETS = (
    (1 * MiB, "<1MiB"),
    (8 * MiB, "<8MiB"),
    (64 * MiB, "<64MiB"),
    (128 * MiB, "<128MiB"),
)
MAX_PARTITION_FILES = 16
CLOSED_MIN_BYTES = 64 * MiB
MAX_READ_RATIO = 1.5
QUERY_TABLE = "raw"
DRAIN_TIMEOUT_S = 600.0
CATCH_UP_TIMEOUT_S = 300.0


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bucket(size: int) -> str:
    for bound, name in SIZE_BUCKETS:
        if size < bound:
            return name
    return ">=128MiB"


def lake_layout(lake: str) -> dict[str, dict[str, dict[str, Any]]]:
    """table -> partition -> {files, bytes, sizes: bucket -> count, newest_ms}."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from sensorstream.lake import LakeNotFound, discover_tables
    from sinks.compaction_plan import partitions_of

    try:
        tables = discover_tables(lake, {})
    except LakeNotFound:
        return {}
    layout: dict[str, dict[str, dict[str, Any]]] = {}
    for name, uri in tables.items():
        actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pylist()
        layout[name] = {}
        for partition in partitions_of(actions):
            sizes: dict[str, int] = {}
            for f in partition.files:
                sizes[bucket(f.size)] = sizes.get(bucket(f.size), 0) + 1
            layout[name][partition.name] = {
                "files": len(partition.files),
                "bytes": sum(f.size for f in partition.files),
                "sizes": sizes,
                "file_sizes": sorted(f.size for f in partition.files),
            }
    return layout


def worst_partition(layout: dict[str, dict[str, dict[str, Any]]]) -> dict[str, int]:
    return {t: max((p["files"] for p in parts.values()), default=0) for t, parts in layout.items()}


def _without_file_sizes(layout: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        t: {p: {k: v for k, v in info.items() if k != "file_sizes"} for p, info in parts.items()}
        for t, parts in layout.items()
    }


def summarise_layout(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Per table: the worst partition's file count over the steady samples."""
    steady = [s for s in samples if s["t"] >= warmup_s] or samples
    tables = sorted({t for s in steady for t in s["worst_partition_files"]})
    out: dict[str, Any] = {}
    for table in tables:
        counts = [s["worst_partition_files"].get(table, 0) for s in steady]
        within = sum(c <= MAX_PARTITION_FILES for c in counts)
        out[table] = {
            "max": max(counts),
            "median": statistics.median(counts),
            "p95": sorted(counts)[max(0, round(0.95 * len(counts)) - 1)],
            "share_within_target": round(within / len(counts), 3),
        }
    return out


def closed_verdict(layout: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Every partition: each file >= 64 MiB, or the partition's only file."""
    bad = {
        f"{t}/{p}": info["file_sizes"]
        for t, parts in layout.items()
        for p, info in parts.items()
        if info["files"] > 1 and min(info["file_sizes"]) < CLOSED_MIN_BYTES
    }
    return {"ok": not bad, "partitions_failing": bad}


# -- Spark ------------------------------------------------------------------------------------


def compacted_copy(uri: str, version: int, copy: str) -> int:
    """The rows of `uri` at `version`, written to `copy` and compacted to one file per
    partition, by delta-rs (the sink's writer): only the layout differs. Its file count."""
    from deltalake import DeltaTable, write_deltalake

    source = DeltaTable(uri, version=version)
    reader = source.to_pyarrow_dataset().scanner(batch_size=64_000).to_reader()
    partitions = source.metadata().partition_columns
    write_deltalake(copy, reader, partition_by=partitions or None)
    DeltaTable(copy).optimize.compact(target_size=8 * 1024 * MiB)
    return len(DeltaTable(copy).file_uris())


def spark_ratio(uri: str, copy: str, day: str, repeats: int) -> dict[str, Any]:
    """Median seconds of the day's count + group-by on the live table and on the compacted
    copy, alternating so load drifts hit both alike. Both are read at their latest version, as
    readers do (time travel costs Spark a log listing of its own); the rows must agree, which
    they do once the pipeline has drained (compactions change files, not rows)."""
    sys.path.insert(0, str(BENCH_DIR.parent))
    from pyspark.sql import functions as F

    from tests.spark_helpers import spark_session

    spark = spark_session(Path(tempfile.mkdtemp(prefix="compaction-bench-spark-")), "compaction")
    spark.sparkContext.setLogLevel("ERROR")

    def query(path: str) -> tuple[float, int, int]:
        began = time.perf_counter()
        day_rows = (
            spark.read.format("delta")
            .load(path)
            .where(F.col("event_date") == F.lit(day).cast("date"))
        )
        count = day_rows.count()
        groups = day_rows.groupBy("sensor_id").agg(F.count("*"), F.avg("temperature")).collect()
        return time.perf_counter() - began, count, len(groups)

    try:
        query(uri)  # warm-up: JVM, jars, first table state
        query(copy)
        live: list[float] = []
        compacted: list[float] = []
        counts: set[tuple[int, int]] = set()
        for _ in range(repeats):
            seconds, rows, groups = query(uri)
            live.append(seconds)
            counts.add((rows, groups))
            seconds, rows, groups = query(copy)
            compacted.append(seconds)
            counts.add((rows, groups))
    finally:
        spark.stop()
    if len(counts) != 1:
        raise RuntimeError(f"the live table and its copy disagree: (rows, groups) {counts}")
    ((rows, groups),) = counts
    ratio = statistics.median(live) / statistics.median(compacted)
    return {
        "day": day,
        "rows": rows,
        "groups": groups,
        "live_s": [round(s, 3) for s in live],
        "compacted_s": [round(s, 3) for s in compacted],
        "live_median_s": round(statistics.median(live), 3),
        "compacted_median_s": round(statistics.median(compacted), 3),
        "ratio": round(ratio, 3),
        "target_max_ratio": MAX_READ_RATIO,
        "ok": ratio <= MAX_READ_RATIO,
    }


# -- the run ----------------------------------------------------------------------------------


def _wait(
    condition: Callable[[], bool], timeout_s: float, every_s: float, exited: Callable[[], list]
) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        if dead := exited():
            raise RuntimeError("a process exited: " + "; ".join(dead))
        time.sleep(every_s)
    return condition()


def run_compaction(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.e2e_sampling import Sampler
    from benchmarks.e2e_stack import REGIONS, E2EPipeline
    from infra.local_stack.stack import LocalStack
    from sensorstream.settings import ConnectionSettings
    from sinks.maintain_settings import MaintainSettings

    seconds = args.minutes * 60
    maintain_env: dict[str, str] = {}
    if args.window_s is not None:
        maintain_env["SENSORSTREAM_MAINTAIN_WINDOW_S"] = str(args.window_s)
    maintain = MaintainSettings(**({"window_s": args.window_s} if args.window_s else {}))
    results: dict[str, Any] = {
        "benchmark": "compaction",
        "machine": harness.machine_info(),
        "params": {
            "minutes": args.minutes,
            "rate": args.rate,
            "sample_s": args.sample_s,
            "warmup_s": args.warmup_s,
            "flush_s": args.flush_s,
            "queries": args.queries,
            "maintain": maintain.model_dump(exclude={"metrics_host", "metrics_port", "once"}),
        },
        "load_average": {"start": load_average()},
        "error": None,
    }
    if seconds > 20 * 60:
        results["note"] = "a run over 20 minutes: run outside the shared benchmark lock"
    work = Path(tempfile.mkdtemp(prefix="sensorstream-compaction-"))
    lake = str(work / "lake")
    stack = LocalStack()
    stack.up()
    exports = stack.exports()
    connection = ConnectionSettings(
        **{**{k.lower(): v for k, v in exports.items()}, "sensorstream_lake_uri": lake}
    )
    samples: list[dict[str, Any]] = []

    def save(phase: str) -> None:
        """The results so far, so a long run's figures survive whatever ends it later."""
        results["phase"] = phase
        harness.write_results(args.out, {**results, "samples": samples})

    with E2EPipeline(
        "compaction", args.rate, work_dir=work / "run", connection=connection, say=_log
    ) as pipe:
        pipe.start_stages(sink_flush_s=args.flush_s, maintain_env=maintain_env)
        results["pipeline"] = pipe.describe()
        sampler = Sampler(pipe.kafka_config, pipe.nodes, REGIONS)
        try:
            pipe.start_simulators()
            began = time.monotonic()
            _log(f"run {pipe.run_id}: {args.rate:g} rows/s for {seconds:g} s, lake {lake}")
            while (t := time.monotonic() - began) < seconds:
                if dead := pipe.exited():
                    raise RuntimeError("a process exited: " + "; ".join(dead))
                layout = lake_layout(lake)
                worst = worst_partition(layout)
                samples.append(
                    {
                        "t": round(t, 1),
                        "load_average": load_average(),
                        "worst_partition_files": worst,
                        "layout": _without_file_sizes(layout),
                    }
                )
                _log(f"t={t:.0f}s worst partition files: {worst}")
                time.sleep(max(0.0, args.sample_s - (time.monotonic() - began - t)))
            pipe.stop_simulators()
            save("load done")
            _log("load stopped; waiting for the pipeline to drain")
            drained, _ = sampler.wait_drained(pipe.pids, DRAIN_TIMEOUT_S, _log)
            results["drained"] = drained
            results["layout_summary"] = summarise_layout(samples, args.warmup_s)

            def caught_up() -> bool:
                worst = worst_partition(lake_layout(lake))
                return all(n <= MAX_PARTITION_FILES for n in worst.values())

            results["caught_up"] = _wait(
                caught_up, CATCH_UP_TIMEOUT_S, maintain.interval_s, pipe.exited
            )
            end_layout = lake_layout(lake)
            results["layout_caught_up"] = end_layout
            results["load_average"]["before_spark"] = load_average()
            uri = f"{lake}/{QUERY_TABLE}"
            from deltalake import DeltaTable

            version = DeltaTable(uri).version()
            day = max(p.split("=", 1)[1] for p in end_layout[QUERY_TABLE])
            copy = str(work / "compacted-copy")
            copy_files = compacted_copy(uri, version, copy)
            _log(f"Spark: {QUERY_TABLE} at version {version} vs a copy in {copy_files} files")
            spark = spark_ratio(uri, copy, day, args.queries)
            spark["live_files"] = end_layout[QUERY_TABLE][f"event_date={day}"]["files"]
            spark["compacted_files"] = copy_files
            spark["version"] = version
            results["spark"] = spark
            _log(f"Spark: {spark}")
            save("spark done; waiting for the partitions to close")
            window = maintain.window_s
            _log(f"waiting {window:g} s for every partition to close and be merged")

            def closed() -> bool:
                return closed_verdict(lake_layout(lake))["ok"]

            _wait(closed, window + 10 * maintain.interval_s + 120, maintain.interval_s, pipe.exited)
            final = lake_layout(lake)
            results["closed"] = closed_verdict(final)
            results["layout_closed"] = final
            results["audit"] = _audit(lake, pipe.kafka_config)
        except Exception as exc:
            results["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"failed: {results['error']}")
        finally:
            sampler.close()
            results["stopped_not_ok"] = pipe.stop_stages()
            results["maintain_log_tail"] = _tail(work / "run" / "logs", "maintain")
    results["load_average"]["end"] = load_average()
    results["samples"] = samples
    results["verdict"] = _verdict(results)
    results["phase"] = "done"
    return results


def _tail(log_dir: Path, name: str, lines: int = 20) -> list[str]:
    found = sorted(log_dir.glob(f"*{name}*.log"))
    if not found:
        return []
    return found[-1].read_text(errors="replace").splitlines()[-lines:]


def _audit(lake: str, kafka_config: dict[str, str]) -> dict[str, Any]:
    from audit.run import audit_lake, open_lake
    from sensorstream.topics import PRODUCER_CHECKPOINTS

    report = audit_lake(lake, open_lake(lake, {}), kafka_config, PRODUCER_CHECKPOINTS)
    return {"exact": report.exit_code == 0, "exit_code": report.exit_code}


def _verdict(results: dict[str, Any]) -> dict[str, Any]:
    layout = results.get("layout_summary") or {}
    return {
        "files_within_target_at_catch_up": results.get("caught_up"),
        "worst_partition_files_steady_max": max((v["max"] for v in layout.values()), default=None),
        "spark_ratio": (results.get("spark") or {}).get("ratio"),
        "spark_ok": (results.get("spark") or {}).get("ok"),
        "closed_ok": (results.get("closed") or {}).get("ok"),
        "audit_exact": (results.get("audit") or {}).get("exact"),
        "error": results.get("error"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compaction", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="rows/s over all nodes")
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument(
        "--flush-s", type=float, default=None, help="sink flush latency (default: as shipped)"
    )
    parser.add_argument(
        "--window-s", type=float, default=None, help="maintain's window (default: as shipped)"
    )
    parser.add_argument("--queries", type=int, default=5, help="Spark queries per table")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    results = run_compaction(args)
    harness.write_results(args.out, results)
    print(json.dumps(results["verdict"], indent=2))
    _log(f"results in {args.out}")
    return 0 if results["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
