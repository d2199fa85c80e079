"""End-to-end latency benchmark: SQLite insert to Delta visibility, per route, and its cost.

    uv run python -m benchmarks.latency [--rate 1000] [--seconds 240] [--warmup 30]
        [--baseline-flush 30] [--out benchmarks/results/latency.json]

The pipeline of `benchmarks.e2e_stack`: three simulated edge nodes in three regions writing a
combined `--rate` rows/s (a third each), a producer per node, one router (the default routes),
one sink with its flush policies as shipped (every table at most 3 s / 100k rows / 64 MB, the
emergency table 1 s, the dead-letter table 5 s), on a dedicated broker and the local stack's
registry and S3 server. A separate reader process (`benchmarks.e2e_visibility`) follows every
Delta table commit by commit and notes when each row became visible.

Latency of a row = the moment the reader could read the commit holding it - the row's
`timestamp`. The simulator stamps `timestamp` with the wall clock as it generates the row and
commits the tick's rows (one transaction per 50 ms tick) right after, so the stamp is a little
before the row is in SQLite; that gap is measured, not assumed: a watcher in this process polls
each database's max(rowid) every 20 ms, which bounds when each row was committed (to +20 ms).
Reported per table and per route (the regional route over its three tables): p50/p95/p99/max
from the stamp (the headline, judged against the targets), the same from the observed SQLite
commit, the stamp-to-commit gap, and from the stamp to the writer's own commit time
(`commitInfo.timestamp`, which leaves out the reader's polling). For the emergency route a
consumer in this process also notes when each record became readable in `sensors.emergency`,
which splits its latency into the Kafka part (producer + router) and the sink's part.

Targets: emergency p99 <= 2 s; every other route p99 <= 5 s. Rows whose stamp falls in the
first `--warmup` seconds are left out of the figures (first-use costs: output topics created,
the first flush cycle) and reported apart. The lake is then checked against the SQLite sources
with the routing engine (`lake_expectation`): every row the reader saw, in every table it
belongs to, exactly once. What else ran on the machine shows in the load average, sampled with
CPU and memory of every process every 5 s.

The cost of that freshness, in the same run: a second sink (the baseline) lands the same
records into a lake of its own with the flush latencies as they were before seconds became
the default (`--baseline-flush`, 30 s; emergency 1 s, dead letters 5 s, given explicitly),
in a consumer group of its own. Each sink talks to S3 through a counting proxy of its own
(`benchmarks.s3_requests`); from the simulators' start until both have drained, the CPU time
of each (from /proc) per row landed, and its S3 requests per 1,000 rows, are compared. Target:
CPU per row at most 1.5x the baseline's. The baseline's tables must hold as many rows as the
shipped sink's. Its work loads the machine too, so the latency figures are, if anything,
pessimistic; `--baseline-flush 0` leaves it out.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.e2e_stack import REPO, E2EPipeline, max_latency_s
from infra.local_stack.pipeline import EdgeNode

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "latency.json"
EMERGENCY_P99_S = 2.0
OTHER_P99_S = 5.0
BASELINE_FLUSH_S = 30.0
"""The flush latency the bulk tables had before seconds became the default: the baseline."""
BASELINE_ROUTES = {"emergency": {"max_latency_s": 1.0}, "dlq": {"max_latency_s": 5.0}}
BASELINE_GROUP = "sensorstream-sink-baseline"
BASELINE_NAME = "sink-baseline"
CPU_RATIO_TARGET = 1.5
SAMPLE_S = 5.0
COMMIT_POLL_S = 0.02
DRAIN_TIMEOUT_S = 180.0


def _log(text: str) -> None:
    print(f"[latency-bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max by nearest rank (no interpolation: every figure is a real row's)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))], 3)

    return {"n": n, "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}


class _Watch:
    """A daemon thread running `_run` until `stop()`: what both watches share."""

    name = "watch"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class CommitWatch(_Watch):
    """When each row was committed to SQLite, to within the poll interval.

    A thread polls every node's max(rowid) on a read-only connection (WAL: never in the
    writer's way) and notes each change; a rowid was committed at the first poll that saw it.
    """

    name = "commit-watch"

    def __init__(self, nodes: list[EdgeNode], poll_s: float = COMMIT_POLL_S) -> None:
        self.nodes = nodes
        self.poll_s = poll_s
        self.seen: dict[str, tuple[list[int], list[float]]] = {n.node_id: ([], []) for n in nodes}
        super().__init__()

    def _run(self) -> None:
        conns = {
            n.node_id: sqlite3.connect(f"file:{n.db}?mode=ro", uri=True, timeout=2.0)
            for n in self.nodes
        }
        try:
            while not self._stop.wait(self.poll_s):
                for node_id, conn in conns.items():
                    with contextlib.suppress(sqlite3.Error):
                        (top,) = conn.execute("SELECT max(rowid) FROM sensor_readings").fetchone()
                        now = time.time()
                        rowids, times = self.seen[node_id]
                        if top and (not rowids or top > rowids[-1]):
                            rowids.append(int(top))
                            times.append(now)
        finally:
            for conn in conns.values():
                conn.close()

    def committed_at(self, node_id: str, rowid: int) -> float | None:
        rowids, times = self.seen.get(node_id, ([], []))
        i = bisect.bisect_left(rowids, rowid)
        return times[i] if i < len(times) else None


class TopicWatch(_Watch):
    """When each emergency record became readable (read_committed) in its routed topic.

    Splits the emergency route's latency into its Kafka part (producer and router) and the
    sink's part. A consumer in this process follows every partition of `sensors.emergency`
    and decodes each record (about 5% of the rows) for its (`_node_id`, `_source_rowid`).
    """

    name = "topic-watch"

    def __init__(self, kafka_config: dict[str, str], registry_url: str, topic: str) -> None:
        self.kafka_config = kafka_config
        self.registry_url = registry_url
        self.topic = topic
        self.seen: dict[tuple[str, int], float] = {}
        self.errors = 0
        super().__init__()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from schemas.avro_codec import AvroDecoder, UndecodableMessage
        from schemas.registry import SchemaRegistry

        decoder = AvroDecoder(SchemaRegistry({"url": self.registry_url}))
        consumer = Consumer(
            {
                **self.kafka_config,
                "group.id": "sensorstream-bench-latency-watch",  # assign() only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 50,
            }
        )
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                for message in consumer.consume(1000, timeout=0.1):
                    now = time.time()
                    if message.error():
                        continue
                    try:
                        _, record = decoder.decode(message.value())
                    except UndecodableMessage:
                        self.errors += 1
                        continue
                    key = (record["_node_id"], record["_source_rowid"])
                    self.seen.setdefault(key, now)
        finally:
            consumer.close()


def _start_reader(run: E2EPipeline, out: Path, poll_s: float) -> subprocess.Popen[bytes]:
    from infra.local_stack.pipeline import child_env
    from infra.local_stack.supervisor import die_with_parent

    assert run.servers is not None
    log = (run.work / "logs" / "visibility-reader.log").open("ab")
    command = [
        sys.executable,
        "-m",
        "benchmarks.e2e_visibility",
        "--lake",
        run.servers.lake_uri,
        "--tables",
        ",".join(run.tables()),
        "--out",
        str(out),
        "--poll",
        str(poll_s),
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=child_env(run.servers.env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def _target(table_or_route: str) -> float:
    return EMERGENCY_P99_S if table_or_route == "emergency" else OTHER_P99_S


def _route(table: str) -> str:
    return table.split("/")[0]


Views = tuple[float, float | None, float | None, float | None]


def _figures(rows: dict[str, list[Views]]) -> dict:
    """Per key: the four latency views of its rows."""
    out = {}
    for key, values in sorted(rows.items()):
        out[key] = {
            "from_stamp_s": percentiles([v[0] for v in values]),
            "from_sqlite_commit_s": percentiles([v[1] for v in values if v[1] is not None]),
            "stamp_to_sqlite_commit_s": percentiles(
                [v[0] - v[1] for v in values if v[1] is not None]
            ),
            "stamp_to_delta_commit_s": percentiles([v[2] for v in values if v[2] is not None]),
        }
        in_topic = [v for v in values if v[3] is not None]
        if in_topic:  # the emergency route: its Kafka part and its sink part
            out[key]["stamp_to_routed_topic_s"] = percentiles([v[3] for v in in_topic])
            out[key]["routed_topic_to_visible_s"] = percentiles([v[0] - v[3] for v in in_topic])
    return out


def analyse(
    seen: Any, watch: CommitWatch, topic: TopicWatch, steady_from: float, steady_to: float
) -> tuple[dict, dict, dict]:
    """Latency per table and per route for the steady window, and the warm-up apart."""
    steady: dict[str, list] = defaultdict(list)
    warm: dict[str, list] = defaultdict(list)
    columns = seen.to_pydict()
    for table, node, rowid, event_us, visible_us, commit_ms in zip(
        columns["table"],
        columns["node_id"],
        columns["rowid"],
        columns["event_us"],
        columns["visible_us"],
        columns["commit_ms"],
        strict=True,
    ):
        event = event_us / 1e6
        if event > steady_to:
            continue
        latency = visible_us / 1e6 - event
        committed = watch.committed_at(node, rowid)
        from_commit = None if committed is None else visible_us / 1e6 - committed
        delta_commit = None if commit_ms is None else commit_ms / 1e3 - event
        in_topic = topic.seen.get((node, rowid)) if table == "emergency" else None
        value = (latency, from_commit, delta_commit, None if in_topic is None else in_topic - event)
        bucket = steady if event >= steady_from else warm
        bucket[table].append(value)
        if table.startswith("regional/"):
            bucket["regional"].append(value)
    per_table = _figures({k: v for k, v in steady.items() if k != "regional"})
    per_route = _figures({k: v for k, v in steady.items() if "/" not in k and k != "regional"})
    if "regional" in steady:
        per_route["regional"] = _figures({"regional": steady["regional"]})["regional"]
    warmup = {k: percentiles([v[0] for v in vals]) for k, vals in sorted(warm.items())}
    return per_table, per_route, warmup


def completeness(run: E2EPipeline, seen: Any, dlq_rows: int) -> dict[str, Any]:
    """Every row the routing engine sends to a table was seen there by the reader, once."""
    from infra.local_stack.lake_expectation import DLQ_TABLE, expected_rows
    from stream_apps.app import DEFAULT_ROUTES as ROUTES_FILE

    expected = expected_rows(run.nodes, ROUTES_FILE)
    landed: dict[str, Counter] = defaultdict(Counter)
    columns = seen.to_pydict()
    for table, node, rowid in zip(
        columns["table"], columns["node_id"], columns["rowid"], strict=True
    ):
        landed[table][(node, rowid)] += 1
    out = {}
    for table in sorted(set(expected) | set(landed)):
        if table == DLQ_TABLE:
            want = len(expected.get(table, ()))
            out[table] = {"expected": want, "seen": dlq_rows, "ok": want == dlq_rows}
            continue
        want, have = expected.get(table, set()), landed.get(table, Counter())
        missing = sum(1 for i in want if i not in have)
        duplicated = sum(1 for n in have.values() if n > 1)
        unexpected = sum(1 for i in have if i not in want)
        out[table] = {
            "expected": len(want),
            "seen": sum(have.values()),
            "missing": missing,
            "duplicated": duplicated,
            "unexpected": unexpected,
            "ok": not (missing or duplicated or unexpected),
        }
    return out


class FreshnessCost:
    """What each sink of the run spent between `begin` and `end`: its CPU time (from /proc)
    and the S3 requests it made (counted by its own proxy, `benchmarks.s3_requests`)."""

    def __init__(self, pipe: E2EPipeline, counters: dict[str, Any]) -> None:
        self.pipe = pipe
        self.counters = counters
        self._begin: dict[str, tuple[float, Counter]] = {}
        self._end: dict[str, tuple[float, Counter]] = {}
        self.seconds = 0.0

    def _read(self) -> dict[str, tuple[float, Counter]]:
        from benchmarks.e2e_sampling import cpu_seconds

        pids = self.pipe.pids()
        out = {}
        for name, counter in self.counters.items():
            cpu = cpu_seconds(pids[name]) if name in pids else None
            if cpu is None:
                raise RuntimeError(f"{name} is not running: its CPU time cannot be read")
            out[name] = (cpu, counter.counts())
        return out

    def begin(self) -> None:
        self._begin, self.seconds = self._read(), time.monotonic()

    def end(self) -> None:
        self._end, self.seconds = self._read(), time.monotonic() - self.seconds

    def of(self, name: str, rows: int) -> dict[str, Any]:
        from benchmarks.s3_requests import per_thousand_rows

        cpu = self._end[name][0] - self._begin[name][0]
        requests = self._end[name][1] - self._begin[name][1]
        return {
            "rows_landed": rows,
            "cpu_seconds": round(cpu, 2),
            "cpu_us_per_row": None if not rows else round(1e6 * cpu / rows, 2),
            "s3": per_thousand_rows(requests, rows),
            "s3_requests_failed": self.counters[name].errors,
        }


def _table_counts(lake: str, tables: list[str], options: dict[str, str]) -> dict[str, dict]:
    """Rows and commits of each table of `lake` (the baseline sink's, which no reader follows)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    out = {}
    for name in tables:
        try:
            table = DeltaTable(f"{lake}/{name}", storage_options=options or None)
        except TableNotFoundError:
            out[name] = {"rows": 0, "versions": 0}
            continue
        rows = table.to_pyarrow_dataset().count_rows()
        out[name] = {"rows": rows, "versions": table.version() + 1}
    return out


def _baseline_env(lake: str, endpoint: str | None) -> dict[str, str]:
    """The baseline sink: the shipped sink with the old flush latencies given explicitly, a
    consumer group and a lake of its own."""
    env = {
        "SENSORSTREAM_SINK_CONSUMER_GROUP": BASELINE_GROUP,
        "SENSORSTREAM_SINK_ROUTES": json.dumps(BASELINE_ROUTES),
        "SENSORSTREAM_LAKE_URI": lake,
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def compare_cost(
    cost: FreshnessCost, shipped_seen: dict[str, dict], baseline: dict[str, dict] | None
) -> dict[str, Any]:
    """CPU per row and S3 requests per 1,000 rows of the shipped sink, against the baseline
    sink (30 s flushes) on the same records in the same window."""
    from benchmarks.e2e_stack import SINK_NAME, shipped_flush_policies

    shipped_rows = sum(v["rows"] for v in shipped_seen.values())
    out: dict[str, Any] = {
        "window_seconds": round(cost.seconds, 1),
        "shipped": {
            "flush_policies": shipped_flush_policies(),
            **cost.of(SINK_NAME, shipped_rows),
            "delta_versions_per_table": {t: v["versions"] for t, v in shipped_seen.items()},
        },
    }
    if baseline is None:
        return out
    baseline_rows = sum(v["rows"] for v in baseline.values())
    base = cost.of(BASELINE_NAME, baseline_rows)
    out["baseline"] = {
        "flush_policies": {"(default)": {"max_latency_s": BASELINE_FLUSH_S}, **BASELINE_ROUTES},
        **base,
        "delta_versions_per_table": {t: v["versions"] for t, v in baseline.items()},
    }
    shipped = out["shipped"]
    ratio = (
        round(shipped["cpu_us_per_row"] / base["cpu_us_per_row"], 2)
        if shipped["cpu_us_per_row"] and base["cpu_us_per_row"]
        else None
    )
    s3_ratio = (
        round(shipped["s3"]["per_1000_rows"] / base["s3"]["per_1000_rows"], 2)
        if shipped["s3"]["per_1000_rows"] and base["s3"]["per_1000_rows"]
        else None
    )
    same = {t: v["rows"] for t, v in shipped_seen.items()} == {
        t: v["rows"] for t, v in baseline.items()
    }
    out["cpu_per_row_ratio"] = ratio
    out["cpu_per_row_target"] = CPU_RATIO_TARGET
    out["cpu_per_row_met"] = ratio is not None and ratio <= CPU_RATIO_TARGET
    out["s3_requests_per_row_ratio"] = s3_ratio
    out["baseline_landed_the_same_rows"] = same
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from benchmarks.e2e_sampling import Sampler, drive
    from benchmarks.e2e_stack import REGIONS, SINK_NAME, shipped_flush_policies
    from benchmarks.s3_requests import S3RequestCounter

    info = harness.machine_info()
    compare = args.baseline_flush > 0
    with (
        contextlib.ExitStack() as proxies,
        E2EPipeline("latency", args.rate, keep=args.keep, say=_log) as pipe,
    ):
        assert pipe.servers is not None
        out_rows = pipe.work / "visibility.parquet"
        endpoint = pipe.servers.env.get("AWS_ENDPOINT_URL")
        counters: dict[str, Any] = {}
        names = [SINK_NAME, *([BASELINE_NAME] if compare else [])]
        for name in names:
            if endpoint:
                counters[name] = proxies.enter_context(S3RequestCounter(endpoint))
        sink_env = {"AWS_ENDPOINT_URL": counters[SINK_NAME].url} if endpoint else {}
        _log(f"run {pipe.run_id}: starting producers, router and sink (logs {pipe.work}/logs)")
        pipe.start_stages(sink_env=sink_env)
        baseline_lake = f"{pipe.servers.lake_uri}-baseline"
        if compare:
            _log(f"starting the baseline sink (every table {args.baseline_flush:g} s)")
            baseline_endpoint = counters[BASELINE_NAME].url if endpoint else None
            pipe.start_extra_sink(
                BASELINE_NAME, args.baseline_flush, _baseline_env(baseline_lake, baseline_endpoint)
            )
        reader = _start_reader(pipe, out_rows, args.poll)
        watch = CommitWatch(pipe.nodes)
        watch.start()
        topic = TopicWatch(pipe.kafka_config, pipe.servers.registry_url, "sensors.emergency")
        topic.start()
        sampler = Sampler(
            pipe.kafka_config,
            pipe.nodes,
            REGIONS,
            other_sink_groups=(BASELINE_GROUP,) if compare else (),
        )
        cost = FreshnessCost(pipe, counters if endpoint else {})
        try:
            cost.begin()
            pipe.start_simulators()
            started = time.time()
            _log(f"simulators writing {args.rate:g} rows/s on {len(pipe.nodes)} nodes")
            samples = drive(
                sampler,
                args.warmup + args.seconds,
                SAMPLE_S,
                lambda: {**pipe.pids(), "reader": reader.pid},
                lambda: (
                    pipe.exited()
                    + ([] if reader.poll() is None else [f"the reader exit {reader.returncode}"])
                ),
                _log,
            )
            pipe.stop_simulators()
            stopped = time.time()
            _log("simulators stopped; waiting for the pipeline to drain")
            drain_began = time.monotonic()
            drained, tail = sampler.wait_drained(pipe.pids, DRAIN_TIMEOUT_S, _log)
            if not drained:
                raise RuntimeError(f"not drained after {DRAIN_TIMEOUT_S:.0f} s")
            cost.end()
            drain_s = time.monotonic() - drain_began
            time.sleep(max(3.0, 5 * args.poll))  # the reader's last polls
        finally:
            watch.stop()
            topic.stop()
            sampler.close()
            reader.terminate()
            try:
                reader.wait(120)
            except subprocess.TimeoutExpired:
                reader.kill()
            unclean = pipe.stop_stages()
        if reader.returncode != 0 or not out_rows.exists():
            raise RuntimeError(f"the reader failed (exit {reader.returncode}); see its log")
        seen = pq.read_table(out_rows)
        reader_summary = json.loads(out_rows.with_suffix(".json").read_text())
        steady_from = started + args.warmup
        per_table, per_route, warmup = analyse(seen, watch, topic, steady_from, stopped)
        _log("checking every table against the SQLite sources (routing engine)")
        check = completeness(pipe, seen, reader_summary.get("dlq", {}).get("rows", 0))
        baseline = (
            _table_counts(baseline_lake, pipe.tables(), pipe.servers.storage_options)
            if compare
            else None
        )
        freshness_cost = compare_cost(cost, reader_summary, baseline) if endpoint else None
        described = pipe.describe()
    targets = {}
    for route, figures in per_route.items():
        p99 = figures["from_stamp_s"]["p99"]
        target = _target(route)
        targets[route] = {
            "target_p99_s": target,
            "p99_s": p99,
            "p99_vs_target": None if p99 is None else round(p99 / target, 2),
            "flush_latency_s": max_latency_s(route),
            "met": p99 is not None and p99 <= target,
        }
    loads = [s.load_average[0] for s in samples]
    return {
        "benchmark": "latency",
        "machine": info,
        "params": {
            "rate": args.rate,
            "steady_seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "reader_poll_s": args.poll,
            "baseline_flush_s": args.baseline_flush or None,
            "commit_watch_poll_s": COMMIT_POLL_S,
        },
        "pipeline": described,
        "flush_policies_as_shipped": shipped_flush_policies(),
        "run": {
            "simulators_seconds": round(stopped - started, 1),
            "steady_window_seconds": round(stopped - steady_from, 1),
            "drain_seconds": round(drain_s, 1),
            "rows_written": tail[-1].written,
            "rows_per_table_seen": {t: v["rows"] for t, v in reader_summary.items()},
            "delta_versions_per_table": {t: v["versions"] for t, v in reader_summary.items()},
            "reader_errors": {t: v["errors"] for t, v in reader_summary.items() if v["errors"]},
            "stages_not_stopped_cleanly": unclean,
            "load_average_1m": {
                "min": min(loads, default=None),
                "mean": round(sum(loads) / len(loads), 2) if loads else None,
                "max": max(loads, default=None),
            },
        },
        "latency_per_route": per_route,
        "latency_per_table": per_table,
        "warmup_latency_from_stamp_s": warmup,
        "targets": targets,
        "completeness": check,
        "cost_of_freshness": freshness_cost,
        "samples": [s.as_dict() for s in samples],
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"latency benchmark {results['pipeline']['run_id']}: {results['params']['rate']:g} rows/s "
        f"on 3 nodes, steady window {results['run']['steady_window_seconds']} s, load average "
        f"{results['run']['load_average_1m']['mean']}",
        f"{'route':<14}{'rows':>9}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   target p99",
    ]
    for route, fig in results["latency_per_route"].items():
        f = fig["from_stamp_s"]
        t = results["targets"][route]
        verdict = "met" if t["met"] else "MISSED"
        lines.append(
            f"{route:<14}{f['n']:>9,}{f['p50']:>8.2f}{f['p95']:>8.2f}{f['p99']:>8.2f}"
            f"{f['max']:>8.2f}   <= {t['target_p99_s']:g} s {verdict}"
        )
    emergency = results["latency_per_route"].get("emergency", {})
    for label, key in (
        ("emergency: stamp -> readable in sensors.emergency", "stamp_to_routed_topic_s"),
        ("emergency: sensors.emergency -> visible in Delta", "routed_topic_to_visible_s"),
    ):
        part = emergency.get(key)
        if part and part["n"]:
            lines.append(
                f"{label}: p50 {part['p50']:.2f} s, p99 {part['p99']:.2f} s, "
                f"max {part['max']:.2f} s"
            )
    gap = results["latency_per_route"].get("raw", {}).get("stamp_to_sqlite_commit_s", {})
    if gap.get("n"):
        lines.append(
            f"stamp -> SQLite commit (raw rows): p50 {gap['p50']:.3f} s, p99 {gap['p99']:.3f} s, "
            f"max {gap['max']:.3f} s"
        )
    cost = results.get("cost_of_freshness") or {}
    for name in ("shipped", "baseline"):
        if name in cost:
            c = cost[name]
            lines.append(
                f"{name} sink: {c['cpu_us_per_row']} CPU µs/row, "
                f"{c['s3']['per_1000_rows']} S3 requests per 1,000 rows ({c['rows_landed']:,} rows)"
            )
    if "cpu_per_row_ratio" in cost:
        verdict = "met" if cost["cpu_per_row_met"] else "MISSED"
        lines.append(
            f"CPU per row vs {BASELINE_FLUSH_S:g} s flushes: {cost['cpu_per_row_ratio']}x "
            f"(target <= {CPU_RATIO_TARGET:g}x) {verdict}; S3 requests per row "
            f"{cost['s3_requests_per_row_ratio']}x; baseline landed the same rows: "
            f"{cost['baseline_landed_the_same_rows']}"
        )
    bad = [t for t, c in results["completeness"].items() if not c["ok"]]
    lines.append(
        "completeness: " + ("every table exactly as routed" if not bad else f"WRONG in {bad}")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="rows/s, all nodes together")
    parser.add_argument("--seconds", type=float, default=240.0, help="steady-state window")
    parser.add_argument("--warmup", type=float, default=30.0, help="left out of the figures")
    parser.add_argument("--poll", type=float, default=0.2, help="the reader's poll interval")
    parser.add_argument(
        "--baseline-flush",
        type=float,
        default=BASELINE_FLUSH_S,
        help="flush latency of the baseline sink run beside the shipped one, for the cost "
        "comparison (0: no baseline sink)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--rate and --seconds must be positive, --warmup >= 0")

    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()
    results = run(args)
    harness.write_results(args.out, results)
    print(table(results))
    print(f"results: {args.out}")
    cost = results.get("cost_of_freshness") or {}
    ok = (
        all(t["met"] for t in results["targets"].values())
        and all(c["ok"] for c in results["completeness"].values())
        and cost.get("cpu_per_row_met", True)
        and cost.get("baseline_landed_the_same_rows", True)
    )
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # deltalake may abort the interpreter at exit (delta-rs 2184)


if __name__ == "__main__":
    main()
