"""The pipeline's stages as processes to supervise: edge nodes, producers, routers and sinks.

The demo, the chaos test and the benchmarks all run the same stages the same way: each is a
`sensorstream` subcommand with the product's defaults, configured only through what an
operator would set (flags and SENSORSTREAM_* variables), so what they show is what a
deployment does. A stage's spec carries the log line that says it is at work, so a start (or
a restart after kill -9) can be waited for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.local_stack.sqlite_probe import max_rowid
from infra.local_stack.supervisor import ProcessSpec
from sensorstream.metrics import PRODUCER_METRICS_PORT

READINGS = "sensors.readings"
DEAD_LETTERS = "sensors.dlq"
CHECKPOINTS = "sensors.producer.checkpoints"
ROUTES = ("raw", "schematized", "filtered", "emergency")  # one topic and table each
ROUTE_TOPICS = tuple(f"sensors.{route}" for route in ROUTES)
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1", "eu-central-1")  # nodes take them in turn
ROUTER_GROUP = "sensorstream-router"  # the components' defaults
SINK_GROUP = "sensorstream-sink"

# What the stages log once they consume or tail: quixstreams' start line, the sink's partition
# assignment, the producer's checkpoint.
ROUTER_READY = ("now processing incoming messages",)
SINK_READY = ("assigned ",)
PRODUCER_READY = ("no checkpoint for node", "resuming node")
MAINTAIN_READY = ("maintaining the Delta tables",)

# Component settings a developer may have exported for their own runs; the pipeline runs the
# defaults plus what its specs set, so these are not passed on.
_COMPONENT_ENV_PREFIXES = (
    "SENSORSTREAM_SIMULATOR_",
    "SENSORSTREAM_PRODUCER_",
    "SENSORSTREAM_ROUTER_",
    "SENSORSTREAM_SINK_",
    "SENSORSTREAM_MAINTAIN_",
    "SENSORSTREAM_FAILPOINTS",
)


def regional_topic(region: str) -> str:
    return f"sensors.regional.{region}"


@dataclass(frozen=True)
class EdgeNode:
    """One simulated edge node: its region, its database and where this run starts in it."""

    region: str
    node_id: str
    db: Path
    seed: int
    start_rowid: int  # the highest rowid the database held before this run

    @classmethod
    def at(cls, db: Path, node_id: str, region: str, seed: int) -> EdgeNode:
        """The node whose database is `db`, starting after whatever it already holds."""
        return cls(region, node_id, db, seed, max_rowid(db))


def child_env(connection_env: Mapping[str, str]) -> dict[str, str]:
    """The environment the stages run with: ours, minus component settings and any AWS_*
    variable the connection does not set (no stray session token), plus the connection."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_COMPONENT_ENV_PREFIXES)
        and not (k.startswith("AWS_") and k not in connection_env)
    }
    return {**env, **connection_env, **_NO_METRICS, "PYTHONUNBUFFERED": "1"}


# Several producers, routers and sinks on one host cannot all serve metrics on their default
# ports: children serve none unless their spec gives each a port of its own (`metrics_env`).
_METRICS_PORT_ENV = {
    "produce": "SENSORSTREAM_PRODUCER_METRICS_PORT",
    "route": "SENSORSTREAM_ROUTER_METRICS_PORT",
    "sink": "SENSORSTREAM_SINK_METRICS_PORT",
    "maintain": "SENSORSTREAM_MAINTAIN_METRICS_PORT",
}
_NO_METRICS = dict.fromkeys(_METRICS_PORT_ENV.values(), "0")


def with_metrics_port(spec: ProcessSpec, port: int) -> ProcessSpec:
    """`spec` serving its Prometheus metrics on `port` (127.0.0.1)."""
    variable = _METRICS_PORT_ENV[spec.role]
    return dataclasses.replace(spec, env={**spec.env, variable: str(port)})


def free_metrics_ports(count: int, first: int = PRODUCER_METRICS_PORT) -> list[int]:
    """`count` ports from `first` up that nothing listens on now: stable across runs (a
    Prometheus config can name them), yet a port taken by something else is skipped."""
    ports: list[int] = []
    candidate = first
    while len(ports) < count:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                pass
            else:
                ports.append(candidate)
        candidate += 1
    return ports


def metrics_port(spec: ProcessSpec) -> int | None:
    """The port `spec` serves its metrics on, None when it serves none."""
    port = int(spec.env.get(_METRICS_PORT_ENV.get(spec.role, ""), "0"))
    return port or None


def simulator(
    node: EdgeNode,
    *,
    rate: float,
    sensors: int,
    anomaly_probability: float,
    duration_s: float | None = None,
    name: str | None = None,
) -> ProcessSpec:
    """The node's sensors appending to its database; without `duration_s`, until stopped.

    `name` (default: `simulate-<node id>`) names the process and its log."""
    args = [
        "simulate",
        "--db", str(node.db),
        "--sensors", str(sensors),
        "--rate", f"{rate:g}",
        "--seed", str(node.seed),
        "--region", node.region,
        "--anomaly-probability", f"{anomaly_probability:g}",
    ]  # fmt: skip
    if duration_s is not None:
        args += ["--duration", f"{duration_s:g}"]
    return ProcessSpec(name or f"simulate-{node.node_id}", "simulate", tuple(args))


def producer(
    node: EdgeNode, env: Mapping[str, str] | None = None, name: str | None = None
) -> ProcessSpec:
    """The node's producer: one per node database, as DESIGN section 5 has it.

    `name` (default: `produce-<node id>`) names the process and its log."""
    args = ("produce", "--sqlite", str(node.db), "--node-id", node.node_id, "--region", node.region)
    return ProcessSpec(
        name or f"produce-{node.node_id}", "produce", args, dict(env or {}), PRODUCER_READY
    )


def router(
    instance: str, env: Mapping[str, str] | None = None, name: str | None = None
) -> ProcessSpec:
    """A router instance with a stable id: a restart fences its own open transaction at once.

    `name` (default: the instance id) names the process and its log."""
    settings = {"SENSORSTREAM_ROUTER_INSTANCE_ID": instance, **(env or {})}
    return ProcessSpec(name or instance, "route", ("route",), settings, ROUTER_READY)


def sink(
    instance: str, flush_s: float, env: Mapping[str, str] | None = None, name: str | None = None
) -> ProcessSpec:
    """A sink instance (static group membership) flushing every table at least every
    `flush_s` (the emergency and dead-letter tables keep their own, shorter latency)."""
    settings = {
        "SENSORSTREAM_SINK_INSTANCE_ID": instance,
        "SENSORSTREAM_SINK_DEFAULTS": json.dumps({"max_latency_s": flush_s}),
        **(env or {}),
    }
    return ProcessSpec(name or instance, "sink", ("sink",), settings, SINK_READY)


def maintain(
    env: Mapping[str, str] | None = None, name: str = "maintain", args: tuple[str, ...] = ()
) -> ProcessSpec:
    """The lake's continuous compaction (`sensorstream maintain`), beside the sinks."""
    return ProcessSpec(name, "maintain", ("maintain", *args), dict(env or {}), MAINTAIN_READY)


def prepare(nodes: list[EdgeNode], kafka_config: dict[str, str]) -> None:
    """Create what the stages would create on first use, so they can all start at once.

    The databases (WAL, the readings table; an existing one is left as it is) let the
    producers start tailing before the simulators write. The routed topics and the dead-letter
    topic, created as the router creates them (its partitions; one for the DLQ), let the sinks
    subscribe to them from the start instead of finding them at a later metadata refresh and
    rebalancing mid-run. On an existing deployment they are all there already.
    """
    from producers.simulator.database import ReadingsDatabase
    from sensorstream.topics import TopicSpec, ensure_topics
    from stream_apps.settings import RouterSettings

    for node in nodes:
        node.db.parent.mkdir(parents=True, exist_ok=True)
        ReadingsDatabase.open(node.db).close()
    partitions = RouterSettings.model_fields["output_partitions"].default
    regions = sorted({n.region for n in nodes})
    routed = [*ROUTE_TOPICS, *(regional_topic(r) for r in regions)]
    specs = [TopicSpec(topic, partitions) for topic in routed]
    ensure_topics(kafka_config, [*specs, TopicSpec(DEAD_LETTERS, 1)])


def edge_nodes(
    directory: Path, count: int, prefix: str, seed: int, regions: tuple[str, ...] = REGIONS
) -> list[EdgeNode]:
    """`count` nodes named `<prefix>-<i>`, their databases in `directory`, spread over
    `regions` in turn, each simulator seeded from `seed`."""
    return [
        EdgeNode.at(
            directory / f"{prefix}-{i}.db", f"{prefix}-{i}", regions[i % len(regions)], seed + i
        )
        for i in range(count)
    ]


def stages(
    nodes: list[EdgeNode], routers: int, sinks: int, flush_s: float, prefix: str
) -> list[ProcessSpec]:
    """The long-running stages of a deployment: a producer per node, `routers` router
    instances in the router group and `sinks` sink instances in the sink group, named
    `<prefix>-router-<i>` and `<prefix>-sink-<i>` (their stable instance ids)."""
    return [
        *(producer(node) for node in nodes),
        *(router(f"{prefix}-router-{i}") for i in range(routers)),
        *(sink(f"{prefix}-sink-{i}", flush_s) for i in range(sinks)),
    ]
