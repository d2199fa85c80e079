"""The sink under concurrency and outages, against real Kafka, registry and S3: two instances
of one group through rebalances, two processes appending to one table on S3, S3 unreachable
(fail loudly, commit no offset), stalled (fail within the retry budget, not the object store
client's minutes) or cut for a few seconds (retry, finish), a commit whose response is lost
(not repeated, but counted), and the memory bound. Every table is read back and compared with
exact sets."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from deltalake import DeltaTable

from infra.local_stack.object_store import s3_filesystem
from sensorstream.errors import PipelineError
from sensorstream.settings import ConnectionSettings
from sensorstream.topics import TopicSpec, ensure_topics
from sinks.app import DeltaSink, SinkResult
from sinks.metrics import SinkMetrics
from sinks.settings import SinkSettings, TableSettings
from tests.integration.sinks.test_sink import (
    Topics,
    connection_for,
    reading,
    send_spread,
    sink_settings,
    table_rows,
)
from tests.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# --- helpers ---------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(poll)


def assert_exactly_once(rows: pa.Table, expected_rowids: set[int]) -> None:
    """Each (topic, partition, offset) once, and exactly the expected source rows, each once."""
    records = Counter(
        zip(
            rows.column("_kafka_topic").to_pylist(),
            rows.column("_kafka_partition").to_pylist(),
            rows.column("_kafka_offset").to_pylist(),
            strict=True,
        )
    )
    duplicated = [r for r, n in records.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} records landed twice, e.g. {duplicated[:3]}"
    rowids = Counter(rows.column("_source_rowid").to_pylist())
    assert max(rowids.values()) == 1, [r for r, n in rowids.items() if n > 1][:5]
    missing = expected_rowids - set(rowids)
    extra = set(rowids) - expected_rowids
    assert not missing and not extra, (sorted(missing)[:10], sorted(extra)[:10])


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (negative: none), read by a fresh consumer."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30, cached=False)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def table_count(uri: str, options: dict | None) -> int:
    try:
        return DeltaTable(uri, storage_options=options).count()
    except Exception:  # not created yet
        return 0


def stop(events: list[threading.Event]) -> threading.Event:
    events.append(event := threading.Event())
    return event


class SinkThread:
    """A DeltaSink running in a thread, recording its assignments, what revokes dropped, and
    any buffered record of a partition it does not own (checked after every poll)."""

    def __init__(self, sink: DeltaSink, name: str) -> None:
        self.sink = sink
        self.assignments: list[set[int]] = []
        self.dropped_on_revoke: list[int] = []
        self.foreign: list[tuple[str, int]] = []
        self.result: SinkResult | None = None
        self.error: BaseException | None = None
        on_assign, on_revoke, flush_due = sink._on_assign, sink._on_revoke, sink._flush_due

        def assigned(consumer, partitions):
            on_assign(consumer, partitions)
            self.assignments.append({tp.partition for tp in partitions})

        def buffered() -> int:
            return sum(len(b) for b in sink._batches.values())

        def revoked(consumer, partitions):
            before = buffered()
            on_revoke(consumer, partitions)
            self.dropped_on_revoke.append(before - buffered())

        def checked_flush_due(now):
            self.foreign += [
                key
                for b in sink._batches.values()
                for key in b.partitions()
                if key not in sink._assigned
            ]
            flush_due(now)

        # Instance attributes shadow the methods that run() calls.
        sink._on_assign, sink._on_revoke = assigned, revoked
        sink._flush_due = checked_flush_due
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.sink.run()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def start(self) -> SinkThread:
        self.thread.start()
        return self

    @property
    def rows(self) -> int:
        return sum(w.rows for w in list(self.sink._writers.values()))

    @property
    def commits(self) -> int:
        return sum(w.commits for w in list(self.sink._writers.values()))

    def finish(self, timeout: float = 30) -> SinkResult:
        self.sink.stop.set()
        return self.join(timeout)

    def join(self, timeout: float = 120) -> SinkResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop in {timeout}s"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Feeder:
    """Produces readings in small chunks from a thread, up to a limit the test raises."""

    def __init__(self, topics: Topics, route: str, total: int, partitions: int) -> None:
        self.topics, self.route, self.total, self.partitions = topics, route, total, partitions
        self.sent = 0
        self._limit = 0
        self._cond = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.thread.start()

    def allow(self, limit: int) -> None:
        with self._cond:
            self._limit = max(self._limit, min(limit, self.total))
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while self.sent < self.total:
                with self._cond:
                    self._cond.wait_for(lambda: self._limit > self.sent, timeout=60)
                    upto = min(self._limit, self.sent + 250)
                if upto <= self.sent:
                    return
                send_spread(self.topics, self.route, range(self.sent + 1, upto + 1), 4)
                self.sent = upto
                time.sleep(0.05)  # a trickle: rebalances find records in flight and buffered
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert self.error is None, self.error
        assert self.sent == self.total, f"fed {self.sent} of {self.total}"


# --- 1. two instances of one group, rebalancing --------------------------------------------


def test_two_instances_through_rebalances_land_each_record_once(
    kafka, schema_registry, s3, s3_bucket, unique
):
    total = 20_000
    topics = Topics(kafka, schema_registry.url, unique)
    topic = topics.name("raw")
    ensure_topics({"bootstrap.servers": kafka.bootstrap_servers}, [TopicSpec(topic, 4)])
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    table_uri = f"{lake_uri}/raw"
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    settings = sink_settings(
        unique, poll_batch=100, defaults=TableSettings(max_rows=600, max_latency_s=1.0)
    ).model_copy(update={"once": False})

    stops: list[threading.Event] = []  # stopped on the way out, whatever happens
    try:
        feeder = Feeder(topics, "raw", total, 4)
        feeder.allow(6_000)
        first = SinkThread(DeltaSink(settings, connection, stop(stops)), "sink-1").start()
        wait_for(lambda: first.rows >= 2_000, "instance 1 to land 2000 rows", 120)

        # Instance 2 joins while records keep coming: instance 1 is revoked mid-stream.
        feeder.allow(10_000)
        second = SinkThread(DeltaSink(settings, connection, stop(stops)), "sink-2").start()
        wait_for(lambda: len(second.assignments) >= 1, "instance 2 to be assigned", 120)
        feeder.allow(14_000)  # records for instance 2's own partitions
        wait_for(lambda: second.rows > 0, "instance 2 to land rows", 120)

        # Instance 1 leaves mid-stream; instance 2 takes over all partitions and finishes.
        feeder.allow(total)
        first_result = first.finish()
        feeder.join(120)
        wait_for(
            lambda: table_count(table_uri, options) >= total, "every record in the table", 120, 0.5
        )
        second_result = second.finish()
    finally:
        for event in stops:
            event.set()

    assert_exactly_once(table_rows(table_uri, options), set(range(1, total + 1)))
    assert first_result.rows["raw"] > 0 and second_result.rows["raw"] > 0
    assert first_result.rows["raw"] + second_result.rows["raw"] == total
    # The rebalances did happen: 1 had all four, then a share; 2 had a share, then all four.
    everything = {0, 1, 2, 3}
    assert first.assignments[0] == everything, first.assignments
    assert any(a and a < everything for a in first.assignments[1:]), first.assignments
    assert any(a and a < everything for a in second.assignments), second.assignments
    assert second.assignments[-1] == everything, second.assignments
    # Between polls, neither ever held a record of a partition it did not own.
    assert not first.foreign and not second.foreign, (first.foreign[:5], second.foreign[:5])
    # The group's offsets reached the end: nothing would be replayed by a third instance.
    assert committed_offsets(
        kafka.bootstrap_servers, settings.consumer_group, topic, 4
    ) == end_offsets(kafka.bootstrap_servers, topic, 4)
    print(
        f"instance 1: {first_result.rows['raw']} rows, assignments {first.assignments}, "
        f"dropped on revoke {first.dropped_on_revoke}; instance 2: {second_result.rows['raw']} "
        f"rows, assignments {second.assignments}, dropped on revoke {second.dropped_on_revoke}"
    )


# --- 2. two processes appending to one table on S3 ---------------------------------------------

SUMMARY = re.compile(r"landed (\d+) rows in (\d+) commits")


def test_two_processes_append_to_one_s3_table_without_losing_a_commit(
    kafka, schema_registry, s3, s3_bucket, unique
):
    per_process = 12_000  # long enough that the two runs overlap even if one joins late
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    # Two sinks of their own (group, topic, prefix) whose route "raw" maps to the same table.
    sides = {"a": f"{unique}a", "b": f"{unique}b"}
    for n, u in enumerate(sides.values()):
        topics = Topics(kafka, schema_registry.url, u)
        topics.create("raw")
        first_id = n * per_process + 1
        send_spread(topics, "raw", range(first_id, first_id + per_process), 2)

    base_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_LAKE_URI": lake_uri,
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "SENSORSTREAM_SINK_POLL_BATCH": "200",
        "SENSORSTREAM_SINK_DEFAULTS": json.dumps({"max_rows": 200, "max_latency_s": 1}),
    }
    cmd = [sys.executable, "-m", "sensorstream", "sink", "--once"]
    procs = {
        side: subprocess.Popen(
            cmd,
            env={
                **base_env,
                "SENSORSTREAM_SINK_CONSUMER_GROUP": f"sink-{u}",
                "SENSORSTREAM_SINK_TOPICS": json.dumps([f"t.{u}.raw"]),
                "SENSORSTREAM_SINK_TOPIC_PREFIX": f"t.{u}.",
                "SENSORSTREAM_SINK_DEAD_LETTER_TOPIC": f"t.{u}.dlq",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for side, u in sides.items()
    }
    outputs = {side: p.communicate(timeout=180) for side, p in procs.items()}

    commits = {}
    for side, proc in procs.items():
        out, err = outputs[side]
        # delta-rs issue 2184: a process that read a table over S3 may abort at exit (SIGABRT,
        # "terminate called without an active exception") after its work is done; the printed
        # summary line and the table are then the evidence.
        assert proc.returncode in (0, -signal.SIGABRT), (side, proc.returncode, err[-3000:])
        if proc.returncode != 0:
            assert "terminate called without an active exception" in err, err[-3000:]
        summary = SUMMARY.search(out)
        assert summary, (side, out, err[-3000:])
        assert int(summary.group(1)) == per_process, (side, out)
        commits[side] = int(summary.group(2))

    table_uri = f"{lake_uri}/raw"
    assert_exactly_once(table_rows(table_uri, options), set(range(1, 2 * per_process + 1)))
    table = DeltaTable(table_uri, storage_options=options)
    # No commit lost or overwritten: one table version per commit either process reported.
    assert table.version() + 1 == commits["a"] + commits["b"], (table.version(), commits)
    assert len(table.history()) == commits["a"] + commits["b"]
    for u in sides.values():
        assert table.transaction_version(f"sensorstream:t.{u}.raw/0") is not None
        assert table.transaction_version(f"sensorstream:t.{u}.raw/1") is not None
    # Each commit file carries the txn actions of one process only, and the two interleave:
    # they really did commit to the table at the same time.
    fs = s3_filesystem(s3.endpoint_url, s3.access_key, s3.secret_key, s3.region)
    log_dir = f"{s3_bucket}/{unique}/lake/raw/_delta_log"
    writers = []
    for version in range(table.version() + 1):
        with fs.open_input_stream(f"{log_dir}/{version:020d}.json") as f:
            actions = [json.loads(line) for line in f.read().decode().splitlines() if line]
        apps = {a["txn"]["appId"] for a in actions if "txn" in a}
        owner = {side for side, u in sides.items() if any(f"t.{u}.raw/" in app for app in apps)}
        assert len(owner) == 1, (version, apps)
        writers.append(owner.pop())
    assert Counter(writers) == commits, writers
    switches = sum(1 for x, y in itertools.pairwise(writers) if x != y)
    assert switches >= 2, "".join(writers)
    print(f"commit order {''.join(writers)}; exit codes {[p.returncode for p in procs.values()]}")


# --- 3. S3 unreachable, and S3 cut for a few seconds -------------------------------------------


def test_unreachable_s3_fails_loudly_and_commits_no_offset(
    kafka, schema_registry, s3, s3_bucket, unique
):
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw")
    topic = topics.name("raw")
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    settings = sink_settings(unique, retry_budget_s=5)

    send_spread(topics, "raw", range(1, 1001), 2)
    DeltaSink(settings, connection).run()
    landed = committed_offsets(kafka.bootstrap_servers, settings.consumer_group, topic, 2)
    assert landed == {0: 500, 1: 500}

    send_spread(topics, "raw", range(1001, 3001), 2)
    nowhere = connection.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with pytest.raises(PipelineError) as failure:
        DeltaSink(settings, nowhere).run()
    elapsed = time.monotonic() - started
    assert f"{lake_uri}/raw" in str(failure.value) and "unreachable" in str(failure.value)
    assert 5 <= elapsed < 170, elapsed  # the 5 s budget, then loudly: not a hang
    # Not one offset moved past what the table holds.
    assert committed_offsets(kafka.bootstrap_servers, settings.consumer_group, topic, 2) == landed

    result = DeltaSink(settings, connection).run()
    assert result.rows == {"raw": 2000}
    assert_exactly_once(table_rows(f"{lake_uri}/raw", options), set(range(1, 3001)))
    assert committed_offsets(kafka.bootstrap_servers, settings.consumer_group, topic, 2) == {
        0: 1500,
        1: 1500,
    }


COMMIT_PUT = re.compile(rb"PUT /\S*/_delta_log/\d{20}\.json ")


class TcpProxy:
    """Forwards a local port to `target`. `cut()` drops every connection and stops listening
    (connection refused) until `restore()`; `stall()` keeps every connection open but forwards
    nothing more (a server that never answers) until `restore()`, which then closes them;
    `lose_next_commit_response()` lets the next Delta commit (the PUT of a
    `_delta_log/<version>.json`) reach S3 but drops its response."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._down = threading.Event()
        self._closed = threading.Event()
        self._lose_commit = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self.lost_responses: list[bytes] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)
        self._thread.start()

    def _listen(self) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        return listener

    def _serve(self) -> None:
        listener = None
        while not self._closed.is_set():
            if not self._up.is_set():
                if listener is not None:
                    listener.close()
                    listener = None
                self._down.set()
                self._up.wait(0.05)
                continue
            if listener is None:
                listener = self._listen()
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
                self.connections += 1
            losing = threading.Event()  # this connection's response is to be lost
            for src, dst, requests in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, requests, losing), daemon=True
                ).start()
        if listener is not None:
            listener.close()

    def _pump(
        self, src: socket.socket, dst: socket.socket, requests: bool, losing: threading.Event
    ) -> None:
        try:
            while data := src.recv(65536):
                if not self._flowing.is_set():
                    self._flowing.wait()  # stalled: the peer hears nothing, then loses it
                    break
                if requests and self._lose_commit.is_set() and (put := COMMIT_PUT.search(data)):
                    self._lose_commit.clear()
                    self.lost_responses.append(put.group(0))
                    losing.set()
                if not requests and losing.is_set():
                    break  # S3 did the PUT; its answer never reaches the client
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def lose_next_commit_response(self) -> None:
        self._lose_commit.set()

    def cut(self) -> None:
        self._down.clear()
        self._up.clear()
        assert self._down.wait(5), "the proxy did not stop listening"
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._sockets.clear()

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()
        self._up.set()

    def close(self) -> None:
        self._flowing.set()
        self.cut()
        self._closed.set()
        self._up.set()
        self._thread.join(5)


@contextlib.contextmanager
def s3_proxy(s3) -> Iterator[TcpProxy]:
    """A `TcpProxy` in front of the S3 server, closed on leaving (which ends a stall)."""
    host, port = s3.endpoint_url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()


def through(proxy: TcpProxy, connection: ConnectionSettings) -> ConnectionSettings:
    """`connection` with its S3 requests sent through `proxy`."""
    return connection.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{proxy.port}"})


def raw_spread(kafka, schema_registry, unique: str, total: int) -> Topics:
    """The `raw` topic, readings 1..total spread over its two partitions."""
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw")
    send_spread(topics, "raw", range(1, total + 1), 2)
    return topics


def retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retrying" in r.getMessage()]


def test_s3_cut_for_seconds_mid_run_is_retried_and_lands_each_record_once(
    kafka, schema_registry, s3, s3_bucket, unique, caplog
):
    total = 4_000
    topics = raw_spread(kafka, schema_registry, unique, total)
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    with s3_proxy(s3) as proxy:
        connection = through(proxy, connection_for(kafka, schema_registry, s3, lake_uri))
        settings = sink_settings(
            unique,
            poll_batch=200,
            retry_budget_s=40,
            defaults=TableSettings(max_rows=200, max_latency_s=1.0),
        )
        caplog.set_level("WARNING", logger="sensorstream.sink")
        sink = SinkThread(DeltaSink(settings, connection, threading.Event()), "sink").start()
        wait_for(lambda: sink.commits >= 3 or not sink.thread.is_alive(), "3 commits", 120)
        assert sink.thread.is_alive(), "the sink finished before the cut"
        proxy.cut()
        # Down for at least 4 s, and until the sink's own retries (not only the object store
        # client's quick reconnects inside one attempt) have met the outage.
        time.sleep(4)
        wait_for(lambda: retries(caplog), "the sink to retry", 120)
        committed_during_cut = sink.commits
        proxy.restore()
        result = sink.join(120)

    # A commit whose response the cut swallowed is in the table, and counted all the same.
    assert result.rows["raw"] == total
    assert result.commits > committed_during_cut
    table = DeltaTable(f"{lake_uri}/raw", storage_options=options)
    assert table.version() + 1 == result.commits
    assert_exactly_once(table_rows(f"{lake_uri}/raw", options), set(range(1, total + 1)))
    assert committed_offsets(
        kafka.bootstrap_servers, settings.consumer_group, topics.name("raw"), 2
    ) == {0: total // 2, 1: total // 2}
    print(f"{len(retries(caplog))} retries, {result.commits} commits")


def test_s3_that_stops_answering_fails_the_sink_within_the_retry_budget(
    kafka, schema_registry, s3, s3_bucket, unique
):
    """The budget is a hard bound: a stalled server would hold each attempt for the object
    store client's own timeouts and retries (30 s per request, minutes in all)."""
    total, budget = 4_000, 3.0
    topic = raw_spread(kafka, schema_registry, unique, total).name("raw")
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    with s3_proxy(s3) as proxy:
        connection = connection_for(kafka, schema_registry, s3, lake_uri)
        settings = sink_settings(
            unique,
            poll_batch=200,
            retry_budget_s=budget,
            defaults=TableSettings(max_rows=200, max_latency_s=1.0),
        )
        proxied = through(proxy, connection)
        sink = SinkThread(DeltaSink(settings, proxied, threading.Event()), "sink").start()
        wait_for(lambda: sink.commits >= 2 or not sink.thread.is_alive(), "2 commits", 120)
        assert sink.thread.is_alive(), "the sink finished before the stall"
        proxy.stall()
        stalled = time.monotonic()
        sink.thread.join(budget + 12)  # a batch is due within a second, then the budget
        failed_after = time.monotonic() - stalled
        assert not sink.thread.is_alive(), f"still running {failed_after:.0f}s after the stall"
        assert isinstance(sink.error, PipelineError), sink.error
        assert "unreachable" in str(sink.error) and f"{lake_uri}/raw" in str(sink.error)

    # No offset past what the table holds.
    committed = committed_offsets(kafka.bootstrap_servers, settings.consumer_group, topic, 2)
    rows = table_rows(f"{lake_uri}/raw", options)
    held: dict[int, set[int]] = {0: set(), 1: set()}
    for partition, offset in zip(
        rows.column("_kafka_partition").to_pylist(),
        rows.column("_kafka_offset").to_pylist(),
        strict=True,
    ):
        held[partition].add(offset)
    for partition, offset in committed.items():
        assert set(range(max(offset, 0))) <= held[partition], (partition, offset)
    assert sum(max(o, 0) for o in committed.values()) < total, committed

    result = DeltaSink(settings, connection).run()  # S3 answers again: the rest lands
    assert sum(result.rows.values()) + rows.num_rows == total
    assert_exactly_once(table_rows(f"{lake_uri}/raw", options), set(range(1, total + 1)))
    assert committed_offsets(kafka.bootstrap_servers, settings.consumer_group, topic, 2) == {
        0: total // 2,
        1: total // 2,
    }
    print(f"failed {failed_after:.1f}s after the stall (budget {budget:g}s): {sink.error}")


def test_a_commit_whose_response_is_lost_is_not_repeated(
    kafka, schema_registry, s3, s3_bucket, unique
):
    total = 2_000
    topics = raw_spread(kafka, schema_registry, unique, total)
    lake_uri, options = f"s3://{s3_bucket}/{unique}/lake", s3.storage_options()
    with s3_proxy(s3) as proxy:
        connection = through(proxy, connection_for(kafka, schema_registry, s3, lake_uri))
        settings = sink_settings(
            unique, poll_batch=200, defaults=TableSettings(max_rows=200, max_latency_s=1.0)
        )
        sink = SinkThread(DeltaSink(settings, connection, threading.Event()), "sink").start()
        wait_for(lambda: sink.commits >= 2 or not sink.thread.is_alive(), "2 commits", 120)
        proxy.lose_next_commit_response()
        result = sink.join(120)

    # The commit landed, its writer never heard so: the retried conditional put found the
    # version taken, and the re-read table showed the batch was already in, with the writer's
    # own commit id: its rows and its commit are counted, once.
    assert len(proxy.lost_responses) == 1, proxy.lost_responses
    assert_exactly_once(table_rows(f"{lake_uri}/raw", options), set(range(1, total + 1)))
    table = DeltaTable(f"{lake_uri}/raw", storage_options=options)
    assert table.version() + 1 == result.commits
    assert result.rows["raw"] == total
    assert committed_offsets(
        kafka.bootstrap_servers, settings.consumer_group, topics.name("raw"), 2
    ) == {0: total // 2, 1: total // 2}


# --- 4. the memory bound ------------------------------------------------------------------------


NEVER_DUE = TableSettings(max_rows=1_000_000, max_bytes=1 << 30, max_latency_s=600)
"""Tables that never flush on their own: every flush before the end is the memory bound's."""


def route_ids(n: int, per_route: int) -> range:
    """The readings of the `n`th route of a memory bound test."""
    return range(n * per_route + 1, (n + 1) * per_route + 1)


def backlog_per_route(kafka, schema_registry, unique: str, routes: list[str], per_route: int):
    """A topic per route, with its `route_ids` spread over two partitions."""
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create(*routes)
    for n, route in enumerate(routes):
        send_spread(topics, route, route_ids(n, per_route), 2)


def assert_each_route_once(lake_uri: str, routes: list[str], per_route: int) -> None:
    for n, route in enumerate(routes):
        assert_exactly_once(table_rows(f"{lake_uri}/{route}", None), set(route_ids(n, per_route)))


def test_buffering_stays_within_the_memory_bound(kafka, schema_registry, s3, tmp_path, unique):
    routes = ["a", "b", "c", "d"]
    per_route, bound, poll = 2_500, 2_000, 500
    backlog_per_route(kafka, schema_registry, unique, routes, per_route)
    lake_uri = str(tmp_path / "lake")
    settings: SinkSettings = sink_settings(
        unique, max_buffered_rows=bound, poll_batch=poll, defaults=NEVER_DUE, routes={}
    )
    sink = DeltaSink(settings, connection_for(kafka, schema_registry, s3, lake_uri))

    def buffered() -> int:
        return sink.buffered_rows()  # the batch being written included

    def commits() -> int:
        return sum(w.commits for w in sink._writers.values())

    seen: list[tuple[int, int, int]] = []  # (buffered before, after, commits) per loop
    flush_due = sink._flush_due

    def checked_flush_due(now: float) -> None:
        before = buffered()
        flush_due(now)
        seen.append((before, buffered(), commits()))

    sink._flush_due = checked_flush_due
    result = sink.run()
    # Latency 600 s and huge row/byte limits: every commit in the loop is the memory bound's.
    loop_commits = seen[-1][2]

    assert result.rows == {r: per_route for r in routes}
    assert max(before for before, _, _ in seen) <= bound + poll, seen
    assert max(after for _, after, _ in seen) <= bound, seen
    assert max(before for before, _, _ in seen) > bound, "the bound was never reached"
    # 10000 rows through a 2000-row bound: at least (10000 - 2000) / 2500 bound flushes.
    assert loop_commits >= 4, seen
    assert_each_route_once(lake_uri, routes, per_route)
    print(f"peak buffered {max(b for b, _, _ in seen)}, {loop_commits} bound flushes")


class HeldMemory(SinkMetrics):
    """The sink's metrics, also keeping every (records, bytes) it reports as held."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[int, int]] = []
        self.batches = 0

    def buffered(self, records: int, size: int = 0) -> None:
        super().buffered(records, size)
        self.reports.append((records, size))

    def batch_landed(self, route: str, **kwargs) -> None:
        super().batch_landed(route, **kwargs)
        self.batches += 1


def test_held_bytes_stay_within_the_byte_bound(kafka, schema_registry, s3, tmp_path, unique):
    """The memory bound is by bytes: with tables that would never flush on their own, the
    records held (buffered and being written) never pass `max_buffered_bytes` after a poll,
    and the bound's flushes land every record exactly once."""
    routes = ["a", "b", "c", "d"]
    per_route, bound = 5_000, 1024 * 1024
    backlog_per_route(kafka, schema_registry, unique, routes, per_route)
    lake_uri = str(tmp_path / "lake")
    settings: SinkSettings = sink_settings(
        unique, max_buffered_bytes=bound, poll_batch=500, defaults=NEVER_DUE, routes={}
    )
    metrics = HeldMemory()
    result = DeltaSink(
        settings, connection_for(kafka, schema_registry, s3, lake_uri), metrics=metrics
    ).run()

    assert result.rows == {r: per_route for r in routes}
    held = [size for _, size in metrics.reports]
    assert max(held) <= bound, max(held)
    # The records are several times the bound, so it was reached: more batches than the
    # final flush's one per table (latency 600 s, row and byte limits out of reach: no other
    # flush).
    assert max(held) > bound // 2, max(held)
    assert metrics.batches > len(routes), metrics.batches
    assert held[-1] == 0  # all landed
    assert_each_route_once(lake_uri, routes, per_route)


def test_a_fenced_consumer_is_replaced_and_nothing_is_lost_or_doubled(
    kafka, schema_registry, s3, tmp_path, unique
):
    """A static member fenced by a member with its instance id gets a fatal consumer error,
    after which its consumer never consumes again (seen in the chaos test: a sink fenced by its
    own rejoin after a broker restart idled until the end). The sink starts a new consumer and
    lands every record once."""
    topics = Topics(kafka, schema_registry.url, unique)
    topics.create("raw", "dlq")
    topics.send("raw", [reading(i) for i in range(1, 201)])
    topics.flush()
    lake_uri = str(tmp_path / "lake")
    settings = sink_settings(
        unique, instance_id="sink-a", defaults=TableSettings(max_latency_s=1.0)
    ).model_copy(update={"once": False})
    stops: list[threading.Event] = []
    connection = connection_for(kafka, schema_registry, s3, lake_uri)
    sink = SinkThread(DeltaSink(settings, connection, stop(stops)), "sink-a").start()
    try:
        wait_for_rows(f"{lake_uri}/raw", 200, sink)
        rogue = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": settings.consumer_group,
                "group.instance.id": "sink-a",
                "session.timeout.ms": 15000,
            }
        )
        rogue.subscribe(settings.topics)
        deadline = time.monotonic() + 30
        while not sink.sink._fatal_errors:
            rogue.consume(100, 0.5)
            assert time.monotonic() < deadline, "the sink's consumer was never fenced"
        rogue.close()
        topics.send("raw", [reading(i) for i in range(201, 401)])
        topics.flush()
        wait_for_rows(f"{lake_uri}/raw", 400, sink)
    finally:
        for event in stops:
            event.set()
    sink.join(60)
    ids = table_rows(f"{lake_uri}/raw", None).column("_source_rowid").to_pylist()
    assert sorted(ids) == list(range(1, 401)), "lost or doubled rows"


def wait_for_rows(uri: str, rows: int, sink: SinkThread, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while table_count(uri, None) < rows:
        assert sink.thread.is_alive(), f"the sink stopped: {sink.error!r}"
        assert time.monotonic() < deadline, f"{uri}: {table_count(uri, None)}/{rows} rows"
        time.sleep(0.2)
