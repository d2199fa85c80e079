"""`sensorstream demo`: three simulated edge nodes through the whole pipeline on the local stack.

What runs, each stage as its own `sensorstream` process (logs: `.stack/logs/demo-<name>.log`):

    simulate x3  one SQLite file per node, `.stack/demo/<node>.db`, appended to, never deleted
    produce  x3  tails its node's database into `sensors.readings`
    route    x1  quixstreams, the routing version in force (the default routes.yaml)
    sink     x1  Delta tables under $SENSORSTREAM_LAKE_URI

The demo uses the real topics, consumer groups and stable node ids, so a second run continues
where the first stopped, the way a restarted deployment would: each producer resumes from its
checkpoint. What belongs to *this* run is therefore told apart by rowid, which is exact: a node's
rows of this run are those after the highest rowid its database held when the demo started.

Progress is measured from outside, as an operator would: SQLite row counts (read-only), the
producers' checkpoints and the routed topics (read by one read_committed consumer), and the
router's and sink's committed offsets. The summary reads the Delta tables themselves and checks
that every simulated row is in the raw table exactly once.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# -- what the demo runs ---------------------------------------------------------------------

REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
SENSORS_PER_NODE = 4
ANOMALY_PROBABILITY = 0.05
DEFAULT_RATE = 150.0  # rows/s per node
# The sink's default flush latency (30 s) suits Databricks (fewer, larger files); the demo
# flushes every 2 s so the tables fill while you watch. The emergency table flushes every 1 s
# either way.
SINK_FLUSH_S = 2.0
ROUTER_INSTANCE = "demo-router"
SINK_INSTANCE = "demo-sink"
ROUTER_GROUP = "sensorstream-router"  # the components' defaults: the demo is a real deployment
SINK_GROUP = "sensorstream-sink"

READINGS = "sensors.readings"
DEAD_LETTERS = "sensors.dlq"
CHECKPOINTS = "sensors.producer.checkpoints"
ROUTES = ("raw", "schematized", "filtered", "emergency")
ROUTE_TOPICS = tuple(f"sensors.{route}" for route in ROUTES)
REGIONAL_TOPICS = tuple(f"sensors.regional.{region}" for region in REGIONS)
SOURCE_TABLE = "sensor_readings"

# Component settings a developer may have exported for their own runs; the demo runs the
# defaults, so these are not passed on.
_COMPONENT_ENV_PREFIXES = (
    "SENSORSTREAM_SIMULATOR_",
    "SENSORSTREAM_PRODUCER_",
    "SENSORSTREAM_ROUTER_",
    "SENSORSTREAM_SINK_",
    "SENSORSTREAM_FAILPOINTS",
)

STOP_TIMEOUT_S = 45.0  # SIGTERM -> SIGKILL: the sink may be finishing a Delta commit
DRAIN_TIMEOUT_S = 90.0  # after the simulators end, for the pipeline to catch up
READY_TIMEOUT_S = 45.0  # for the router and the sink to start consuming
# What their logs say once they consume or tail (quixstreams' start line, the sink's partition
# assignment, the producer's checkpoint).
ROUTER_READY = ("now processing incoming messages",)
SINK_READY = ("assigned ",)
PRODUCER_READY = ("no checkpoint for node", "resuming node")
REFRESH_S = 1.0
PLAIN_REFRESH_S = 5.0


@dataclass(frozen=True)
class EdgeNode:
    """One simulated edge node: its region, its database and where this run starts in it."""

    region: str
    node_id: str
    db: Path
    seed: int
    start_rowid: int  # the highest rowid the database held before this run


def _nodes(demo_dir: Path) -> list[EdgeNode]:
    nodes = []
    for region in REGIONS:
        node_id = f"demo-{region}"
        db = demo_dir / f"{node_id}.db"
        nodes.append(EdgeNode(region, node_id, db, secrets.randbelow(2**31), max_rowid(db)))
    return nodes


# -- SQLite probes ---------------------------------------------------------------------------


@contextlib.contextmanager
def _read_only(db: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None while the simulator has not created the database."""
    if not db.exists():
        yield None
        return
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
    try:
        yield conn
    finally:
        conn.close()


def max_rowid(db: Path) -> int:
    with _read_only(db) as conn:
        if conn is None:
            return 0
        try:
            (value,) = conn.execute(f"SELECT max(rowid) FROM {SOURCE_TABLE}").fetchone()
        except sqlite3.OperationalError:  # created, table not there yet
            return 0
        return int(value or 0)


def rows_after(db: Path, rowid: int) -> int:
    with _read_only(db) as conn:
        if conn is None:
            return 0
        try:
            (count,) = conn.execute(
                f"SELECT count(*) FROM {SOURCE_TABLE} WHERE rowid > ?", (rowid,)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(count)


# -- processes -------------------------------------------------------------------------------


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up here, in the parent: between fork and exec the child should only make the call.
_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the demo dies without cleaning up (kill -9).

    Children run in their own sessions (see Supervisor), so nothing else would reach them.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    role: str  # simulate, produce, route or sink
    process: subprocess.Popen[bytes]
    log: Path
    log_offset: int  # where this run's part of the (appended) log starts

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()


class Supervisor:
    """Starts the pipeline's processes and makes sure none of them outlives the demo.

    Each child is the leader of its own process group, so the terminal's Ctrl-C reaches only
    the demo, which then stops the children itself: SIGTERM (each one finishes the batch or
    transaction in hand), then SIGKILL for whatever is still there after a timeout. Signals go
    to the whole group, so anything a child spawned goes with it.
    """

    def __init__(self, log_dir: Path, cwd: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.env = env
        self.children: list[Child] = []

    def start(
        self, name: str, role: str, args: list[str], env: dict[str, str] | None = None
    ) -> Child:
        log = self.log_dir / f"demo-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "sensorstream", *args]
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)}\n".encode())
            out.flush()
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, role, process, log, offset)
        self.children.append(child)
        return child

    def of(self, *roles: str) -> list[Child]:
        return [c for c in self.children if c.role in roles]

    def stop(
        self,
        children: list[Child],
        timeout_s: float = STOP_TIMEOUT_S,
        hurry: Callable[[], bool] = lambda: False,
    ) -> None:
        """SIGTERM `children`, wait for them, SIGKILL the rest after `timeout_s` or `hurry()`."""
        for child in children:
            if child.running:
                self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(c.running for c in children) and time.monotonic() < deadline and not hurry():
            time.sleep(0.1)
        for child in children:
            if child.running:
                self._signal(child, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(10)

    def stop_all(self, hurry: Callable[[], bool] = lambda: False) -> None:
        self.stop(self.children, hurry=hurry)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, sig)


class StopRequests:
    """Ctrl-C (or SIGTERM) as a request: the first stops the pipeline cleanly, a second hurries.

    A flag rather than KeyboardInterrupt, so the demo is never interrupted halfway through
    stopping its children. Signals within a second of the first count as the same request:
    a terminal's Ctrl-C reaches both `uv run` and the demo, and uv forwards its copy too.
    """

    def __init__(self) -> None:
        self.first: float | None = None
        self.hurry = False

    @property
    def requested(self) -> bool:
        return self.first is not None

    def _on_signal(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        elif now - self.first > 1.0:
            self.hurry = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless a stop is requested; True when one was."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.requested


# -- Kafka probes ----------------------------------------------------------------------------


class KafkaProbe:
    """Counts this run's records in the pipeline's topics, and how far each group is behind.

    Reading, not watermarks: every topic here is written transactionally, and each commit
    leaves a control record that takes an offset but is never delivered, so end offsets
    overcount and a caught-up group still sits short of the end. One read_committed consumer
    follows every topic from where it ended when the demo started and remembers the last real
    record per partition; a group has caught up when its committed offset is past that record.
    The producers' checkpoints, read from the same consumer, say exactly which rowid each
    node has in Kafka.
    """

    def __init__(self, kafka_config: dict[str, str], nodes: list[EdgeNode]) -> None:
        from confluent_kafka import Consumer

        self._nodes = {f"{n.node_id}/{SOURCE_TABLE}": n.node_id for n in nodes}
        self.topics = [READINGS, *ROUTE_TOPICS, *REGIONAL_TOPICS, DEAD_LETTERS, CHECKPOINTS]
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": "sensorstream-demo-probe",  # assign() only, never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        # Consumers in the router's and sink's groups, used only to read committed offsets;
        # they never subscribe, so they never join the groups.
        self._groups = {
            group: Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
            for group in (ROUTER_GROUP, SINK_GROUP)
        }
        self.counts: Counter[str] = Counter()
        self.last: dict[tuple[str, int], int] = {}
        self.checkpoints: dict[str, int] = {}  # node id -> last rowid in Kafka
        self._missing: set[str] = set()
        self._next_discovery = 0.0
        self._lags: dict[str, dict[str, int]] = {}

    def start(self) -> None:
        """Start every topic at its current end: what comes after is this run's."""
        from confluent_kafka import TopicPartition

        topics = self._consumer.list_topics(timeout=15).topics
        assignment = []
        for name in self.topics:
            if name not in topics:
                self._missing.add(name)
                continue
            for partition in topics[name].partitions:
                high = self._end_offset(TopicPartition(name, partition))
                assignment.append(TopicPartition(name, partition, high))
        self._consumer.assign(assignment)

    def _end_offset(self, tp: Any, patience_s: float = 30.0) -> int:
        """A partition's end offset, waiting out a topic created a moment ago: on a broker
        that has just started, its partitions may not have a leader yet (retriable)."""
        from confluent_kafka import KafkaError, KafkaException

        settling = {  # not always flagged retriable by the client, but they pass in seconds
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._TIMED_OUT,
            KafkaError._TRANSPORT,
        }
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return self._consumer.get_watermark_offsets(tp, timeout=15, cached=False)[1]
            except KafkaException as exc:
                error = exc.args[0]
                transient = error.retriable() or error.code() in settling
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _discover(self) -> None:
        """Follow topics created during the run (a region's topic on its first record)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._next_discovery = time.monotonic() + 2.0
        topics = self._consumer.list_topics(timeout=10).topics
        found = [name for name in self._missing if name in topics]
        if found:
            self._consumer.incremental_assign(
                [
                    TopicPartition(name, p, OFFSET_BEGINNING)
                    for name in found
                    for p in topics[name].partitions
                ]
            )
            self._missing -= set(found)

    def drain(self, until: float) -> None:
        """Read whatever arrives until the monotonic time `until`."""
        while (remaining := until - time.monotonic()) > 0:
            if self._missing and time.monotonic() >= self._next_discovery:
                self._discover()
            for message in self._consumer.consume(10_000, timeout=min(remaining, 0.25)):
                if message.error():
                    continue
                topic = message.topic()
                self.counts[topic] += 1
                self.last[(topic, message.partition())] = message.offset()
                if topic == CHECKPOINTS and message.value():
                    self._on_checkpoint(message.key(), message.value())

    def _on_checkpoint(self, key: bytes | None, value: bytes) -> None:
        node_id = self._nodes.get((key or b"").decode(errors="replace"))
        if node_id is None:
            return
        with contextlib.suppress(ValueError, KeyError):
            self.checkpoints[node_id] = int(json.loads(value)["rowid"])

    def lag(self, group: str, topics: tuple[str, ...]) -> dict[str, int]:
        """Records per topic this run that `group` has not committed yet."""
        from confluent_kafka import KafkaException, TopicPartition

        wanted = [TopicPartition(t, p) for (t, p) in self.last if t in topics]
        lag = dict.fromkeys(topics, 0)
        if not wanted:
            return lag
        try:
            committed = self._groups[group].committed(wanted, timeout=10)
        except KafkaException:
            return self._lags.get(group, lag)  # the coordinator is busy: keep the last answer
        for tp in committed:
            done = max(tp.offset, 0)  # no commit yet: the group starts from the beginning
            lag[tp.topic] += max(0, self.last[(tp.topic, tp.partition)] + 1 - done)
        self._lags[group] = lag
        return lag

    def close(self) -> None:
        for consumer in (self._consumer, *self._groups.values()):
            with contextlib.suppress(Exception):
                consumer.close()


@dataclass(frozen=True)
class Snapshot:
    """The pipeline at one moment, counted for this run only."""

    at: float  # monotonic
    written: dict[str, int]  # node id -> rows the simulator committed to SQLite
    produced: dict[str, int]  # node id -> rows the producer committed to Kafka
    topics: dict[str, int]  # topic -> records
    router_lag: int
    sink_lag: dict[str, int]  # topic -> records not in their Delta table yet

    def total(self, per_node: dict[str, int]) -> int:
        return sum(per_node.values())

    @property
    def caught_up(self) -> bool:
        return (
            all(self.produced[n] >= w for n, w in self.written.items())
            and self.topics.get(READINGS, 0) >= self.total(self.produced)
            and self.router_lag == 0
            and not any(self.sink_lag.values())
        )


class Pipeline:
    """Takes a snapshot of every stage: SQLite, the producers, the router and the sink."""

    def __init__(self, nodes: list[EdgeNode], probe: KafkaProbe) -> None:
        self.nodes = nodes
        self.probe = probe

    def snapshot(self) -> Snapshot:
        probe = self.probe
        produced = {
            n.node_id: max(0, probe.checkpoints.get(n.node_id, 0) - n.start_rowid)
            for n in self.nodes
        }
        sink_topics = (*ROUTE_TOPICS, *REGIONAL_TOPICS, DEAD_LETTERS)
        return Snapshot(
            at=time.monotonic(),
            written={n.node_id: rows_after(n.db, n.start_rowid) for n in self.nodes},
            produced=produced,
            topics=dict(probe.counts),
            router_lag=probe.lag(ROUTER_GROUP, (READINGS,))[READINGS],
            sink_lag=probe.lag(SINK_GROUP, sink_topics),
        )


# -- live progress ---------------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _grid(rows: list[list[str]], min_width: int = 0) -> list[str]:
    """Rows as aligned columns: the first left-aligned, the others right-aligned.

    A live block passes `min_width`, so its columns do not shift as the counts grow.
    """
    widths = [max(min_width, *(len(row[i]) for row in rows)) for i in range(len(rows[0]))]
    return [
        "  "
        + row[0].ljust(widths[0])
        + "".join(cell.rjust(w + 2) for cell, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def _rate(now: Snapshot, before: Snapshot | None, pick: Callable[[Snapshot], int]) -> str:
    if before is None or now.at <= before.at:
        return "-"
    return f"{(pick(now) - pick(before)) / (now.at - before.at):,.0f}"


class ProgressView:
    """Live progress: a block redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, out: IO[str], nodes: list[EdgeNode]) -> None:
        self.out = out
        self.nodes = nodes
        self.tty = out.isatty()
        self._drawn = 0  # lines of the block on screen
        self._last_line = float("-inf")
        self._previous: Snapshot | None = None

    def say(self, line: str) -> None:
        """A log line above the live block (which is redrawn at the next update)."""
        self._erase()
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out, flush=True)

    def freeze(self) -> None:
        """Leave the last block on screen: what follows is printed below it."""
        self._drawn = 0

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def update(self, status: str, snap: Snapshot) -> None:
        previous, self._previous = self._previous, snap
        if self.tty:
            self._erase()
            lines = self._block(status, snap, previous)
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
            self._drawn = len(lines)
        elif snap.at - self._last_line >= PLAIN_REFRESH_S:
            self._last_line = snap.at
            print(self._line(status, snap), file=self.out, flush=True)

    def _block(self, status: str, s: Snapshot, before: Snapshot | None) -> list[str]:
        regions = [n.region for n in self.nodes]
        ids = [n.node_id for n in self.nodes]

        def stage(label: str, cells: list[int], pick: Callable[[Snapshot], int]) -> list[str]:
            return [label, *map(_n, cells), _n(sum(cells)), _rate(s, before, pick)]

        routed = [s.topics.get(f"sensors.regional.{r}", 0) for r in regions]
        stages = _grid(
            [
                ["", *regions, "total", "rows/s"],
                stage(
                    "written to SQLite", [s.written[i] for i in ids], lambda x: x.total(x.written)
                ),
                stage(
                    "produced to Kafka", [s.produced[i] for i in ids], lambda x: x.total(x.produced)
                ),
                stage("routed (regional)", routed, lambda x: x.topics.get("sensors.raw", 0)),
            ],
            min_width=9,
        )
        groups = [*((t,) for t in ROUTE_TOPICS), REGIONAL_TOPICS, (DEAD_LETTERS,)]

        def per_topic(counts: dict[str, int]) -> list[str]:
            return [_n(sum(counts.get(t, 0) for t in group)) for group in groups]

        routes = _grid(
            [
                ["routed topic", *ROUTES, "regional", "dlq"],
                ["records", *per_topic(s.topics)],
                ["not yet in Delta", *per_topic(s.sink_lag)],
            ],
            min_width=7,
        )
        behind = max(0, s.total(s.written) - s.total(s.produced))
        lags = (
            f"  lag: producers {_n(behind)} rows · router {_n(s.router_lag)} records · "
            f"sink {_n(sum(s.sink_lag.values()))} records"
        )
        width = shutil.get_terminal_size((100, 24)).columns - 1
        lines = [f"sensorstream demo · {status} · Ctrl-C stops everything", *stages, "", *routes]
        # One screen line each, or the redraw (which moves up by lines) would drift.
        return [line[:width] for line in [*lines, lags]]

    def _line(self, status: str, s: Snapshot) -> str:
        return (
            f"{status}: written {_n(s.total(s.written))}, "
            f"produced {_n(s.total(s.produced))}, routed {_n(s.topics.get('sensors.raw', 0))} "
            f"(router lag {_n(s.router_lag)}), sink lag {_n(sum(s.sink_lag.values()))}, "
            f"dlq {_n(s.topics.get(DEAD_LETTERS, 0))}"
        )


# -- the summary, from the Delta tables ------------------------------------------------------


@dataclass(frozen=True)
class NodeCheck:
    """Did every row this run wrote to a node's SQLite land in the raw table exactly once?"""

    node: EdgeNode
    written: int
    landed: int  # distinct rowids of this run in the raw table
    duplicates: int
    missing_sample: list[int]

    @property
    def ok(self) -> bool:
        return self.landed == self.written and self.duplicates == 0


@dataclass(frozen=True)
class LakeReport:
    counts: dict[str, dict[str, int]]  # table label -> region -> rows of this run
    uris: dict[str, str]  # table label -> URI (regional: with {region})
    checks: list[NodeCheck]
    latencies_s: list[float]  # p50, p99, max
    dead_letters: int
    backlog: int  # rows of earlier runs that this run landed


def _read(uri: str, options: dict[str, str], columns: list[str], where: Any) -> Any | None:
    """The filtered rows of a Delta table, or None when the table does not exist (yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        return None
    dataset = table.to_pyarrow_dataset()
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present, filter=where)


def _this_run(table: Any, nodes: list[EdgeNode]) -> Any:
    """Rows of `table` that this run's simulators wrote: per node, rowids after its start."""
    import pyarrow.compute as pc

    mask = None
    for node in nodes:
        part = pc.and_(
            pc.equal(table["_node_id"], node.node_id),
            pc.greater(table["_source_rowid"], node.start_rowid),
        )
        mask = part if mask is None else pc.or_(mask, part)
    return table.filter(mask)


def _per_region(table: Any | None) -> dict[str, int]:
    if table is None or table.num_rows == 0:
        return {}
    counts = table["_region"].value_counts().to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def read_lake(
    lake_uri: str, options: dict[str, str], nodes: list[EdgeNode], started_at: datetime
) -> LakeReport:
    """Count this run's rows in every table, check the raw table, measure latency.

    The tables are read side by side: each read is mostly waiting on the S3 server.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    lake = lake_uri.rstrip("/")
    since = ds.field("_ingested_at") >= pa.scalar(started_at, pa.timestamp("us", "UTC"))
    # This run's rows landed after the demo started, with event times after it too (which
    # prunes older partitions); rowids then pick this run's rows among them.
    recent = (
        ds.field("_node_id").isin([n.node_id for n in nodes])
        & since
        & (ds.field("event_date") >= pa.scalar(started_at.date(), pa.date32()))
    )
    columns = ["_node_id", "_region", "_source_rowid", "timestamp", "_ingested_at"]
    uris = {route: f"{lake}/{route}" for route in ROUTES}
    uris |= {"regional": f"{lake}/regional/{{region}}", "dlq": f"{lake}/dlq"}
    reads = {route: (uris[route], columns, recent) for route in ROUTES}
    reads |= {n.region: (f"{lake}/regional/{n.region}", columns, recent) for n in nodes}
    reads["dlq"] = (uris["dlq"], ["_ingested_at"], since)
    with ThreadPoolExecutor(max_workers=len(reads)) as pool:
        futures = {
            key: pool.submit(_read, uri, options, cols, where)
            for key, (uri, cols, where) in reads.items()
        }
        tables = {key: future.result() for key, future in futures.items()}

    mine = {key: _this_run(t, nodes) for key, t in tables.items() if key != "dlq" and t is not None}
    counts = {route: _per_region(mine.get(route)) for route in ROUTES}
    counts["regional"] = {}
    for node in nodes:
        counts["regional"].update(_per_region(mine.get(node.region)))
    raw = mine.get("raw")
    backlog = 0 if raw is None else tables["raw"].num_rows - raw.num_rows
    latencies: list[float] = []
    if raw is not None and raw.num_rows:
        event = pc.cast(raw["timestamp"], pa.timestamp("us", "UTC"))
        micros = pc.cast(pc.subtract(raw["_ingested_at"], event), pa.int64())
        quantiles = pc.quantile(micros, q=[0.5, 0.99]).to_pylist()
        latencies = [q / 1e6 for q in quantiles] + [pc.max(micros).as_py() / 1e6]
    dlq = tables["dlq"]
    return LakeReport(
        counts=counts,
        uris=uris,
        checks=[_check(node, raw) for node in nodes],
        latencies_s=latencies,
        dead_letters=0 if dlq is None else dlq.num_rows,
        backlog=backlog,
    )


def _check(node: EdgeNode, raw: Any | None) -> NodeCheck:
    import pyarrow.compute as pc

    end = max_rowid(node.db)
    written = max(0, end - node.start_rowid)
    if raw is None:
        rowids: list[int] = []
    else:
        mine = raw.filter(pc.equal(raw["_node_id"], node.node_id))
        rowids = mine["_source_rowid"].to_pylist()
    distinct = set(rowids)
    missing = [] if len(distinct) >= written else _missing(node.start_rowid, end, distinct)
    return NodeCheck(node, written, len(distinct), len(rowids) - len(distinct), missing)


def _missing(start: int, end: int, present: set[int], limit: int = 10) -> list[int]:
    out = []
    for rowid in range(start + 1, end + 1):
        if rowid not in present:
            out.append(rowid)
            if len(out) == limit:
                break
    return out


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it: shorter to read."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def example_query(lake_uri: str) -> str:
    """A copy-pasteable one-liner: alerts per region and severity from the emergency table.

    polars reads Delta through deltalake. The one-liner ends with os._exit: deltalake can abort
    a process at exit after reading over S3 (delta-rs issue 2184), which would print a scary
    trace after the right answer.
    """
    code = (
        "import os, polars as pl; "
        "opts = {k: v for k, v in os.environ.items() if k.startswith('AWS_')}; "
        f"t = pl.read_delta('{lake_uri.rstrip('/')}/emergency', storage_options=opts); "
        "print(t.group_by('_region', 'severity').len().sort('_region', 'severity'), flush=True); "
        "os._exit(0)"
    )
    return f'uv run python -c "{code}"'


def print_summary(
    out: IO[str],
    run_id: str,
    nodes: list[EdgeNode],
    report: LakeReport,
    lake_uri: str,
    timings: dict[str, float],
) -> None:
    regions = [n.region for n in nodes]

    def p(line: str = "") -> None:
        print(line, file=out)

    p()
    p(f"sensorstream demo: summary of run {run_id} ({len(nodes)} edge nodes, this run's rows)")
    p()
    rows = [["Delta table", *regions, "total", "URI"]]
    for label in (*ROUTES, "regional"):
        cells = [report.counts[label].get(r, 0) for r in regions]
        rows.append([label, *map(_n, cells), _n(sum(cells)), report.uris[label]])
    written = [c.written for c in report.checks]
    db_dir = _shown(nodes[0].db.parent)
    rows.append(["SQLite", *map(_n, written), _n(sum(written)), f"{db_dir}/<node>.db"])
    # The URIs go last, left-aligned, after the aligned numbers.
    for line, row in zip(_grid([row[:-1] for row in rows]), rows, strict=True):
        p(f"{line}  {row[-1]}")
    p()
    p(
        f"  dead letters      {_n(report.dead_letters)} landed in {report.uris['dlq']} "
        "during this run"
    )
    if report.latencies_s:
        p50, p99, worst = report.latencies_s
        p(
            f"  latency           p50 {p50:.1f} s, p99 {p99:.1f} s, max {worst:.1f} s from SQLite "
            f"insert to Delta commit (raw table;\n                    the demo's sink flushes "
            f"every {SINK_FLUSH_S:g} s, its default is 30 s)"
        )
    total = sum(c.written for c in report.checks)
    landed = sum(c.landed for c in report.checks)
    dups = sum(c.duplicates for c in report.checks)
    verdict = "OK" if all(c.ok for c in report.checks) else "FAILED"
    p(
        f"  exactly once      {verdict}: {_n(landed)} of {_n(total)} rows written to SQLite are in "
        f"the raw table, {_n(dups)} duplicated"
    )
    for check in report.checks:
        if not check.ok:
            p(
                f"    {check.node.node_id}: {_n(check.written - check.landed)} missing "
                f"(e.g. rowids {check.missing_sample}), {_n(check.duplicates)} duplicated"
            )
    if report.backlog:
        p(f"  also landed       {_n(report.backlog)} rows an earlier, interrupted run had left")
    phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items())
    p(f"  time              {sum(timings.values()):.0f} s ({phases})")
    p("  logs              .stack/logs/demo-*.log")
    p()
    p("  Query it (alerts per region and severity):")
    p('    eval "$(uv run sensorstream stack env)"')
    p(f"    {example_query(lake_uri)}")
    p("  The stack keeps running for the next run; stop it with: make stack-down")
    out.flush()


# -- the run ---------------------------------------------------------------------------------


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


def _child_env(stack_env: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_COMPONENT_ENV_PREFIXES)
        and not (k.startswith("AWS_") and k not in stack_env)  # no stray session token
    }
    return {**env, **stack_env, "PYTHONUNBUFFERED": "1"}


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 12) -> str:
    text = _log_since(path, 0).splitlines()[-lines:]
    return "\n".join(f"      {line[:200]}" for line in text)


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
            supervisor = Supervisor(self.stack.settings.log_dir, Path.cwd(), _child_env(stack_env))
            with self.stops.installed():
                try:
                    _prepare(nodes, connection.kafka_client_config())
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
            self.say("reading the Delta tables")
            report = read_lake(connection.lake_uri, connection.storage_options(), nodes, started_at)
            self._lap("summary")
            print_summary(self.out, self.run_id, nodes, report, connection.lake_uri, self.timings)
            return 0 if all(c.ok for c in report.checks) else 1

    def _stream(self, nodes: list[EdgeNode], probe: KafkaProbe, sup: Supervisor) -> int | None:
        """Start, watch and drain the pipeline; an exit code when the run ends early."""
        pipeline = Pipeline(nodes, probe)
        if (code := self._start_stages(sup, nodes)) is not None:
            return code
        self._lap("start")
        for node in nodes:
            self.say(
                f"edge node {node.node_id}: {SENSORS_PER_NODE} sensors, {self.rate:g} rows/s "
                f"for {self.duration_s:g} s into {_shown(node.db)} (after rowid {node.start_rowid})"
            )
        simulators = [self._simulate(sup, node) for node in nodes]
        self.view = ProgressView(self.out, nodes)
        began = time.monotonic()
        while any(s.running for s in simulators):
            status = f"streaming {_clock(time.monotonic() - began)} of {_clock(self.duration_s)}"
            if (code := self._watch(pipeline, probe, sup, status)) is not None:
                return code
        failed = [s for s in simulators if s.exit_code != 0]
        if failed:
            return self._failed(failed, "a simulator failed")
        self._lap("streaming")
        self.say("simulators done; waiting for the producers, the router and the sink to catch up")
        began = time.monotonic()
        deadline = began + DRAIN_TIMEOUT_S
        calm = 0
        while calm < 2:  # twice in a row: the probe may not have read the last records yet
            if time.monotonic() > deadline:
                self.say(f"the pipeline did not catch up within {DRAIN_TIMEOUT_S:.0f} s; stopping")
                break
            status = f"catching up {_clock(time.monotonic() - began)}"
            if (code := self._watch(pipeline, probe, sup, status)) is not None:
                return code
            calm = calm + 1 if self._last and self._last.caught_up else 0
        self.view.freeze()
        self._lap("draining")
        self.say("caught up; stopping the producers, the router and the sink")
        rest = sup.of("produce", "route", "sink")
        sup.stop(rest, hurry=lambda: self.stops.hurry)
        self._lap("stopping")
        failed = [c for c in rest if c.exit_code != 0]
        if failed:
            return self._failed(failed, "did not stop cleanly")
        self.view = None
        return None

    def _watch(
        self, pipeline: Pipeline, probe: KafkaProbe, sup: Supervisor, status: str
    ) -> int | None:
        """One refresh: read the topics for a second, show the snapshot, check the children."""
        probe.drain(time.monotonic() + REFRESH_S)
        if self.stops.requested:
            return self._interrupted(sup)
        self._last = pipeline.snapshot()
        assert self.view is not None
        self.view.update(status, self._last)
        dead = [c for c in sup.of("produce", "route", "sink") if not c.running]
        if dead:
            return self._failed(dead, "exited while the pipeline was running")
        return None

    def _start_stages(self, sup: Supervisor, nodes: list[EdgeNode]) -> int | None:
        """Start the producers, the router and the sink, and wait until each one consumes
        or tails, so the first readings do not wait for them (it would show as latency)."""
        router_env = {"SENSORSTREAM_ROUTER_INSTANCE_ID": ROUTER_INSTANCE}
        sink_env = {
            "SENSORSTREAM_SINK_INSTANCE_ID": SINK_INSTANCE,
            "SENSORSTREAM_SINK_DEFAULTS": json.dumps({"max_latency_s": SINK_FLUSH_S}),
        }
        waiting = {
            "router": (sup.start("router", "route", ["route"], router_env), ROUTER_READY),
            "sink": (sup.start("sink", "sink", ["sink"], sink_env), SINK_READY),
        }
        for node in nodes:
            args = ["produce", "--sqlite", str(node.db), "--node-id", node.node_id]
            child = sup.start(f"produce-{node.region}", "produce", [*args, "--region", node.region])
            waiting[child.name] = (child, PRODUCER_READY)
        self.say(
            f"started the router, the sink and 3 producers (logs: {_shown(sup.log_dir)}/demo-*.log)"
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            for name, (child, markers) in list(waiting.items()):
                if not child.running:
                    return self._failed([child], "exited at start")
                if any(m in _log_since(child.log, child.log_offset) for m in markers):
                    del waiting[name]
            if time.monotonic() > deadline:
                self.say(f"still waiting for {', '.join(waiting)}; going on anyway")
                break
            if self.stops.sleep(0.2):
                return self._interrupted(sup)
        self.say("the router and the sink consume, the producers tail their databases")
        return None

    def _simulate(self, sup: Supervisor, node: EdgeNode) -> Child:
        args = [
            "simulate",
            "--db", str(node.db),
            "--sensors", str(SENSORS_PER_NODE),
            "--rate", f"{self.rate:g}",
            "--duration", f"{self.duration_s:g}",
            "--seed", str(node.seed),
            "--region", node.region,
            "--anomaly-probability", f"{ANOMALY_PROBABILITY:g}",
        ]  # fmt: skip
        return sup.start(f"simulate-{node.region}", "simulate", args)

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
            print(_tail(child.log), file=self.out, flush=True)
        return 1

    def _report_leftovers(self, sup: Supervisor) -> None:
        left = [c.name for c in sup.children if c.running]
        if left:
            print(f"sensorstream demo: still running: {', '.join(left)}", file=sys.stderr)


def _prepare(nodes: list[EdgeNode], kafka_config: dict[str, str]) -> None:
    """Create what the stages would create on first use, so they can all start at once.

    The databases (WAL, the readings table; an existing one is left as it is) let the
    producers start tailing before the simulators write. The regional topics, created with the
    router's own settings, let the sink subscribe to them from the start instead of finding
    them at its next metadata refresh and rebalancing mid-run.
    """
    from producers.simulator.database import ReadingsDatabase
    from sensorstream.topics import TopicSpec, ensure_topics
    from stream_apps.settings import RouterSettings

    for node in nodes:
        node.db.parent.mkdir(parents=True, exist_ok=True)
        ReadingsDatabase.open(node.db).close()
    partitions = RouterSettings.model_fields["output_partitions"].default
    ensure_topics(kafka_config, [TopicSpec(t, partitions) for t in REGIONAL_TOPICS])


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
