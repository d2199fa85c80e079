"""`sensorstream demo`: three simulated edge nodes through the whole pipeline on the local stack.

What runs, each stage as its own `sensorstream` process (logs: `.stack/logs/demo-<name>.log`):

    simulate x3  one SQLite file per node, `.stack/demo/<node>.db`, appended to, never deleted
    produce  x3  tails its node's database into `sensors.readings`
    route    x1  quixstreams, the routing version in force (the default routes.yaml)
    sink     x1  Delta tables under $SENSORSTREAM_LAKE_URI
    maintain x1  compacts those tables' small files while the sink writes them

The demo uses the real topics, consumer groups and stable node ids, so a second run continues
where the first stopped, the way a restarted deployment would: each producer resumes from its
checkpoint. What belongs to *this* run is therefore told apart by rowid, which is exact: a node's
rows of this run are those after the highest rowid its database held when the demo started.

Progress is measured from outside, as an operator would (`kafka_probe`, `snapshot`, shown by
`progress`); after the simulators end, the demo waits as long as some stage makes progress
(`drain`). The summary (`lake_report`, `summary`) counts rows in the Delta tables themselves;
its exactly-once verdict is `sensorstream audit` of the lake (`exactly_once`), which tells rows
the stopped pipeline still holds (in flight: late, they land on the next run) from lost ones.
The processes are run by the `supervisor`, from the stage specs in `pipeline`. This module is
the run itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from infra.local_stack import pipeline
from infra.local_stack.audit_cli import AuditFailed, run_audit
from infra.local_stack.display import clock, shown
from infra.local_stack.drain import Drain, DrainState, describe, owed
from infra.local_stack.interrupts import StopRequests
from infra.local_stack.kafka_probe import KafkaProbe
from infra.local_stack.lake_report import read_lake
from infra.local_stack.pipeline import ROUTES, EdgeNode
from infra.local_stack.progress import ProgressView
from infra.local_stack.snapshot import Snapshot, take_snapshot
from infra.local_stack.summary import print_summary, verdict
from infra.local_stack.supervisor import Child, NotReady, ProcessSpec, Supervisor

__all__ = ["DEFAULT_RATE", "REGIONS", "ROUTES", "run_demo"]

REGIONS = pipeline.REGIONS[:3]
SENSORS_PER_NODE = 4
ANOMALY_PROBABILITY = 0.05
DEFAULT_RATE = 150.0  # rows/s per node
# The demo's sink flushes every 2 s (the default is 3 s) so the tables fill while you watch. The
# emergency table flushes every 1 s either way.
SINK_FLUSH_S = 2.0
ROUTER_INSTANCE = "demo-router"
SINK_INSTANCE = "demo-sink"

READY_TIMEOUT_S = 45.0  # for the router and the sink to start consuming
REFRESH_S = 1.0


def _nodes(demo_dir: Path) -> list[EdgeNode]:
    return [
        EdgeNode.at(
            demo_dir / f"demo-{region}.db", f"demo-{region}", region, secrets.randbelow(2**31)
        )
        for region in REGIONS
    ]


@contextlib.contextmanager
def _single_demo(path: Path) -> Iterator[bool]:
    """One demo at a time: two would share node ids, topics and groups and fence each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield True


class Demo:
    """One run of the demo: start the stages, watch them, drain, stop, summarise."""

    def __init__(self, duration_s: float, rate: float, out: IO[str]) -> None:
        from infra.local_stack.stack import LocalStack

        self.duration_s = duration_s
        self.rate = rate
        self.out = out
        self.stack = LocalStack()
        self.run_id = time.strftime("%Y%m%dT%H%M%S")
        self.timings: dict[str, float] = {}
        self._phase_started = time.monotonic()
        self.stops = StopRequests()
        self.view: ProgressView | None = None
        self._last: Snapshot | None = None

    # -- small helpers ---------------------------------------------------------------------

    def say(self, line: str) -> None:
        if self.view is not None:
            self.view.say(line)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out, flush=True)

    def _lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = now - self._phase_started
        self._phase_started = now

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        from sensorstream.settings import ConnectionSettings

        self.say("starting the local stack (a first run downloads pinned servers into the cache)")
        self.stack.up(progress=self.say)
        self._lap("stack")
        stack_env = self.stack.exports()
        connection = ConnectionSettings(**{k.lower(): v for k, v in stack_env.items()})
        stack_dir = self.stack.settings.dir.resolve()
        with _single_demo(stack_dir / "demo" / "demo.lock") as alone:
            if not alone:
                print(
                    f"sensorstream demo: another demo is running (pid in {stack_dir}/demo/"
                    "demo.lock); wait for it or stop it",
                    file=sys.stderr,
                )
                return 1
            nodes = _nodes(stack_dir / "demo")
            probe = KafkaProbe(connection.kafka_client_config(), nodes)
            supervisor = Supervisor(
                self.stack.settings.log_dir,
                Path.cwd(),
                pipeline.child_env(stack_env),
                log_prefix="demo-",
            )
            with self.stops.installed():
                try:
                    pipeline.prepare(nodes, connection.kafka_client_config())
                    probe.start()
                    started_at = datetime.now(UTC)
                    code = self._stream(nodes, probe, supervisor)
                    if code is not None:
                        return code
                finally:
                    if any(c.running for c in supervisor.children):
                        self.say("stopping the pipeline's processes")
                    supervisor.stop_all(hurry=lambda: self.stops.hurry)
                    probe.close()
                    self._report_leftovers(supervisor)
            self.say("auditing the lake (sensorstream audit), then counting this run's rows")
            try:
                audit = run_audit(pipeline.child_env(stack_env))  # the lake's JSON report
            except AuditFailed as exc:
                self.say(f"sensorstream audit could not run, so there is no verdict: {exc}")
                return 1
            report = read_lake(
                connection.lake_uri, connection.storage_options(), nodes, started_at, audit
            )
            self._lap("summary")
            print_summary(
                self.out,
                self.run_id,
                nodes,
                report,
                connection.lake_uri,
                self.timings,
                flush_s=SINK_FLUSH_S,
            )
            return 0 if verdict(report) == "OK" else 1

    def _stream(self, nodes: list[EdgeNode], probe: KafkaProbe, sup: Supervisor) -> int | None:
        """Start, watch and drain the pipeline; an exit code when the run ends early."""
        if (code := self._start_stages(sup, nodes)) is not None:
            return code
        self._lap("start")
        for node in nodes:
            self.say(
                f"edge node {node.node_id}: {SENSORS_PER_NODE} sensors, {self.rate:g} rows/s "
                f"for {self.duration_s:g} s into {shown(node.db)} (after rowid {node.start_rowid})"
            )
        simulators = [sup.start(self._simulator(node)) for node in nodes]
        self.view = ProgressView(self.out, nodes)
        began = time.monotonic()
        while any(s.running for s in simulators):
            status = f"streaming {clock(time.monotonic() - began)} of {clock(self.duration_s)}"
            if (code := self._watch(nodes, probe, sup, status)) is not None:
                return code
        failed = [s for s in simulators if s.exit_code != 0]
        if failed:
            return self._failed(failed, "a simulator failed")
        self._lap("streaming")
        self.say("simulators done; waiting for the producers, the router and the sink to catch up")
        began = time.monotonic()
        drain = Drain(began)
        state = DrainState.WAITING
        while state is DrainState.WAITING:
            status = f"catching up {clock(time.monotonic() - began)}"
            if (code := self._watch(nodes, probe, sup, status)) is not None:
                return code
            assert self._last is not None
            state = drain.observe(time.monotonic(), owed(self._last), self._last.caught_up)
        self.view.freeze()
        self._lap("draining")
        if state is DrainState.CAUGHT_UP:
            self.say("caught up; stopping the producers, the router and the sink")
        else:
            self.say(
                f"no stage made progress for {drain.stall_window_s:.0f} s (still owed: "
                f"{describe(owed(self._last))}); stopping the producers, the router and the "
                f"sink. What they still hold is counted as in flight below, not as missing; "
                f"look in {shown(sup.log_dir)}/demo-*.log for why they stalled"
            )
        rest = sup.of("produce", "route", "sink", "maintain")
        sup.stop(rest, hurry=lambda: self.stops.hurry)
        self._lap("stopping")
        failed = [c for c in rest if c.exit_code != 0]
        if failed:
            return self._failed(failed, "did not stop cleanly")
        self.view = None
        return None

    def _watch(
        self, nodes: list[EdgeNode], probe: KafkaProbe, sup: Supervisor, status: str
    ) -> int | None:
        """One refresh: read the topics for a second, show the snapshot, check the children."""
        probe.drain(time.monotonic() + REFRESH_S)
        if self.stops.requested:
            return self._interrupted(sup)
        self._last = take_snapshot(nodes, probe)
        assert self.view is not None
        self.view.update(status, self._last)
        dead = [c for c in sup.of("produce", "route", "sink", "maintain") if not c.running]
        if dead:
            return self._failed(dead, "exited while the pipeline was running")
        return None

    def _start_stages(self, sup: Supervisor, nodes: list[EdgeNode]) -> int | None:
        """Start the producers, the router and the sink, and wait until each one consumes
        or tails, so the first readings do not wait for them (it would show as latency)."""
        specs = [
            pipeline.router(ROUTER_INSTANCE, name="router"),
            pipeline.sink(SINK_INSTANCE, SINK_FLUSH_S, name="sink"),
            pipeline.maintain(),
            *(pipeline.producer(node, name=f"produce-{node.region}") for node in nodes),
        ]
        specs = [
            pipeline.with_metrics_port(spec, port)
            for spec, port in zip(specs, pipeline.free_metrics_ports(len(specs)), strict=True)
        ]
        children = [sup.start(spec) for spec in specs]
        self.say(
            f"started the router, the sink, the compactor and {len(nodes)} producers "
            f"(logs: {shown(sup.log_dir)}/demo-*.log)"
        )
        endpoints = ", ".join(f"{spec.name} :{pipeline.metrics_port(spec)}" for spec in specs)
        self.say(f"Prometheus metrics at http://127.0.0.1:<port>/metrics: {endpoints}")
        try:
            waiting = sup.wait_ready(children, READY_TIMEOUT_S, lambda: self.stops.requested)
        except NotReady as exc:
            return self._failed(exc.children, exc.why)
        if self.stops.requested:
            return self._interrupted(sup)
        if waiting:
            self.say(f"still waiting for {', '.join(c.name for c in waiting)}; going on anyway")
        self.say("the router and the sink consume, the producers tail their databases")
        return None

    def _simulator(self, node: EdgeNode) -> ProcessSpec:
        return pipeline.simulator(
            node,
            rate=self.rate,
            sensors=SENSORS_PER_NODE,
            anomaly_probability=ANOMALY_PROBABILITY,
            duration_s=self.duration_s,
            name=f"simulate-{node.region}",
        )

    # -- endings ---------------------------------------------------------------------------

    def _interrupted(self, sup: Supervisor) -> int:
        self.say("interrupted: stopping every process the demo started (Ctrl-C again: kill them)")
        sup.stop_all(hurry=lambda: self.stops.hurry)
        stopped = ", ".join(f"{c.name} (exit {c.exit_code})" for c in sup.children)
        self.say(f"stopped {stopped or 'nothing'}")
        self.say(
            "the stack keeps running; the next `make demo` continues from here "
            "(stop the stack with: make stack-down)"
        )
        return 130

    def _failed(self, children: list[Child], why: str) -> int:
        for child in children:
            self.say(f"{child.name} {why} (exit {child.exit_code}); last lines of {child.log}:")
            print(child.tail(), file=self.out, flush=True)
        return 1

    def _report_leftovers(self, sup: Supervisor) -> None:
        left = [c.name for c in sup.children if c.running]
        if left:
            print(f"sensorstream demo: still running: {', '.join(left)}", file=sys.stderr)


def run_demo(
    duration_s: float = 60.0, rate: float = DEFAULT_RATE, *, hard_exit: bool = False
) -> int:
    """Run the demo; the exit code is 0 when every simulated row is in the raw table once.

    `hard_exit` (the CLI) ends the process with os._exit once the output is flushed: after
    reading Delta tables over S3, deltalake can abort the interpreter at exit (delta-rs issue
    2184, exit 134), which would turn a good run into a crash report.
    """
    code = Demo(duration_s, rate, sys.stdout).run()
    if hard_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
