"""The whole pipeline as a deployment runs it, for the end-to-end benchmarks (issue 6).

Three simulated edge nodes in three regions, a producer per node, one router and one sink, each
a real `sensorstream` process under the `Supervisor`, with the product's defaults (the sink's
flush policies as shipped, the default routes). The broker is a dedicated one on free ports in
the run's own directory: the pipeline uses the product's real topic and group names, which would
collide with a demo or another run on the shared stack's broker. The schema registry and the S3
server are the local stack's (started if they are not running); the lake is a prefix of the
stack's bucket of this run's own.

The latency benchmark, the sustained-load benchmark and its CI smoke test all build their run
from here, so they measure the same pipeline.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local_stack import pipeline
from infra.local_stack.dedicated_kafka import DedicatedKafka, free_port
from infra.local_stack.pipeline import EdgeNode
from infra.local_stack.supervisor import Child, ProcessSpec, Supervisor

if TYPE_CHECKING:
    from sensorstream.settings import ConnectionSettings

REPO = Path(__file__).resolve().parents[1]
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
SENSORS_PER_NODE = 10
ANOMALY_PROBABILITY = 0.05
READY_TIMEOUT_S = 120.0
ROUTER_NAME = "router"
SINK_NAME = "sink"
MAINTAIN_NAME = "maintain"


def run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


def shipped_flush_policies() -> dict[str, dict[str, Any]]:
    """The sink's per-route flush policies as shipped (its defaults), for the report."""
    from sinks.settings import ROUTE_DEFAULTS, SinkSettings

    settings = SinkSettings()
    policies = {"(default)": settings.defaults.model_dump(include=_POLICY_KEYS)}
    for route in ROUTE_DEFAULTS:
        policies[route] = settings.table_settings(route).model_dump(include=_POLICY_KEYS)
    return policies


_POLICY_KEYS = {"max_rows", "max_bytes", "max_latency_s"}


def max_latency_s(table: str) -> float:
    """The shipped flush latency of a table (`raw`, `regional/eu-west-1`, `dlq`, ...)."""
    from sinks.settings import SinkSettings

    return SinkSettings().table_settings(table.split("/")[0]).max_latency_s


@dataclass
class Servers:
    """The servers the pipeline talks to, by name, with their pids (for /proc sampling)."""

    kafka_bootstrap: str
    registry_url: str
    lake_uri: str
    storage_options: dict[str, str]
    env: dict[str, str]  # the connection variables the stages read
    pids: dict[str, int] = field(default_factory=dict)


class E2EPipeline:
    """One run: start the servers and the stages, drive the simulators, stop it all.

    Use as a context manager; leaving it stops every process it started (the stages, the
    dedicated broker) and removes its work directory unless `keep` is set.
    """

    def __init__(
        self,
        name: str,
        rate: float,
        *,
        work_dir: Path | None = None,
        keep: bool = False,
        connection: ConnectionSettings | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.name = name
        self.rate = rate
        self.run_id = run_id()
        self.keep = keep
        self.say = say
        self._own_dir = work_dir is None
        self.work = (work_dir or Path(tempfile.mkdtemp(prefix=f"sensorstream-{name}-"))).resolve()
        self._connection = connection
        self.kafka: DedicatedKafka | None = None
        self.servers: Servers | None = None
        self.supervisor: Supervisor | None = None
        self.nodes: list[EdgeNode] = []
        self.simulators: list[Child] = []
        self._simulators_stopped = False
        self.stages: list[Child] = []
        self.metrics_ports: dict[str, int] = {}
        self._exit = contextlib.ExitStack()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> E2EPipeline:
        try:
            self._start_servers()
        except BaseException:
            self.__exit__()  # a broker that failed to start leaves nothing behind either
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._exit.close()
        finally:
            if self._own_dir and not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)

    def _start_servers(self) -> None:
        """The registry and S3 of `connection` (its lake URI too) when one was given (tests
        pass their fixtures'), else the local stack's, started if need be."""
        from infra.local_stack.chaos import connection_env
        from infra.local_stack.stack import LocalStack
        from sensorstream.settings import ConnectionSettings

        stack = LocalStack()
        connection = self._connection
        if connection is None:
            stack.up()
            exports = stack.exports()
            connection = ConnectionSettings(**{k.lower(): v for k, v in exports.items()})
            lake = f"s3://{stack.settings.s3_bucket}/bench-e2e/{self.run_id}/lake"
        else:
            lake = connection.lake_uri
        self.say(f"starting a dedicated Kafka broker in {self.work / 'kafka'}")
        self.kafka = self._exit.enter_context(DedicatedKafka(self.work / "kafka"))
        options = connection.storage_options()
        env = connection_env(
            self.kafka.bootstrap_servers, connection.schema_registry_url, lake, options
        )
        pids = {"kafka": self.kafka.process.pid} if self.kafka.process else {}
        stack_urls = set(stack.exports().values())
        for status in stack.status():  # the registry and the S3 server, when they are ours
            if status.name != "kafka" and status.pid and _serves(status.name, stack_urls, env):
                pids[status.name] = status.pid
        self.servers = Servers(
            self.kafka.bootstrap_servers, connection.schema_registry_url, lake, options, env, pids
        )
        self.supervisor = self._exit.enter_context(
            Supervisor(self.work / "logs", REPO, pipeline.child_env(env), stop_timeout_s=45)
        )

    @property
    def kafka_config(self) -> dict[str, str]:
        assert self.servers is not None
        return {"bootstrap.servers": self.servers.kafka_bootstrap}

    def start_stages(
        self,
        seed: int = 1,
        sink_env: dict[str, str] | None = None,
        *,
        sink_flush_s: float | None = None,
        maintain_env: dict[str, str] | None = None,
    ) -> None:
        """Producers, router and sink started and consuming/tailing before any row is written,
        so start-up never shows as latency. `sink_env` is added to the sink's environment (an
        S3 endpoint of the benchmark's, say); `sink_flush_s` replaces its shipped default flush
        latency; with `maintain_env` the lake's compactor (`sensorstream maintain`) runs beside
        them with that environment on top of its defaults."""
        assert self.supervisor is not None
        self.nodes = pipeline.edge_nodes(self.work / "nodes", len(REGIONS), "e2e", seed, REGIONS)
        pipeline.prepare(self.nodes, self.kafka_config)
        self._create_routed_topics()
        producers = [
            pipeline.producer(n, self._metrics_env("PRODUCER", n.node_id), f"produce-{n.region}")
            for n in self.nodes
        ]
        specs = [
            *producers,
            pipeline.router("e2e-router", self._metrics_env("ROUTER", ROUTER_NAME), ROUTER_NAME),
            pipeline.sink(
                "e2e-sink",
                # The shipped default unless told otherwise: the spec only restates it.
                sink_flush_s if sink_flush_s is not None else max_latency_s("raw"),
                {**self._metrics_env("SINK", SINK_NAME), **(sink_env or {})},
                SINK_NAME,
            ),
        ]
        if maintain_env is not None:
            env = {**maintain_env, **self._metrics_env("MAINTAIN", MAINTAIN_NAME)}
            specs.append(pipeline.maintain(env, MAINTAIN_NAME))
        self._start_and_wait(specs)

    def start_extra_sink(self, name: str, flush_s: float, env: dict[str, str]) -> None:
        """Another sink beside the shipped one (a consumer group and a lake of its own, in
        `env`), flushing every table at least every `flush_s`; stopped and sampled with the
        stages. For comparing flush settings on the very same records at the same time."""
        env = {**self._metrics_env("SINK", name), **env}
        self._start_and_wait([pipeline.sink(f"e2e-{name}", flush_s, env, name)])

    def _start_and_wait(self, specs: list[ProcessSpec]) -> None:
        assert self.supervisor is not None
        started = [self.supervisor.start(spec) for spec in specs]
        self.stages += started
        waiting = self.supervisor.wait_ready(started, READY_TIMEOUT_S)
        if waiting:
            raise RuntimeError(
                "not consuming/tailing after "
                f"{READY_TIMEOUT_S:.0f} s: " + "; ".join(f"{c.name}\n{c.tail()}" for c in waiting)
            )

    def _create_routed_topics(self) -> None:
        """The routed topics exist before the sink subscribes, as on a running deployment, so
        the sink is assigned every partition at once instead of rebalancing when the router
        creates each topic on its first record (a first-use cost, not latency)."""
        from sensorstream.topics import TopicSpec, ensure_topics
        from stream_apps.settings import RouterSettings

        partitions = RouterSettings.model_fields["output_partitions"].default
        names = (*pipeline.ROUTE_TOPICS, pipeline.DEAD_LETTERS)
        ensure_topics(self.kafka_config, [TopicSpec(name, partitions) for name in names])

    def _metrics_env(self, component: str, name: str) -> dict[str, str]:
        """A Prometheus port of its own per process: three producers cannot share 9464."""
        port = free_port()
        self.metrics_ports[name] = port
        return {f"SENSORSTREAM_{component}_METRICS_PORT": str(port)}

    def start_simulators(self, rate: float | None = None) -> None:
        """Every node writes `rate / nodes` rows/s until `stop_simulators`."""
        assert self.supervisor is not None
        self.rate = rate if rate is not None else self.rate
        per_node = self.rate / len(self.nodes)
        self._simulators_stopped = False
        self.simulators = [
            self.supervisor.start(self._simulator_spec(node, per_node)) for node in self.nodes
        ]

    def _simulator_spec(self, node: EdgeNode, rate: float) -> ProcessSpec:
        return pipeline.simulator(
            node,
            rate=rate,
            sensors=SENSORS_PER_NODE,
            anomaly_probability=ANOMALY_PROBABILITY,
            name=f"simulate-{node.region}",
        )

    def stop_simulators(self) -> None:
        assert self.supervisor is not None
        self.supervisor.stop(self.simulators, timeout_s=30)
        self._simulators_stopped = True
        failed = [c for c in self.simulators if c.exit_code != 0]
        if failed:
            raise RuntimeError(
                "a simulator failed: " + "; ".join(f"{c.name}\n{c.tail()}" for c in failed)
            )

    def stop_stages(self) -> list[str]:
        """SIGTERM the producers, router and sink; the ones that did not exit 0."""
        assert self.supervisor is not None
        self.supervisor.stop(self.stages)
        return [f"{c.name} exit {c.exit_code}" for c in self.stages if c.exit_code != 0]

    # -- looking -----------------------------------------------------------------------------

    def exited(self) -> list[str]:
        """Stages or simulators that exited while they should run, with their last lines
        (simulators once stopped on purpose are not among them)."""
        should_run = self.stages if self._simulators_stopped else (*self.stages, *self.simulators)
        return [f"{c.name} exit {c.exit_code}\n{c.tail()}" for c in should_run if not c.running]

    def pids(self) -> dict[str, int]:
        """Every process to sample: the stages, the simulators, the servers."""
        assert self.servers is not None
        ours = {c.name: c.pid for c in (*self.stages, *self.simulators) if c.running}
        return {**ours, **self.servers.pids}

    def tables(self) -> list[str]:
        """The Delta tables of the default routes for this run's regions, as the sink names
        them."""
        return [
            *pipeline.ROUTES,
            *(f"regional/{r}" for r in REGIONS),
            "dlq",
        ]

    def describe(self) -> dict[str, Any]:
        assert self.servers is not None
        return {
            "run_id": self.run_id,
            "work_dir": str(self.work),
            "lake_uri": self.servers.lake_uri,
            "kafka": f"dedicated broker {self.servers.kafka_bootstrap}",
            "schema_registry": self.servers.registry_url,
            "nodes": [
                {"node_id": n.node_id, "region": n.region, "db": str(n.db)} for n in self.nodes
            ],
            "sensors_per_node": SENSORS_PER_NODE,
            "anomaly_probability": ANOMALY_PROBABILITY,
            "routers": 1,
            "sinks": 1,
            "routes_file": "stream_apps/routes.yaml (the default routes)",
            "sink_flush_policies_as_shipped": shipped_flush_policies(),
            "metrics_ports": self.metrics_ports,
            "logs": str(self.work / "logs"),
        }


def _serves(server: str, stack_urls: set[str], env: dict[str, str]) -> bool:
    """Whether the run talks to the local stack's `server` (not to a test's own)."""
    key = {"schema-registry": "SCHEMA_REGISTRY_URL", "s3": "AWS_ENDPOINT_URL"}.get(server)
    return key is not None and env.get(key) in stack_urls
