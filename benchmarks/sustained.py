"""Sustained-load benchmark (issue 6, item 4): the whole pipeline at a steady rate for a long time.

    uv run python -m benchmarks.sustained [--minutes 30] [--rate 2000] [--sample-s 5]
    uv run python -m benchmarks.sustained --find-max [--start-rate 2000] [--step-rate 1000]
        [--step-minutes 3] [--max-rate 12000]

The pipeline of `benchmarks.e2e_stack` (three simulated edge nodes in three regions writing a
combined `--rate` rows/s, a producer per node, one router, one sink with its shipped flush
policies; a dedicated broker, the local stack's registry and S3 server), sampled every
`--sample-s` seconds from outside (`benchmarks.e2e_sampling`): rows written (SQLite), rows
produced (the producers' checkpoints), the router's and the sink's committed offsets against
the end of their input topics (admin API), and CPU% and RSS of every process, the three servers
included. Written to `--out` as a time series plus a summary:

- **throughput held**: over the steady window (after `--warmup-s`), the simulators wrote at
  least 95% of `--rate`, and each stage kept up with the one before it: produced / written,
  router input / produced >= 0.95; sink input / routed output >= 0.90 (the sink commits its
  offsets only when a table flushes, every 30 s as shipped, so its counter moves in steps).
- **lag bounded**, per stage, in seconds of that stage's input (lag records / input rate):
  the peak in the last third of the window is at most the stage's bound (producer and router
  5 s; sink the longest shipped flush latency + 15 s, since it holds up to 30 s of records by
  design) and the lag is not growing: its floor (lowest sample) in the last third is at most
  1.25 x the middle third's floor + 2 s of input. Floors, not peaks, because a stage that keeps
  up comes back to the same floor after each commit, wherever its peaks fall (the sink's lag is
  a 30 s sawtooth); each third must span a flush cycle, so windows of 90 s or more. After the
  simulators stop the pipeline must drain: every row in Kafka, no record left uncommitted by
  either group (read exactly, `Sampler.drained`).
- **memory flat**: RSS per process, mean of the first minute of the window against the mean of
  its last minute (`rss_grew` lists those above x1.25), and the maximum. The sink's RSS follows
  its buffer (up to 30 s of records per table), so it swings within each flush cycle.

`--find-max` steps the rate up (`--start-rate`, + `--step-rate`, ... for `--step-minutes` each,
on one pipeline, simulators restarted at each new rate) until a step's lag grows (the growth
rule above, any stage) or the rows are not written and produced at the rate (the router's and
the sink's keeping up is judged by their lag only: a short step cuts their offset rates
mid-flush), and reports the highest rate that held, each step's CPU% per process, and which
process first kept ~a whole core busy (mean >= 90% of one core). On a shared machine a
starved process cannot show 100%, so each process's run-queue wait (/proc schedstat: runnable,
waiting for a CPU) is sampled too, and the process with the most CPU used + waited for is
named as the one that wanted the most. Steps of 3 minutes or more
(the warm-up of each is a quarter of it, at most 30 s) keep every third over a flush cycle.

With `--verify` (the default when a run writes at most 600k rows) every Delta table is compared
row by row with what the routing engine makes of the SQLite sources (`lake_expectation`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import harness
from benchmarks.e2e_sampling import ProcessDied, Sample, Sampler, drive
from benchmarks.e2e_stack import REGIONS, E2EPipeline, max_latency_s

if TYPE_CHECKING:
    from sensorstream.settings import ConnectionSettings

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "sustained.json"
DEFAULT_FIND_MAX_OUT = BENCH_DIR / "results" / "sustained-find-max.json"
WRITTEN_SHARE = 0.95  # of the target rate the simulators must reach
KEEP_UP_SHARE = 0.95  # producer and router, of the stage before
SINK_KEEP_UP_SHARE = 0.90
PRODUCER_LAG_BOUND_S = 5.0
ROUTER_LAG_BOUND_S = 5.0
SINK_LAG_SLACK_S = 15.0
GROWTH_FACTOR = 1.25
GROWTH_SLACK_S = 2.0
SATURATED_PCT = 90.0
RSS_GROWTH_LIMIT = 1.25  # last minute / first minute of the window, per process
VERIFY_MAX_ROWS = 600_000
DRAIN_TIMEOUT_S = 300.0


def _log(text: str) -> None:
    print(f"[sustained-bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the run ----------------------------------------------------------------------------------


# -- the summary ------------------------------------------------------------------------------


def _rate(samples: list[Sample], pick: Callable[[Sample], int]) -> float:
    if len(samples) < 2 or samples[-1].t <= samples[0].t:
        return 0.0
    return (pick(samples[-1]) - pick(samples[0])) / (samples[-1].t - samples[0].t)


def _thirds(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The middle and the last third of the window, by time."""
    t0, t1 = samples[0].t, samples[-1].t
    span = t1 - t0
    middle = [s for s in samples if t0 + span / 3 <= s.t < t0 + 2 * span / 3]
    last = [s for s in samples if s.t >= t0 + 2 * span / 3]
    return middle, last


def lag_verdict(
    samples: list[Sample], pick: Callable[[Sample], int], input_rate: float, bound_s: float
) -> dict[str, Any]:
    """Whether a stage's lag stayed bounded: see the module docstring for the rule.

    Peaks are held against the bound; troughs tell growth: a stage that keeps up returns to
    the same floor after each commit (the sink's lag is a 30 s sawtooth by design, and where
    its peaks fall depends on when the flushes do), one that falls behind does not.
    """
    middle, last = _thirds(samples)
    per_s = max(input_rate, 1e-9)

    def seconds(records: int) -> float:
        return round(records / per_s, 2)

    peak_middle = seconds(max((pick(s) for s in middle), default=0))
    peak_last = seconds(max((pick(s) for s in last), default=0))
    floor_middle = seconds(min((pick(s) for s in middle), default=0))
    floor_last = seconds(min((pick(s) for s in last), default=0))
    growth_limit = round(GROWTH_FACTOR * floor_middle + GROWTH_SLACK_S, 2)
    growing = floor_last > growth_limit
    return {
        "bound_s": bound_s,
        "peak_middle_third_s": peak_middle,
        "peak_last_third_s": peak_last,
        "floor_middle_third_s": floor_middle,
        "floor_last_third_s": floor_last,
        "at_end_s": seconds(pick(samples[-1])),
        "max_s": seconds(max(pick(s) for s in samples)),
        "growth_limit_s": growth_limit,
        "growing": growing,
        "bounded": peak_last <= bound_s and not growing,
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def process_summary(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """CPU% and RSS per process over the window: RSS first minute vs last minute."""
    t0, t1 = samples[0].t, samples[-1].t
    out: dict[str, dict[str, Any]] = {}
    names = sorted({n for s in samples for n in s.processes})
    for name in names:
        seen = [(s.t, s.processes[name]) for s in samples if name in s.processes]
        cpu = [p["cpu_pct"] for _, p in seen if p.get("cpu_pct") is not None]
        waits = [p["runqueue_wait_pct"] for _, p in seen if p.get("runqueue_wait_pct") is not None]
        rss = [(t, p["rss_mb"]) for t, p in seen if p.get("rss_mb") is not None]
        first = [r for t, r in rss if t <= t0 + 60]
        last = [r for t, r in rss if t >= t1 - 60]
        start, end = _mean(first), _mean(last)
        out[name] = {
            "cpu_pct_mean": _mean(cpu),
            "cpu_pct_max": round(max(cpu), 1) if cpu else None,
            "runqueue_wait_pct_mean": _mean(waits),
            "rss_mb_first_minute": start,
            "rss_mb_last_minute": end,
            "rss_mb_max": round(max(r for _, r in rss), 1) if rss else None,
            "rss_growth_ratio": round(end / start, 3) if start and end else None,
        }
    return out


def summarise(samples: list[Sample], rate: float, warmup_s: float) -> dict[str, Any]:
    """The steady window's verdicts: throughput, lag, memory, CPU."""
    steady = [s for s in samples if s.t >= samples[0].t + warmup_s] or samples
    written = _rate(steady, lambda s: s.written)
    produced = _rate(steady, lambda s: s.produced)
    router_in = _rate(steady, lambda s: s.router_in)
    routed = _rate(steady, lambda s: s.routed_end)
    sink_in = _rate(steady, lambda s: s.sink_in)

    def share(a: float, b: float) -> float:
        return round(a / b, 3) if b > 0 else 0.0

    ratios = {
        "written_vs_target": share(written, rate),
        "produced_vs_written": share(produced, written),
        "router_in_vs_produced": share(router_in, produced),
        "sink_in_vs_routed_out": share(sink_in, routed),
    }
    held = (
        ratios["written_vs_target"] >= WRITTEN_SHARE
        and ratios["produced_vs_written"] >= KEEP_UP_SHARE
        and ratios["router_in_vs_produced"] >= KEEP_UP_SHARE
        and ratios["sink_in_vs_routed_out"] >= SINK_KEEP_UP_SHARE
    )
    sink_bound = max(max_latency_s(t) for t in ("raw", "emergency", "dlq")) + SINK_LAG_SLACK_S
    lag = {
        "producer": lag_verdict(steady, lambda s: s.producer_lag, rate, PRODUCER_LAG_BOUND_S),
        "router": lag_verdict(steady, lambda s: s.router_lag, rate, ROUTER_LAG_BOUND_S),
        "sink": lag_verdict(steady, lambda s: s.sink_lag, max(routed, rate), sink_bound),
    }
    processes = process_summary(steady)
    saturated = sorted(
        (n for n, p in processes.items() if (p["cpu_pct_mean"] or 0) >= SATURATED_PCT),
        key=lambda n: -(processes[n]["cpu_pct_mean"] or 0),
    )
    loads = [s.load_average[0] for s in steady]
    return {
        "window_seconds": round(steady[-1].t - steady[0].t, 1),
        "rates_per_s": {
            "target": rate,
            "written": round(written, 1),
            "produced": round(produced, 1),
            "router_in_offsets": round(router_in, 1),
            "routed_out_offsets": round(routed, 1),
            "sink_in_offsets": round(sink_in, 1),
            "outputs_per_input": share(routed, router_in),
        },
        "ratios": ratios,
        "throughput_held": held,
        "input_held": ratios["written_vs_target"] >= WRITTEN_SHARE
        and ratios["produced_vs_written"] >= KEEP_UP_SHARE,
        "lag": lag,
        "lag_bounded": all(v["bounded"] for v in lag.values()),
        "lag_growing": any(v["growing"] for v in lag.values()),
        "processes": processes,
        "rss_grew": [
            n for n, p in processes.items() if (p["rss_growth_ratio"] or 0) > RSS_GROWTH_LIMIT
        ],
        "saturated": saturated,
        "top_cpu": max(processes, key=lambda n: processes[n]["cpu_pct_mean"] or 0),
        # CPU used + CPU waited for: on a shared machine, what a process would have used
        "top_demand": max(
            processes,
            key=lambda n: (
                (processes[n]["cpu_pct_mean"] or 0) + (processes[n]["runqueue_wait_pct_mean"] or 0)
            ),
        ),
        "load_average_1m": {
            "min": min(loads),
            "mean": round(sum(loads) / len(loads), 2),
            "max": max(loads),
        },
    }


def verify(pipe: E2EPipeline) -> list[dict[str, Any]]:
    """`sensorstream audit --settled --sqlite` of every node, as an operator runs it: every
    row in raw once or dead-lettered, in each routed table exactly when its routes select it,
    none still in flight. One entry per node: its findings (none: exact) and its counts."""
    from infra.local_stack import pipeline
    from infra.local_stack.audit_cli import run_audit, unproven

    assert pipe.servers is not None
    checks = []
    for node in pipe.nodes:
        report = run_audit(
            pipeline.child_env(pipe.servers.env), "--settled", sqlite=node.db, node_id=node.node_id
        )
        (edge,) = [t for t in report["edge_tallies"] if t["node_id"] == node.node_id]
        findings = unproven(report)
        checks.append(
            {
                "node_id": node.node_id,
                "ok": not findings,
                "source_rows": edge["source_rows"],
                "in_raw": edge["in_raw"],
                "findings": findings,
            }
        )
    return checks


# -- the two modes -----------------------------------------------------------------------------


def _finish(
    pipe: E2EPipeline, sampler: Sampler, results: dict[str, Any], check: bool | None
) -> None:
    """Stop the simulators, drain, stop the stages, verify; into `results`."""
    pipe.stop_simulators()
    _log("simulators stopped; waiting for the pipeline to drain")
    began = time.monotonic()
    drained, tail = sampler.wait_drained(pipe.pids, DRAIN_TIMEOUT_S, _log)
    results["drain"] = {
        "drained": drained,
        "seconds": round(time.monotonic() - began, 1),
        "final": tail[-1].as_dict() if tail else None,
    }
    results["stages_not_stopped_cleanly"] = pipe.stop_stages()
    rows = tail[-1].written if tail else 0
    results["rows_written"] = rows
    if check is None:
        check = rows <= VERIFY_MAX_ROWS
    if check:
        _log(f"verifying every table against the {rows:,} SQLite rows")
        results["verification"] = verify(pipe)
    else:
        results["verification"] = None


def run_sustained(
    rate: float,
    seconds: float,
    *,
    sample_s: float = 5.0,
    warmup_s: float = 60.0,
    check: bool | None = None,
    connection: ConnectionSettings | None = None,
) -> dict[str, Any]:
    """One run at `rate` for `seconds`; the results (also on failure: `error` says what)."""

    results: dict[str, Any] = {
        "benchmark": "sustained",
        "machine": harness.machine_info(),
        "params": {"rate": rate, "seconds": seconds, "sample_s": sample_s, "warmup_s": warmup_s},
        "error": None,
    }
    samples: list[Sample] = []
    with E2EPipeline("sustained", rate, connection=connection, say=_log) as pipe:
        pipe.start_stages()
        results["pipeline"] = pipe.describe()
        sampler = Sampler(pipe.kafka_config, pipe.nodes, REGIONS)
        try:
            pipe.start_simulators()
            _log(f"run {pipe.run_id}: {rate:g} rows/s for {seconds:g} s")
            try:
                samples = drive(sampler, seconds, sample_s, pipe.pids, pipe.exited, _log)
                results["alive_throughout"] = True
            except ProcessDied as exc:
                results["alive_throughout"] = False
                results["error"] = str(exc)
            _finish(pipe, sampler, results, check)
        finally:
            sampler.close()
    results["samples"] = [s.as_dict() for s in samples]
    results["summary"] = summarise(samples, rate, warmup_s) if len(samples) >= 3 else None
    return results


def run_find_max(args: argparse.Namespace) -> dict[str, Any]:

    results: dict[str, Any] = {
        "benchmark": "sustained-find-max",
        "machine": harness.machine_info(),
        "params": {
            "start_rate": args.start_rate,
            "step_rate": args.step_rate,
            "step_seconds": args.step_minutes * 60,
            "max_rate": args.max_rate,
            "sample_s": args.sample_s,
        },
        "steps": [],
        "error": None,
    }
    warmup = min(30.0, args.step_minutes * 60 / 4)
    with E2EPipeline("find-max", args.start_rate, say=_log) as pipe:
        pipe.start_stages()
        results["pipeline"] = pipe.describe()
        sampler = Sampler(pipe.kafka_config, pipe.nodes, REGIONS)
        try:
            rate = args.start_rate
            while rate <= args.max_rate:
                if pipe.simulators:
                    pipe.stop_simulators()
                pipe.start_simulators(rate)
                _log(f"step: {rate:g} rows/s for {args.step_minutes:g} min")
                try:
                    samples = drive(
                        sampler, args.step_minutes * 60, args.sample_s, pipe.pids, pipe.exited, _log
                    )
                except ProcessDied as exc:
                    results["error"] = str(exc)
                    break
                summary = summarise(samples, rate, warmup)
                # A step fails when the input is not written and produced at the rate or a lag
                # grows; not when a noisy machine pushes a peak over the sustained run's bounds,
                # nor on the offset rates of the router and sink, which a short window cuts
                # mid-flush: their keeping up is what the lag's floor says.
                sustained = summary["input_held"] and not summary["lag_growing"]
                results["steps"].append(
                    {
                        "rate": rate,
                        "sustained": sustained,
                        "summary": summary,
                        "samples": [s.as_dict() for s in samples],
                    }
                )
                _log(
                    f"step {rate:g} rows/s: {'held' if sustained else 'NOT held'}; lag "
                    + ", ".join(
                        f"{k} {v['peak_last_third_s']} s" for k, v in summary["lag"].items()
                    )
                    + f"; top CPU {summary['top_cpu']}, most wanted {summary['top_demand']}; "
                    f"saturated {summary['saturated']}"
                )
                if not sustained:
                    break
                rate += args.step_rate
            _finish(pipe, sampler, results, check=False)
        finally:
            sampler.close()
    held = [s["rate"] for s in results["steps"] if s["sustained"]]
    results["highest_sustained_rate"] = max(held) if held else None
    first = next((s for s in results["steps"] if s["summary"]["saturated"]), None)
    results["first_saturated"] = (
        {"rate": first["rate"], "processes": first["summary"]["saturated"]} if first else None
    )
    return results


# -- output -----------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    if results["benchmark"] == "sustained-find-max":
        lines = ["find-max: rate, held, lag peaks (s), top CPU process (mean %), load"]
        for step in results["steps"]:
            s = step["summary"]
            top = s["top_cpu"]
            lines.append(
                f"  {step['rate']:>7g}  {'held' if step['sustained'] else 'NOT held':<9}"
                + " ".join(f"{k}={v['peak_last_third_s']}" for k, v in s["lag"].items())
                + f"  {top} {s['processes'][top]['cpu_pct_mean']}%"
                + f" (most wanted: {s['top_demand']})"
                + f"  load {s['load_average_1m']['mean']}"
            )
        lines.append(f"highest sustained rate: {results['highest_sustained_rate']}")
        lines.append(f"first process at ~a whole core: {results['first_saturated']}")
        return "\n".join(lines)
    s = results.get("summary")
    if s is None:
        return f"sustained: no summary ({results.get('error')})"
    r = s["rates_per_s"]
    lines = [
        f"sustained {results['params']['rate']:g} rows/s for {s['window_seconds']} s (steady); "
        f"load average {s['load_average_1m']['mean']} (max {s['load_average_1m']['max']})",
        f"rates/s: written {r['written']}, produced {r['produced']}, router in "
        f"{r['router_in_offsets']}, routed out {r['routed_out_offsets']}, sink in "
        f"{r['sink_in_offsets']}; throughput held: {s['throughput_held']}",
        "lag (peak last third, s of input): "
        + ", ".join(
            f"{k} {v['peak_last_third_s']} (bound {v['bound_s']}, "
            f"{'bounded' if v['bounded'] else 'NOT bounded'})"
            for k, v in s["lag"].items()
        ),
        f"{'process':<24}{'CPU% mean':>10}{'max':>7}{'wait%':>7}{'RSS first min':>15}"
        f"{'last min':>10}{'max':>8}",
    ]
    for name, p in s["processes"].items():
        lines.append(
            f"{name:<24}{p['cpu_pct_mean'] or 0:>10}{p['cpu_pct_max'] or 0:>7}"
            f"{p.get('runqueue_wait_pct_mean') or 0:>7}"
            f"{p['rss_mb_first_minute'] or 0:>15}{p['rss_mb_last_minute'] or 0:>10}"
            f"{p['rss_mb_max'] or 0:>8}"
        )
    lines.append(f"RSS grew (last / first minute > {RSS_GROWTH_LIMIT}): {s['rss_grew'] or 'none'}")
    drain = results.get("drain") or {}
    lines.append(f"drained: {drain.get('drained')} in {drain.get('seconds')} s")
    checks = results.get("verification")
    if checks is not None:
        bad = [f"{c['node_id']}: {line}" for c in checks for line in c["findings"]]
        verdict = "sensorstream audit: every row of every node exactly as routed"
        lines.append("verification: " + (verdict if not bad else "; ".join(bad[:20])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sustained", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="rows/s, all nodes together")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="left out of the verdicts")
    parser.add_argument("--find-max", action="store_true")
    parser.add_argument("--start-rate", type=float, default=2000.0)
    parser.add_argument("--step-rate", type=float, default=1000.0)
    parser.add_argument("--step-minutes", type=float, default=3.0)
    parser.add_argument("--max-rate", type=float, default=12000.0)
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"check every table row by row (default: when at most {VERIFY_MAX_ROWS:,} rows)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.minutes, args.rate, args.sample_s, args.step_minutes, args.start_rate) <= 0:
        parser.error("durations and rates must be positive")

    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()
    if args.find_max:
        results = run_find_max(args)
        out = args.out or DEFAULT_FIND_MAX_OUT
    else:
        results = run_sustained(
            args.rate,
            args.minutes * 60,
            sample_s=args.sample_s,
            warmup_s=min(args.warmup_s, args.minutes * 60 / 4),
            check=args.verify,
        )
        out = args.out or DEFAULT_OUT
    harness.write_results(out, results)
    print(report(results))
    print(f"results: {out}")
    sys.stdout.flush()
    os._exit(0 if results["error"] is None else 1)  # deltalake may abort at exit (delta-rs 2184)


if __name__ == "__main__":
    main()
