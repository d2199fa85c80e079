"""What the end-to-end benchmarks sample every few seconds, from outside the processes.

Nothing here asks the stages themselves (their metrics endpoints may not be wired yet, and a
stage that is saturated answers late): rows written are read from SQLite, rows produced from
the producers' committed checkpoints, progress and lag of the router and the sink from the
broker (their consumer groups' committed offsets against the partitions' last stable offsets,
through the admin API), and CPU time and resident memory of every process from /proc.

Offsets count the transaction markers too: each transaction leaves one control record per
partition it wrote to, so a drained group sits an offset or more short of the end per partition
(which is why "drained" is decided by reading what is left, `OffsetProbe.undelivered`), and
rates and lags read from offsets overcount by the markers: each producer commits a transaction
per 50 ms tick that has rows, up to ~20 markers per second per readings partition per producer
(the router's checkpoints every 0.5 s add ~2 per output partition). Lags in offsets are
therefore a little pessimistic; rows written and produced are exact.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.process_tree import parse_stat
from infra.local_stack.pipeline import (
    CHECKPOINTS,
    DEAD_LETTERS,
    READINGS,
    ROUTE_TOPICS,
    ROUTER_GROUP,
    SINK_GROUP,
    EdgeNode,
    regional_topic,
)
from infra.local_stack.sqlite_probe import SOURCE_TABLE, max_rowid

DRAIN_CHECK_MAX_LAG = 50  # per partition: beyond it, not drained, no need to read
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` and all its threads (a JVM's too), or None if gone."""
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())[1]
    except OSError:
        return None


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` now (statm's resident pages), or None if gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def runqueue_wait_seconds(pid: int) -> float | None:
    """Time the threads of `pid` spent runnable but waiting for a CPU (schedstat), summed.

    On a shared machine a process's CPU% is capped by its share of the cores, so a stage
    that would keep a whole core busy may show 30%; its run-queue wait is what tells that it
    wanted more.
    """
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


class CpuMeter:
    """CPU% of each process since the previous reading (100 = one core busy), and the % of
    that time its threads waited for a CPU while runnable."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[float, float | None, float]] = {}

    def read(self, pids: dict[str, int]) -> dict[str, dict[str, float | None]]:
        now = time.monotonic()
        out: dict[str, dict[str, float | None]] = {}
        for name, pid in pids.items():
            cpu, wait = cpu_seconds(pid), runqueue_wait_seconds(pid)
            previous = self._last.get((name, pid))
            percent = waited = None
            if cpu is not None:
                if previous is not None and now > previous[2]:
                    span = now - previous[2]
                    percent = 100.0 * (cpu - previous[0]) / span
                    if wait is not None and previous[1] is not None:
                        waited = 100.0 * (wait - previous[1]) / span
                self._last[(name, pid)] = (cpu, wait, now)
            out[name] = {
                "pid": pid,
                "cpu_pct": percent,
                "runqueue_wait_pct": waited,
                "rss_mb": rss_mb(pid),
            }
        return out


# -- Kafka ---------------------------------------------------------------------------------------


class CheckpointWatcher:
    """The last rowid each producer has committed to Kafka, from the checkpoint topic."""

    def __init__(self, kafka_config: dict[str, str], nodes: list[EdgeNode]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._nodes = {f"{n.node_id}/{SOURCE_TABLE}".encode(): n.node_id for n in nodes}
        self.rowids: dict[str, int] = {n.node_id: 0 for n in nodes}
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": "sensorstream-bench-checkpoints",  # assign() only, never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(CHECKPOINTS, 0, OFFSET_BEGINNING)])

    def poll(self) -> dict[str, int]:
        from producers.checkpoint import Checkpoint

        while messages := self._consumer.consume(10_000, timeout=0.05):
            for message in messages:
                node = self._nodes.get(message.key() or b"")
                if message.error() or node is None or not message.value():
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    self.rowids[node] = Checkpoint.from_bytes(message.value()).rowid
        return dict(self.rowids)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


@dataclass
class GroupProgress:
    """A consumer group against its input: committed offsets and last stable offsets, summed."""

    committed: int
    end: int
    worst: int  # the largest lag of one partition: at most 1 (its last marker) once drained

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


class OffsetProbe:
    """Committed offsets of the router's and the sink's groups and the end of their inputs."""

    def __init__(self, kafka_config: dict[str, str], regions: tuple[str, ...]) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(kafka_config)
        self.router_topics = (READINGS,)
        self.sink_topics = (*ROUTE_TOPICS, *(regional_topic(r) for r in regions), DEAD_LETTERS)
        self._partitions: dict[str, list[int]] = {}
        self._config = kafka_config
        # (group, topic, partition) -> (committed, end) at the last `progress` call
        self.positions: dict[tuple[str, str, int], tuple[int, int]] = {}

    def _topic_partitions(self, topics: tuple[str, ...]) -> list[Any]:
        from confluent_kafka import TopicPartition

        missing = [t for t in topics if t not in self._partitions]
        if missing:
            metadata = self._admin.list_topics(timeout=10).topics
            for topic in missing:
                if topic in metadata and metadata[topic].partitions:
                    self._partitions[topic] = sorted(metadata[topic].partitions)
        return [TopicPartition(t, p) for t in topics for p in self._partitions.get(t, [])]

    def _ends(self, partitions: list[Any]) -> dict[tuple[str, int], int]:
        from confluent_kafka import IsolationLevel
        from confluent_kafka.admin import OffsetSpec

        if not partitions:
            return {}
        futures = self._admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in partitions},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=10,
        )
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def _committed(self, group: str, partitions: list[Any]) -> dict[tuple[str, int], int]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        if not partitions:
            return {}
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        result = self._admin.list_consumer_group_offsets(request, request_timeout=10)[group]
        return {
            (tp.topic, tp.partition): max(tp.offset, 0)  # no commit yet: the start, 0
            for tp in result.result().topic_partitions
        }

    def progress(self, group: str, topics: tuple[str, ...]) -> GroupProgress:
        partitions = self._topic_partitions(topics)
        ends = self._ends(partitions)
        committed = self._committed(group, partitions)
        done = {k: min(committed.get(k, 0), end) for k, end in ends.items()}
        for (topic, partition), end in ends.items():
            self.positions[(group, topic, partition)] = (done[(topic, partition)], end)
        return GroupProgress(
            committed=sum(done.values()),
            end=sum(ends.values()),
            worst=max((end - done[k] for k, end in ends.items()), default=0),
        )

    def undelivered(self, patience_s: float = 15.0) -> int:
        """Records the groups have not committed yet, counted exactly: what a read_committed
        consumer gets between each partition's committed offset and its end at the last
        `progress` call. Offsets alone cannot tell a record from a transaction marker or an
        aborted transaction's records, which are never delivered and so never committed."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        behind = {
            (topic, partition): (committed, end)
            for (_, topic, partition), (committed, end) in self.positions.items()
            if end > committed
        }
        if not behind:
            return 0
        consumer = Consumer(
            {
                **self._config,
                "group.id": "sensorstream-bench-undelivered",  # assign() only, never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        try:
            consumer.assign([TopicPartition(t, p, c) for (t, p), (c, _) in behind.items()])
            waiting, found = set(behind), 0
            deadline = time.monotonic() + patience_s
            while waiting and time.monotonic() < deadline:
                for message in consumer.consume(1000, timeout=0.5):
                    key = (message.topic(), message.partition())
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            waiting.discard(key)
                        continue
                    if key in waiting and message.offset() < behind[key][1]:
                        found += 1
                    else:
                        waiting.discard(key)
            return found + sum(behind[k][1] - behind[k][0] for k in waiting)
        finally:
            consumer.close()

    def router(self) -> GroupProgress:
        return self.progress(ROUTER_GROUP, self.router_topics)

    def sink(self) -> GroupProgress:
        return self.progress(SINK_GROUP, self.sink_topics)


# -- one sample -------------------------------------------------------------------------------


@dataclass
class Sample:
    """The pipeline at one moment. Counts are since the run started (this run's rows only)."""

    t: float  # seconds since the sampler started
    written: int  # rows in SQLite
    produced: int  # rows the producers committed to Kafka
    router_in: int  # router group's committed offsets on the readings topic
    readings_end: int
    routed_end: int  # last stable offsets of every routed topic, summed
    sink_in: int  # sink group's committed offsets on the routed topics
    worst_partition_lag: int  # of the router and the sink, the largest on one partition
    processes: dict[str, dict[str, float | None]] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def producer_lag(self) -> int:
        return max(0, self.written - self.produced)

    @property
    def router_lag(self) -> int:
        return max(0, self.readings_end - self.router_in)

    @property
    def sink_lag(self) -> int:
        return max(0, self.routed_end - self.sink_in)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 2),
            "written": self.written,
            "produced": self.produced,
            "router_in": self.router_in,
            "readings_end": self.readings_end,
            "routed_end": self.routed_end,
            "sink_in": self.sink_in,
            "producer_lag": self.producer_lag,
            "router_lag": self.router_lag,
            "sink_lag": self.sink_lag,
            "worst_partition_lag": self.worst_partition_lag,
            "load_average": [round(x, 2) for x in self.load_average],
            "processes": {
                name: {k: (round(v, 1) if isinstance(v, float) else v) for k, v in p.items()}
                for name, p in self.processes.items()
            },
        }


class Sampler:
    """Takes `Sample`s of one pipeline run; `pids` is called each time (restarts change them)."""

    def __init__(
        self,
        kafka_config: dict[str, str],
        nodes: list[EdgeNode],
        regions: tuple[str, ...],
        other_sink_groups: tuple[str, ...] = (),
    ) -> None:
        self.nodes = nodes
        self.other_sink_groups = other_sink_groups
        """Groups of further sinks on the routed topics, which must drain too."""
        self.checkpoints = CheckpointWatcher(kafka_config, nodes)
        self.offsets = OffsetProbe(kafka_config, regions)
        self.cpu = CpuMeter()
        self.started = time.monotonic()

    def sample(self, pids: dict[str, int]) -> Sample:
        processes = self.cpu.read(pids)
        starts = {n.node_id: n.start_rowid for n in self.nodes}
        rowids = self.checkpoints.poll()
        router, sink = self.offsets.router(), self.offsets.sink()
        return Sample(
            t=time.monotonic() - self.started,
            written=sum(max_rowid(n.db) - n.start_rowid for n in self.nodes),
            produced=sum(max(0, rowids[node] - start) for node, start in starts.items()),
            router_in=router.committed,
            readings_end=router.end,
            routed_end=sink.end,
            sink_in=sink.committed,
            worst_partition_lag=max(router.worst, sink.worst),
            processes=processes,
            load_average=os.getloadavg(),
        )

    def drained(self, sample: Sample) -> bool:
        """Every row written is in Kafka and neither group has a record left to commit."""
        if sample.producer_lag or sample.worst_partition_lag > DRAIN_CHECK_MAX_LAG:
            return False
        for group in self.other_sink_groups:
            if self.offsets.progress(group, self.offsets.sink_topics).worst > DRAIN_CHECK_MAX_LAG:
                return False
        return self.offsets.undelivered() == 0

    def wait_drained(
        self, pids: Callable[[], dict[str, int]], timeout_s: float, say: Callable[[str], None]
    ) -> tuple[bool, list[Sample]]:
        """Sample until drained (twice in a row) or `timeout_s`; whether it drained."""
        began, calm, samples = time.monotonic(), 0, []
        while calm < 2:
            if time.monotonic() - began > timeout_s:
                return False, samples
            time.sleep(2.0)
            sample = self.sample(pids())
            samples.append(sample)
            calm = calm + 1 if self.drained(sample) else 0
            say(
                f"draining: producer lag {sample.producer_lag:,}, router lag "
                f"{sample.router_lag:,}, sink lag {sample.sink_lag:,} offsets"
            )
        return True, samples

    def close(self) -> None:
        self.checkpoints.close()


class ProcessDied(RuntimeError):
    """A stage, a simulator or a helper process exited while the run needed it."""


def drive(
    sampler: Sampler,
    seconds: float,
    sample_s: float,
    pids: Callable[[], dict[str, int]],
    exited: Callable[[], list[str]],
    say: Callable[[str], None],
) -> list[Sample]:
    """Sample every `sample_s` for `seconds`; ProcessDied as soon as `exited()` names one."""
    samples: list[Sample] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(sample_s, max(0.0, end - time.monotonic())))
        sample = sampler.sample({**pids(), "bench": os.getpid()})
        samples.append(sample)
        if gone := exited():
            raise ProcessDied("exited during the run: " + "; ".join(gone))
        say(
            f"t={sample.t:6.0f}s written {sample.written:,} lag: producer "
            f"{sample.producer_lag:,} router {sample.router_lag:,} sink {sample.sink_lag:,}; "
            f"load {sample.load_average[0]:.1f}; CPU% "
            + " ".join(
                f"{name}={p['cpu_pct']:.0f}"
                for name, p in sample.processes.items()
                if p.get("cpu_pct") is not None
            )
        )
    return samples
