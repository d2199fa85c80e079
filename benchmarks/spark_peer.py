"""The sink against the peer a Databricks user would pick: Spark Structured Streaming.

    uv run python -m benchmarks.spark_peer [--records 1000000] [--rounds 2]

Both land the same backlog, the sink benchmark's (`benchmarks.sink.build_backlog`: curated
readings in the Confluent wire format on `bench.<run>.raw`, 3 partitions, produced in
transactions), each into a fresh Delta table on the stack's S3 server, in interleaved rounds
(round 1 sink then Spark, round 2 Spark then sink, ...):

- Sink: `sensorstream sink --once` with a YAML config (its own consumer group; flushes of
  `--max-rows` rows, the sink benchmark's throughput settings) into `<run>/sink-rN/lake/raw`.
- Spark: a local[2] pyspark session (Kafka source from the earliest offsets, read_committed,
  `maxOffsetsPerTrigger` = `--max-rows` so both commit about as often; the 5-byte wire header
  cut off and the body decoded by `from_avro` with the writer schema fetched from the
  registry; the sink's columns, partitioned by event_date; Delta sink with
  `trigger(availableNow=True)` and its checkpoint beside the table on S3) into
  `<run>/spark-rN/raw`. Jars from Maven Central (`infra.local_stack.spark`): a session is
  started once, untimed, before the rounds to resolve them; the timed runs load the resolved
  jar files, as a cluster with its libraries installed does, since ivy would otherwise check
  Maven Central again on every start (about 30 s here).

Measured per run, from outside: wall seconds from spawn to exit (rows/s), CPU seconds of the
process tree (the driver and its JVM; `benchmarks.process_tree`, with the root's CPU from
wait4) per million rows, and the tree's peak RSS. Spark's driver also reports its session
start-up (JVM, jar resolution from the cache, Delta's extension), so its query alone (wall and
CPU) is given beside the whole. Each table is then checked exact with deltalake: rows ==
records, distinct (_kafka_partition, _kafka_offset) == records, distinct _source_rowid ==
records. Load average is recorded before and after every run. Judged: the sink's CPU per row /
Spark's, at most 0.25 (median of the rounds). Writes benchmarks/results/spark_peer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.process_tree import TreeMonitor, parse_stat, status_kb
from benchmarks.sink import (
    BUCKET,
    REPO,
    build_backlog,
    check_table,
    cleanup,
    ensure_bucket,
    lake_uri,
    sink_settings,
    use_stack_environment,
)

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "spark_peer.json"
ROUTE = "raw"
TARGET_CPU_RATIO = 0.25  # sink CPU per row / Spark CPU per row, at most


_log = harness.logger("spark-peer")


def _worker_command(kind: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.spark_peer", "--worker", kind]


# -- the Spark job (runs in the worker process) ------------------------------------------------


def header_free_body(column: str = "value") -> str:
    """SQL for the Avro body of a Confluent wire-format value: the value without its magic
    byte and 4-byte schema id (Spark's substring counts from 1)."""
    return f"substring({column}, 6, length({column}) - 5)"


def schema_id_of(column: str = "value") -> str:
    """SQL for the schema id in a wire-format header: bytes 2-5, big-endian."""
    return f"CAST(conv(hex(substring({column}, 2, 4)), 16, 10) AS INT)"


def routes_version_of(header: str) -> str:
    """SQL for the routing version a record's `header` names (ASCII digits; NULL if absent),
    as the sink reads it."""
    return (
        f"CAST(CAST(element_at(filter(headers, h -> h.key = '{header}'), 1).value AS STRING)"
        " AS BIGINT)"
    )


def _jvm_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS kB) of the JVM, read from /proc."""
    _, cpu = parse_stat(Path(f"/proc/{pid}/stat").read_text())
    return cpu, status_kb(Path(f"/proc/{pid}/status").read_text(), "VmHWM")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _session(spec: dict[str, Any]):
    from infra.local_stack.spark import connector_packages, s3a_conf, spark_session

    env = os.environ
    conf = s3a_conf(
        env["AWS_ENDPOINT_URL"],
        env["AWS_ACCESS_KEY_ID"],
        env["AWS_SECRET_ACCESS_KEY"],
        env.get("AWS_REGION", "us-east-1"),
    )
    packages = connector_packages(kafka=True, avro=True, s3=True)
    return spark_session(
        "sensorstream-spark-peer",
        master=spec["master"],
        packages=packages,
        conf=conf,
        jars=spec.get("jars"),
    )


def _worker_resolve(spec: dict[str, Any]) -> None:
    """Start a session and stop: fills the jar cache (untimed) before the measured runs and
    names the jar files they load."""
    from infra.local_stack.spark import jar_files

    started = time.perf_counter()
    session = _session(spec)
    version, jars = session.version, jar_files(session)
    session.stop()
    harness.emit({"seconds": time.perf_counter() - started, "spark": version, "jars": jars})


def _worker_spark(spec: dict[str, Any]) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from pyspark.sql import functions as F
    from pyspark.sql.avro.functions import from_avro

    from schemas.route_headers import HEADER_ROUTES_VERSION

    started = time.perf_counter()
    session = _session(spec)
    session.sparkContext.setLogLevel("WARN")
    jvm_pid = session.sparkContext._gateway.proc.pid
    ready = time.perf_counter()
    jvm_ready, _ = _jvm_usage(jvm_pid)
    cpu_ready = _self_cpu() + jvm_ready

    registry = SchemaRegistryClient({"url": os.environ["SCHEMA_REGISTRY_URL"]})
    writer = registry.get_latest_version(f"{spec['topic']}-value")
    source = (
        session.readStream.format("kafka")
        .option("kafka.bootstrap.servers", os.environ["KAFKA_BOOTSTRAP_SERVERS"])
        .option("subscribe", spec["topic"])
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(spec["max_offsets"]))
        .option("kafka.isolation.level", "read_committed")
        .option("includeHeaders", "true")
        .load()
    )
    decoded = source.select(
        from_avro(F.expr(header_free_body()), writer.schema.schema_str).alias("r"),
        "topic",
        "partition",
        "offset",
        "headers",
        "value",
    )
    rows = decoded.select(
        "r.*",
        F.current_timestamp().alias("_ingested_at"),
        F.col("topic").alias("_kafka_topic"),
        F.col("partition").alias("_kafka_partition"),
        F.col("offset").alias("_kafka_offset"),
        F.expr(schema_id_of()).alias("_schema_id"),
        F.lit(ROUTE).alias("_route"),
        F.expr(routes_version_of(HEADER_ROUTES_VERSION)).alias("_routing_version"),
        F.to_date(F.col("timestamp")).alias("event_date"),
    )
    query_started = time.perf_counter()
    query = (
        rows.writeStream.format("delta")
        .outputMode("append")
        .partitionBy("event_date")
        .option("checkpointLocation", spec["checkpoint"])
        .trigger(availableNow=True)
        .start(spec["table"])
    )
    query.awaitTermination()
    done = time.perf_counter()
    jvm_done, _ = _jvm_usage(jvm_pid)
    cpu_done = _self_cpu() + jvm_done
    progress = query.recentProgress
    if query.exception() is not None:
        raise RuntimeError(f"the streaming query failed: {query.exception()}")
    session.stop()
    stopped = time.perf_counter()
    jvm_cpu, jvm_hwm = _jvm_usage(jvm_pid)
    harness.emit(
        {
            "jvm_pid": jvm_pid,
            "jvm_cpu_seconds": jvm_cpu,
            "jvm_peak_rss_mb": jvm_hwm / 1024,
            "session_seconds": ready - started,
            "session_cpu_seconds": cpu_ready,
            "query_seconds": done - query_started,
            "query_cpu_seconds": cpu_done - cpu_ready,
            "stop_seconds": stopped - done,
            "schema_id": writer.schema_id,
            "batches": micro_batches(progress),
        }
    )


def micro_batches(progress: list[dict[str, Any]]) -> dict[str, Any]:
    """What the query's progress reports say, summed over its micro-batches: input rows and
    where each trigger's time went (durationMs by phase)."""
    phases: dict[str, int] = {}
    for report in progress:
        for phase, ms in (report.get("durationMs") or {}).items():
            phases[phase] = phases.get(phase, 0) + int(ms)
    return {
        "count": sum(1 for r in progress if r.get("numInputRows")),
        "input_rows": sum(int(r.get("numInputRows") or 0) for r in progress),
        "duration_ms": phases,
    }


# -- exactness --------------------------------------------------------------------------------


def exactness(expected: int, rows: int, distinct_offsets: int, distinct_rowids: int) -> dict:
    """The verdict on a table that should hold each of `expected` records once."""
    return {
        "rows": rows,
        "distinct_partition_offset": distinct_offsets,
        "distinct_source_rowid": distinct_rowids,
        "duplicates": rows - distinct_offsets,
        "missing": expected - distinct_offsets,
        "exact": rows == distinct_offsets == distinct_rowids == expected,
    }


def audit_table(uri: str, expected: int) -> dict[str, Any]:
    """Each of the backlog's records exactly once, by Kafka coordinates and by source row."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from sensorstream.settings import ConnectionSettings, load_settings

    table = check_table(uri, expected)
    options = load_settings(ConnectionSettings).storage_options() or None
    rowids = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=["_source_rowid"])
    distinct = len(pc.unique(rowids.column("_source_rowid")))
    verdict = exactness(expected, table["rows"], table["unique_partition_offset"], distinct)
    return {**table, **verdict}


# -- measured runs ----------------------------------------------------------------------------


def _spawn_measured(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `command`, sampling its process tree; wall seconds, tree usage, stdout."""
    load_before = os.getloadavg()
    with log.open("w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        monitor = TreeMonitor(process.pid)
        monitor.start()
        stdout = process.stdout.read() if process.stdout else ""
        _, status, rusage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    usage = monitor.stop()
    root = usage.processes.get(process.pid)
    if root is not None:  # wait4 counts the root's last moments, after the final sample
        root.cpu_seconds = max(root.cpu_seconds, rusage.ru_utime + rusage.ru_stime)
    if process.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{command[:4]} exited {process.returncode}; stderr tail:\n{tail}")
    return {
        "wall_seconds": wall,
        "usage": usage,
        "stdout": stdout,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def _figures(rows: int, wall: float, cpu: float) -> dict[str, float]:
    return {
        "wall_seconds": wall,
        "rows_per_s": rows / wall,
        "cpu_seconds": cpu,
        "cpu_s_per_million_rows": cpu * 1e6 / rows,
    }


def run_sink(run_id: str, round_no: int, records: int, max_rows: int, logs: Path) -> dict:
    variant = f"sink-r{round_no}"
    lake = lake_uri(run_id, variant)
    settings = sink_settings(
        run_id, variant, "", max_rows=max_rows, max_bytes=1 << 30, max_latency_s=60.0
    )
    # A loaded broker can take minutes to answer a group join; the comparison should not fail
    # on that (the time is measured either way).
    settings["join_timeout_s"] = 600.0
    config = logs / f"{variant}.yaml"
    config.write_text(json.dumps({"sink": settings}))  # JSON is YAML
    env = {**os.environ, "SENSORSTREAM_LAKE_URI": lake}
    cli = Path(sys.executable).with_name("sensorstream")
    command = [str(cli), "sink", "--once", "--config", str(config), "--metrics-port", "0"]
    _log(f"round {round_no}: sensorstream sink --once -> {lake}/{ROUTE}")
    measured = _spawn_measured(command, env, logs / f"{variant}.log")
    usage = measured["usage"]
    result = {
        "variant": variant,
        "command": " ".join(command),
        **_figures(records, measured["wall_seconds"], usage.cpu_seconds()),
        "peak_tree_rss_mb": usage.peak_tree_rss_kb / 1024,
        "tree": usage.as_dict(),
        "load_before": measured["load_before"],
        "load_after": measured["load_after"],
        "settings": {"max_rows": max_rows, "consumer_group": settings["consumer_group"]},
        "stdout_tail": measured["stdout"][-500:],
    }
    result["table"] = audit_table(f"{lake}/{ROUTE}", records)
    return result


def _spark_environment() -> dict[str, str]:
    # Spark binds to the address of the host name otherwise; everything here is local.
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def run_spark(run_id: str, round_no: int, records: int, spec: dict, logs: Path) -> dict:
    variant = f"spark-r{round_no}"
    base = f"{BUCKET}/{run_id}/{variant}"
    spec = {
        **spec,
        "table": f"s3a://{base}/{ROUTE}",
        "checkpoint": f"s3a://{base}/_checkpoints/{ROUTE}",
    }
    command = [
        *harness.worker_command("benchmarks.spark_peer", "spark"),
        "--spec",
        json.dumps(spec),
    ]
    _log(f"round {round_no}: Spark Structured Streaming -> {spec['table']}")
    measured = _spawn_measured(command, _spark_environment(), logs / f"{variant}.log")
    usage = measured["usage"]
    driver = harness.parse_worker_output(measured["stdout"])
    jvm = usage.processes.get(driver["jvm_pid"])
    if jvm is not None:  # the driver's own last reading of its JVM, after the session stopped
        jvm.cpu_seconds = max(jvm.cpu_seconds, driver["jvm_cpu_seconds"])
        jvm.peak_rss_kb = max(jvm.peak_rss_kb, int(driver["jvm_peak_rss_mb"] * 1024))
    result = {
        "variant": variant,
        **_figures(records, measured["wall_seconds"], usage.cpu_seconds()),
        "peak_tree_rss_mb": usage.peak_tree_rss_kb / 1024,
        "query_only": _figures(records, driver["query_seconds"], driver["query_cpu_seconds"]),
        "driver": driver,
        "tree": usage.as_dict(),
        "load_before": measured["load_before"],
        "load_after": measured["load_after"],
    }
    result["table"] = audit_table(f"s3://{base}/{ROUTE}", records)
    return result


def _ratios(sink: dict, spark: dict) -> dict[str, float]:
    """sink / Spark: CPU per row and memory (lower is better), rows/s (higher is better)."""
    return {
        "cpu_per_row": sink["cpu_s_per_million_rows"] / spark["cpu_s_per_million_rows"],
        "cpu_per_row_vs_query_only": sink["cpu_s_per_million_rows"]
        / spark["query_only"]["cpu_s_per_million_rows"],
        "rows_per_s": sink["rows_per_s"] / spark["rows_per_s"],
        "rows_per_s_vs_query_only": sink["rows_per_s"] / spark["query_only"]["rows_per_s"],
        "peak_rss": sink["peak_tree_rss_mb"] / spark["peak_tree_rss_mb"],
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each ratio over the rounds, its worst round, and the verdict."""
    keys = rounds[0]["ratios"].keys()
    medians = {k: statistics.median(r["ratios"][k] for r in rounds) for k in keys}
    worst = max(r["ratios"]["cpu_per_row"] for r in rounds)
    exact = all(r[side]["table"]["exact"] for r in rounds for side in ("sink", "spark"))
    return {
        "median_ratios": medians,
        "worst_cpu_per_row_ratio": worst,
        "all_tables_exact": exact,
        "target_cpu_per_row_ratio": TARGET_CPU_RATIO,
        "target_met": bool(harness.met(medians["cpu_per_row"], TARGET_CPU_RATIO, False)) and exact,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = harness.new_run_id()
    info = harness.machine_info("deltalake", "pyspark", "delta-spark")
    endpoints = use_stack_environment()
    ensure_bucket()
    logs = Path(tempfile.mkdtemp(prefix=f"spark-peer-{run_id}-"))
    results: dict[str, Any] = {
        "benchmark": "spark_peer",
        "run_id": run_id,
        "machine": info,
        "endpoints": endpoints,
        "params": {
            "records": args.records,
            "rounds": args.rounds,
            "max_rows_per_commit": args.max_rows,
            "spark_master": args.master,
            "logs": str(logs),
        },
        "note": args.note,
    }
    groups: list[str] = []
    try:
        backlog, schema_id, messages = build_backlog(run_id, args.records)
        del messages  # the harness stays small beside what it measures
        results["backlog"] = {**backlog, "schema_id": schema_id}
        spec = {"topic": backlog["topic"], "max_offsets": args.max_rows, "master": args.master}
        _log("starting a Spark session once, untimed: jars into the cache")
        resolve = subprocess.run(
            [*_worker_command("resolve"), "--spec", json.dumps(spec)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=(logs / "resolve.log").open("w"),
            env=_spark_environment(),
            text=True,
            check=True,
        )
        results["jar_resolution"] = harness.parse_worker_output(resolve.stdout)
        spec["jars"] = results["jar_resolution"]["jars"]
        rounds = []
        for round_no in range(1, args.rounds + 1):
            order = ("sink", "spark") if round_no % 2 else ("spark", "sink")
            runs: dict[str, Any] = {"round": round_no, "order": list(order)}
            for side in order:
                if side == "sink":
                    runs["sink"] = run_sink(run_id, round_no, args.records, args.max_rows, logs)
                    groups.append(runs["sink"]["settings"]["consumer_group"])
                else:
                    runs["spark"] = run_spark(run_id, round_no, args.records, spec, logs)
                _log(f"round {round_no}: {side}: {_line(runs[side])}")
            runs["ratios"] = _ratios(runs["sink"], runs["spark"])
            rounds.append(runs)
            # Each round's figures are kept as soon as they exist: a long run cut short
            # still leaves them.
            _write(args.out, {**results, "rounds": rounds, "summary": summarize(rounds)})
        results["rounds"] = rounds
        results["summary"] = summarize(rounds)
        results["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        cleanup(run_id, groups, args.keep)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(path, results)


def _line(r: dict[str, Any]) -> str:
    text = (
        f"{r['rows_per_s']:,.0f} rows/s, {r['cpu_s_per_million_rows']:.1f} CPU s/M rows, "
        f"peak RSS {r['peak_tree_rss_mb']:,.0f} MB, exact={r['table']['exact']}"
    )
    if "query_only" in r:
        q = r["query_only"]
        text += f" (query alone: {q['rows_per_s']:,.0f} rows/s, {q['cpu_s_per_million_rows']:.1f})"
    return text


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'run':<12} {'rows/s':>9} {'CPU s/M':>8} {'peak MB':>8} {'load':>5} exact",
    ]
    for r in results["rounds"]:
        for side in r["order"]:
            m = r[side]
            lines.append(
                f"{m['variant']:<12} {m['rows_per_s']:>9,.0f} {m['cpu_s_per_million_rows']:>8.1f}"
                f" {m['peak_tree_rss_mb']:>8,.0f} {m['load_before'][0]:>5.1f} {m['table']['exact']}"
            )
            if "query_only" in m:
                q = m["query_only"]
                lines.append(
                    f"{'  query only':<12} {q['rows_per_s']:>9,.0f}"
                    f" {q['cpu_s_per_million_rows']:>8.1f}"
                )
    s = results["summary"]
    med = s["median_ratios"]
    lines.append(
        f"sink/Spark (median of {len(results['rounds'])} rounds): CPU per row "
        f"{med['cpu_per_row']:.3f} (vs query alone {med['cpu_per_row_vs_query_only']:.3f}; "
        f"target <= {s['target_cpu_per_row_ratio']}), rows/s {med['rows_per_s']:.2f}x "
        f"(vs query alone {med['rows_per_s_vs_query_only']:.2f}x), "
        f"peak RSS {med['peak_rss']:.2f}x; "
        f"all exact: {s['all_tables_exact']}; target met: {s['target_met']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spark_peer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--max-rows",
        type=int,
        default=250_000,
        help="rows per Delta commit: the sink's max_rows and Spark's maxOffsetsPerTrigger",
    )
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="leave topics, groups and tables")
    parser.add_argument("--note", default="", help="kept in the results, e.g. how it was run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()
    if args.worker:
        use_stack_environment()
        {"spark": _worker_spark, "resolve": _worker_resolve}[args.worker](args.spec)
        return 0
    if args.records < 1 or args.rounds < 1 or args.max_rows < 1:
        parser.error("--records, --rounds and --max-rows must be positive")
    results = run(args)
    _write(args.out, results)
    print(table(results))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
