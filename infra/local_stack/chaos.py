"""Chaos run: the whole pipeline under kill -9 and a broker restart, then an exact lake check.

Simulators write continuously on several edge nodes while the producers (one per node), the
routers (one consumer group) and the sinks (one group) are SIGKILLed at seeded random moments
and restarted, and the broker is restarted (a controlled shutdown, a few seconds down, a
start) in the middle of it, while the kills go on. Some restarts are armed with a
product failpoint of their stage (SENSORSTREAM_FAILPOINTS), so the narrow crash points a random
SIGKILL rarely lands on (between a Delta commit and the offset commit, between a Kafka produce
and its transaction commit) are hit too; the process then kills itself with SIGKILL.

A stage that exits on its own (a failpoint, or an error while the broker is away) is restarted
after a second, as an orchestrator would, and the exit is recorded: it is part of the report,
not a failure of the run. At the end the simulators are stopped, the pipeline drains, every
process is stopped, and `sensorstream audit --settled --sqlite <node db>` checks every node's
every row (`audit_cli`): in raw once or dead-lettered once, in each routed table exactly when
its routing version selects it, in the dead letters once for each route that refuses it, and
no duplicate, stray row or row still in flight anywhere in the lake.

The run is reproducible in its schedule (same seed, same kills at the same offsets from the
start); what the processes are doing at those moments is not, which is the point.
"""

from __future__ import annotations

import dataclasses
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.local_stack import pipeline
from infra.local_stack.audit_cli import run_audit, unproven
from infra.local_stack.dedicated_kafka import BrokerBounce, DedicatedKafka
from infra.local_stack.kafka_probe import KafkaProbe
from infra.local_stack.snapshot import Snapshot, take_snapshot
from infra.local_stack.sqlite_probe import max_rowid
from infra.local_stack.supervisor import Child, Supervisor

FAILPOINTS = {
    "produce": ("producer.in_transaction", "producer.before_commit", "producer.after_commit"),
    "route": ("router.route",),
    "sink": ("sink.between_tables", "sink.before_offsets"),
}
MIN_UP_S = 4.0  # a victim runs at least this long between two scheduled kills
RESTART_AFTER_EXIT_S = 1.0  # an orchestrator's restart delay for a stage that exited
CRASH_LOOP = (4, 60.0)  # this many exits on its own (failpoints aside) within so many seconds
TICK_S = 0.25


@dataclass(frozen=True)
class ChaosPlan:
    """How big and how rough a run is. Everything random follows from `seed`."""

    seed: int
    nodes: int = 2
    routers: int = 2
    sinks: int = 2
    rate: float = 150.0  # rows/s per node
    sensors: int = 4
    anomaly_probability: float = 0.05
    chaos_s: float = 60.0  # simulators write and processes die for this long
    kills: int = 8
    broker_restarts: int = 1
    broker_down_s: float = 3.0
    failpoint_share: float = 0.3  # of restarts armed with a failpoint of the stage
    restart_delay_s: tuple[float, float] = (0.3, 3.0)
    flush_s: float = 2.0  # sink flush latency: short, so the drain is short
    ready_timeout_s: float = 90.0
    drain_timeout_s: float = 240.0


@dataclass(frozen=True)
class Kill:
    at_s: float  # after the simulators started
    victim: str
    down_s: float  # before the restart
    failpoint: str | None  # armed on the restart: "name=count"


@dataclass(frozen=True)
class Event:
    at_s: float
    what: str


@dataclass
class ChaosResult:
    plan: ChaosPlan
    kills: list[Kill]
    events: list[Event]
    written: dict[str, int]  # node id -> rows in its database
    audits: dict[str, dict]  # node id -> `sensorstream audit --settled --sqlite` JSON report
    phases: dict[str, float]
    self_exits: list[str] = field(default_factory=list)  # stages that exited on their own
    drained: bool = True

    @property
    def audit(self) -> list[str]:
        """Why the audits do not prove exactly-once, one line each (none: they do)."""
        if len(self.audits) < len(self.written):
            return [f"audited {len(self.audits)} of {len(self.written)} nodes"]
        return [f"{node}: {line}" for node, r in self.audits.items() for line in unproven(r)]

    @property
    def ok(self) -> bool:
        return self.drained and bool(self.audits) and not self.audit

    def node_lines(self) -> list[str]:
        """Per node: its rows as the audit found them."""
        lines = []
        for node, report in self.audits.items():
            for t in report["edge_tallies"]:
                routes = ", ".join(f"{r} {n}" for r, n in sorted(t["route_dead_letters"].items()))
                lines.append(
                    f"  {node}: {t['source_rows']:,} rows, {t['in_raw']:,} in raw once, "
                    f"{t['dead_lettered']:,} dead-lettered; routes checked for "
                    f"{t['route_checked']:,}, router dead letters: {routes or 'none'}"
                )
        return lines

    def report(self) -> str:
        p = self.plan
        lines = [
            f"chaos run seed={p.seed}: {p.nodes} nodes x {p.rate:g} rows/s for {p.chaos_s:g} s, "
            f"{p.routers} routers, {p.sinks} sinks, {len(self.kills)} kills, "
            f"{p.broker_restarts} broker restart(s)",
            "rows written: "
            + ", ".join(f"{node} {n:,}" for node, n in self.written.items())
            + f" (total {sum(self.written.values()):,})",
            "events:",
            *(f"  {e.at_s:7.1f} s  {e.what}" for e in self.events),
            "sensorstream audit --settled, every row of every node:",
            *self.node_lines(),
            "audit: " + ("EXACT" if not self.audit else f"{len(self.audit)} discrepancies"),
            *(f"  {line}" for line in self.audit[:20]),
            "phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.phases.items()),
            f"verdict: {'OK' if self.ok else 'FAILED'}"
            + ("" if self.drained else " (the pipeline did not drain in time)"),
        ]
        return "\n".join(lines)


def schedule(plan: ChaosPlan, victims: dict[str, list[str]]) -> tuple[list[Kill], list[float]]:
    """The kills (each role at least once, then at random) and the broker restart times.

    Kills fall in the middle 80% of the chaos window, broker restarts in its middle third. A
    victim is killed again only once it has been back for `MIN_UP_S` (killing a process that
    is down tests nothing); when every candidate of the role is down, the kill waits for the
    first one back.
    """
    rng = random.Random(plan.seed)
    roles = [role for role in ("produce", "route", "sink") if victims.get(role)]
    wanted = roles[: plan.kills] + [rng.choice(roles) for _ in range(plan.kills - len(roles))]
    rng.shuffle(wanted)
    times = sorted(rng.uniform(0.1, 0.9) * plan.chaos_s for _ in wanted)
    back = {name: 0.0 for role in roles for name in victims[role]}  # when killable again
    kills = []
    for at, role in zip(times, wanted, strict=True):
        up = [name for name in victims[role] if back[name] <= at]
        victim = rng.choice(up) if up else min(victims[role], key=back.__getitem__)
        at = max(at, back[victim])
        down = round(rng.uniform(*plan.restart_delay_s), 2)
        back[victim] = at + down + MIN_UP_S
        armed = None
        if rng.random() < plan.failpoint_share:
            armed = f"{rng.choice(FAILPOINTS[role])}={rng.randint(2, 6)}"
        kills.append(Kill(round(at, 2), victim, down, armed))
    kills.sort(key=lambda kill: kill.at_s)
    sink_kills = [i for i, kill in enumerate(kills) if kill.victim in victims.get("sink", [])]
    armed_sinks = [i for i in sink_kills if kills[i].failpoint]
    if plan.failpoint_share > 0 and sink_kills and not armed_sinks:
        # The sink's crash points (a Delta commit done, its offsets not) are the narrowest:
        # one restart of every run is armed with one.
        i = rng.choice(sink_kills)
        point = f"{rng.choice(FAILPOINTS['sink'])}={rng.randint(2, 6)}"
        kills[i] = dataclasses.replace(kills[i], failpoint=point)
    broker = sorted(
        round(rng.uniform(1 / 3, 2 / 3) * plan.chaos_s, 2) for _ in range(plan.broker_restarts)
    )
    return kills, broker


def connection_env(
    bootstrap: str, registry_url: str, lake_uri: str, storage_options: dict[str, str]
) -> dict[str, str]:
    """The connection variables (DESIGN section 3) the stages read."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCHEMA_REGISTRY_URL": registry_url,
        "SENSORSTREAM_LAKE_URI": lake_uri,
    }
    for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if key in storage_options:
            env[key] = storage_options[key]
    return env


class ChaosRun:
    """One run in `work_dir` against `kafka` (restarted by the run), a schema registry and a
    lake; `say` gets a line per event as it happens."""

    def __init__(
        self,
        plan: ChaosPlan,
        kafka: DedicatedKafka,
        registry_url: str,
        lake_uri: str,
        storage_options: dict[str, str],
        work_dir: Path,
        say: Callable[[str], None] = print,
    ) -> None:
        self.plan = plan
        self.kafka = kafka
        self.registry_url = registry_url
        self.lake_uri = lake_uri
        self.storage_options = storage_options
        self.work_dir = work_dir
        self.say = say
        self.events: list[Event] = []
        self.self_exits: list[str] = []
        self.phases: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._expected_down: dict[str, float] = {}  # name -> when to start it again
        self._armed: dict[str, str] = {}  # name -> failpoint of its current start
        self._crashes: dict[str, list[float]] = {}  # name -> when it exited on its own
        self._bounce: BrokerBounce | None = None
        self.nodes = pipeline.edge_nodes(work_dir, plan.nodes, "chaos", plan.seed)
        self.specs = {
            spec.name: spec
            for spec in pipeline.stages(self.nodes, plan.routers, plan.sinks, plan.flush_s, "chaos")
        }

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        plan = self.plan
        victims = {
            role: [s.name for s in self.specs.values() if s.role == role]
            for role in ("produce", "route", "sink")
        }
        kills, broker_restarts = schedule(plan, victims)
        self._note(f"seed {plan.seed}: {len(kills)} kills, broker restart at {broker_restarts} s")
        for kill in kills:
            armed = f", restart armed with {kill.failpoint}" if kill.failpoint else ""
            self._note(
                f"  planned: SIGKILL {kill.victim} at {kill.at_s} s, down {kill.down_s} s{armed}"
            )
        env = connection_env(
            self.kafka.bootstrap_servers, self.registry_url, self.lake_uri, self.storage_options
        )
        kafka_config = {"bootstrap.servers": self.kafka.bootstrap_servers}
        pipeline.prepare(self.nodes, kafka_config)
        probe = KafkaProbe(kafka_config, self.nodes)
        with Supervisor(
            self.work_dir / "logs", Path.cwd(), pipeline.child_env(env), stop_timeout_s=30
        ) as sup:
            try:
                probe.start()
                drained = self._run(sup, probe, kills, broker_restarts)
            finally:
                probe.close()
            began = time.monotonic()
            self._note("stopping every process")
            sup.stop_all()
            self._phase("stop", began)
            unclean = [
                f"{c.name} exit {c.exit_code}" for c in sup.children if c.exit_code not in (0, None)
            ]
            if unclean:
                self._note(f"did not stop cleanly: {', '.join(unclean)}")
                self.self_exits += unclean
        began = time.monotonic()
        audits = {}
        for node in self.nodes:
            # After a drain nothing may be on its way: --settled makes such rows findings.
            self._note(f"sensorstream audit --settled --sqlite {node.db.name}")
            audits[node.node_id] = run_audit(
                pipeline.child_env(env), "--settled", sqlite=node.db, node_id=node.node_id
            )
        self._phase("check", began)
        written = {n.node_id: max_rowid(n.db) for n in self.nodes}
        return ChaosResult(
            plan, kills, self.events, written, audits, self.phases, self.self_exits, drained
        )

    def _run(
        self, sup: Supervisor, probe: KafkaProbe, kills: list[Kill], broker_restarts: list[float]
    ) -> bool:
        plan = self.plan
        began = time.monotonic()
        stages = [sup.start(spec) for spec in self.specs.values()]
        not_ready = sup.wait_ready(stages, plan.ready_timeout_s)
        if not_ready:
            self._note(
                f"not ready after {plan.ready_timeout_s:.0f} s: "
                + ", ".join(c.name for c in not_ready)
            )
        self._phase("start", began)

        simulators = [
            sup.start(
                pipeline.simulator(
                    node,
                    rate=plan.rate,
                    sensors=plan.sensors,
                    anomaly_probability=plan.anomaly_probability,
                )
            )
            for node in self.nodes
        ]
        self._t0 = began = time.monotonic()
        self._note(f"simulators writing on {len(simulators)} nodes")
        pending = list(kills)
        restarts = list(broker_restarts)
        while (elapsed := time.monotonic() - self._t0) < plan.chaos_s or pending:
            while pending and pending[0].at_s <= elapsed:
                self._kill(sup, pending.pop(0))
            self._bounce_broker(restarts, elapsed)
            self._look_after(sup, simulators)
            probe.drain(time.monotonic() + TICK_S)
        self._phase("chaos", began)

        began = time.monotonic()
        sup.stop(simulators, timeout_s=30)
        failed = [c for c in simulators if c.exit_code != 0]
        if failed:
            raise RuntimeError(
                "a simulator failed: "
                + "; ".join(f"{c.name} exit {c.exit_code}\n{c.tail()}" for c in failed)
            )
        self._note("simulators stopped; draining")
        calm = 0
        last: Snapshot | None = None
        deadline = time.monotonic() + plan.drain_timeout_s
        while calm < 2:  # twice in a row: the probe may not have read the last records yet
            if time.monotonic() > deadline:
                self._note(f"not drained after {plan.drain_timeout_s:.0f} s: {last}")
                self._phase("drain", began)
                return False
            self._bounce_broker([], time.monotonic() - self._t0)
            self._look_after(sup, simulators)
            probe.drain(time.monotonic() + 1.0)
            last = take_snapshot(self.nodes, probe)
            settled = not self._expected_down and self._bounce is None
            calm = calm + 1 if last.caught_up and settled else 0
        self._phase("drain", began)
        self._note(f"drained: {sum(last.written.values()):,} rows through every stage")
        return True

    # -- chaos -------------------------------------------------------------------------------

    def _kill(self, sup: Supervisor, kill: Kill) -> None:
        child = sup.get(kill.victim)
        if not child.running:
            self._note(f"SIGKILL {kill.victim}: skipped, it is down (exit {child.exit_code})")
            return
        sup.kill(kill.victim, signal.SIGKILL)
        self._note(f"SIGKILL {kill.victim} (pid {child.pid}, start {child.start})")
        self._expected_down[kill.victim] = time.monotonic() + kill.down_s
        if kill.failpoint:
            self._armed[kill.victim] = kill.failpoint
        else:
            self._armed.pop(kill.victim, None)

    def _bounce_broker(self, planned: list[float], elapsed: float) -> None:
        """Begin the next planned broker restart when due, and carry on the one under way."""
        if self._bounce is None and planned and planned[0] <= elapsed:
            planned.pop(0)
            self._note("broker: stopping (SIGTERM, a controlled shutdown)")
            self._bounce = BrokerBounce(self.kafka, self.plan.broker_down_s)
        if self._bounce is not None:
            if line := self._bounce.step():
                self._note(line)
            if self._bounce.done:
                self._bounce = None

    def _look_after(self, sup: Supervisor, simulators: list[Child]) -> None:
        """Restart what is due, and whatever exited on its own (after a short delay)."""
        now = time.monotonic()
        for sim in simulators:
            if not sim.running and time.monotonic() - self._t0 < self.plan.chaos_s:
                raise RuntimeError(f"{sim.name} exited ({sim.exit_code}):\n{sim.tail()}")
        for name, spec in self.specs.items():
            child = sup.get(name)
            if child.running:
                continue
            due = self._expected_down.get(name)
            if due is None:
                armed = self._armed.pop(name, None)
                why = f"failpoint {armed}" if armed and child.exit_code == -9 else "on its own"
                self.self_exits.append(f"{name} exit {child.exit_code} ({why})")
                self._note(f"{name} exited {why} (exit {child.exit_code}); restarting")
                if child.exit_code != -9:
                    self.say(child.tail(8))
                    times, window = CRASH_LOOP
                    recent = [t for t in self._crashes.get(name, []) if now - t < window] + [now]
                    self._crashes[name] = recent
                    if len(recent) >= times:
                        raise RuntimeError(
                            f"{name} exited {times} times in {window:.0f} s on its own (a "
                            f"crash loop); last lines of {child.log}:\n{child.tail(30)}"
                        )
                self._expected_down[name] = now + RESTART_AFTER_EXIT_S
                continue
            if due <= now:
                del self._expected_down[name]
                armed = self._armed.get(name)
                if armed:
                    spec = dataclasses.replace(
                        spec, env={**spec.env, "SENSORSTREAM_FAILPOINTS": armed}
                    )
                started = sup.start(spec)
                self._note(
                    f"restarted {name} (pid {started.pid}, start {started.start})"
                    + (f" armed with {armed}" if armed else "")
                )

    # -- bookkeeping -------------------------------------------------------------------------

    def _note(self, what: str) -> None:
        event = Event(round(time.monotonic() - self._t0, 1), what)
        self.events.append(event)
        self.say(f"[chaos {event.at_s:7.1f} s] {what}")

    def _phase(self, name: str, began: float) -> None:
        self.phases[name] = time.monotonic() - began
