"""Chaos benchmark (issue 6): the larger chaos run, against a calm run of the same size.

    uv run python -m benchmarks.chaos [--seed N] [--nodes 3] [--routers 3] [--sinks 3]
        [--duration 120] [--kills 20] [--broker-restarts 2] [--out benchmarks/results/chaos.json]

About 8 minutes with the defaults (a calm run, then the chaos run, each with its own broker).

The same run as tests/integration/infra/test_chaos.py (`infra.local_stack.chaos`), bigger: more edge
nodes, more router and sink instances, a longer window with more SIGKILLs (some restarts armed
with a product failpoint) and more broker restarts. Each run gets a dedicated Kafka broker on
free ports (restarting the stack's broker would disturb everyone else) and its own lake prefix on
the local stack's S3 server; the schema registry is the stack's.

Correctness is the verdict: `sensorstream audit --settled --sqlite` of every node must find
every Delta table holding exactly the rows its routes select from the SQLite sources (no loss,
no duplicates, nothing unexpected, nothing left in flight). Cost is reported against a
baseline measured in the same invocation: a calm run of the same size (no kills, no broker
restart). The ratios are the drain time (simulators stopped -> every stage caught up) and the
whole run, chaos over calm: how much recovery the kills and restarts cost. `--no-baseline`
skips the calm run. Exit code 1 when the audit finds anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "chaos.json"


def _run(plan: Any, variant: str, run_id: str) -> dict[str, Any]:
    from infra.local_stack.chaos import ChaosRun
    from infra.local_stack.dedicated_kafka import DedicatedKafka
    from infra.local_stack.stack import LocalStack
    from sensorstream.settings import ConnectionSettings

    stack = LocalStack()
    stack.up()
    exports = stack.exports()
    connection = ConnectionSettings(**{k.lower(): v for k, v in exports.items()})
    bucket = stack.settings.s3_bucket
    lake = f"s3://{bucket}/bench-chaos/{run_id}/{variant}"
    work = Path(tempfile.mkdtemp(prefix=f"sensorstream-chaos-{variant}-"))
    began = time.monotonic()
    try:
        with DedicatedKafka(work / "kafka") as kafka:
            result = ChaosRun(
                plan,
                kafka,
                connection.schema_registry_url,
                lake,
                connection.storage_options(),
                work / "pipeline",
            ).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(result.report(), flush=True)
    return {
        "variant": variant,
        "lake": lake,
        "ok": result.ok,
        "drained": result.drained,
        "seconds": round(time.monotonic() - began, 1),
        "phases_s": {k: round(v, 1) for k, v in result.phases.items()},
        "rows_written": result.written,
        "audit": {"findings": result.audit, "nodes": result.node_lines()},
        "kills": [dataclasses.asdict(k) for k in result.kills],
        "self_exits": result.self_exits,
        "events": [dataclasses.asdict(e) for e in result.events],
    }


def _ratio(chaos: float, calm: float) -> float | None:
    return round(chaos / calm, 2) if calm > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--routers", type=int, default=3)
    parser.add_argument("--sinks", type=int, default=3)
    parser.add_argument("--rate", type=float, default=150.0, help="rows/s per node")
    parser.add_argument("--duration", type=float, default=120.0, help="chaos window, seconds")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--no-baseline", action="store_true", help="skip the calm run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if min(args.nodes, args.routers, args.sinks) < 1 or args.duration <= 0 or args.kills < 0:
        parser.error("--nodes, --routers, --sinks must be >= 1, --duration > 0, --kills >= 0")

    from infra.local_stack.chaos import ChaosPlan
    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    print(f"chaos benchmark seed {seed} (replay with --seed {seed})", flush=True)
    plan = ChaosPlan(
        seed=seed,
        nodes=args.nodes,
        routers=args.routers,
        sinks=args.sinks,
        rate=args.rate,
        chaos_s=args.duration,
        kills=args.kills,
        broker_restarts=args.broker_restarts,
        drain_timeout_s=max(240.0, args.duration * 2),
    )
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    runs = []
    if not args.no_baseline:
        calm = dataclasses.replace(plan, kills=0, broker_restarts=0, failpoint_share=0.0)
        runs.append(_run(calm, "calm", run_id))
    runs.append(_run(plan, "chaos", run_id))
    chaos_run = runs[-1]
    results: dict[str, Any] = {
        "benchmark": "chaos",
        "date": datetime.now(UTC).isoformat(),
        "plan": dataclasses.asdict(plan),
        "runs": runs,
        "ok": chaos_run["ok"],
    }
    if not args.no_baseline:
        calm_run = runs[0]
        results["ratios_chaos_over_calm"] = {
            "drain": _ratio(
                chaos_run["phases_s"].get("drain", 0), calm_run["phases_s"].get("drain", 0)
            ),
            "whole_run": _ratio(chaos_run["seconds"], calm_run["seconds"]),
        }
    try:
        from benchmarks import harness

        results["machine"] = harness.machine_info()
    except Exception as exc:  # the figures stand without it
        results["machine"] = {"error": str(exc)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    for run in runs:
        rows = sum(run["rows_written"].values())
        bad = len(run["audit"]["findings"])
        print(
            f"{run['variant']:<6} {'OK' if run['ok'] else 'FAILED':<7} {rows:>9,} rows  "
            f"{len(run['kills']):>3} kills  drain {run['phases_s'].get('drain', 0):6.1f} s  "
            f"total {run['seconds']:6.1f} s" + (f"  audit findings: {bad}" if bad else "")
        )
    if "ratios_chaos_over_calm" in results:
        print(f"chaos / calm: {results['ratios_chaos_over_calm']}")
    print(f"results: {args.out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
