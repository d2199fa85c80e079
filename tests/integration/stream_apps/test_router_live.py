"""The router while it runs: a routing change switches in live at a checkpoint, a second
instance and a stopped one rebalance the input, and kill -9 mid-stream loses and duplicates
nothing. Every output topic is read back read_committed and compared with exact sets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from producers.settings import ProducerSettings
from producers.simulator import SimulatorSettings, SteppingClock, run_simulator
from producers.tailer import EdgeTailer
from sensorstream.topics import TopicSpec, ensure_topics
from stream_apps.app import DEFAULT_ROUTES, RouterApp, RouterResult
from stream_apps.control import RoutingControl
from stream_apps.dispatch import HEADER_ROUTE, HEADER_ROUTES_VERSION
from stream_apps.routing.config import content_hash
from stream_apps.settings import RouterSettings
from tests.kafka_helpers import AvroDecoder, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
V1_EMERGENCY = "anomaly_flag or temperature > 90 or vibration > 50"

Key = tuple[str, int]  # (_node_id, _source_rowid): one input record


# --- routing files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    unique: str

    @property
    def input(self) -> str:
        return f"t.{self.unique}.in"

    @property
    def dlq(self) -> str:
        return f"t.{self.unique}.dlq"

    @property
    def control(self) -> str:
        return f"t.{self.unique}.control"

    @property
    def group(self) -> str:
        return f"g-{self.unique}"

    def topic(self, route: str) -> str:
        return f"t.{self.unique}.{route}"

    def regional(self, region: str) -> str:
        return f"t.{self.unique}.regional.{region}"


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"routes.yaml no longer has exactly one {old!r}"
    return text.replace(old, new)


def routing_text(names: Names, hot_above: float = 90, filtered_drop: str = "serial_number") -> str:
    """The shipped routes.yaml on this test's topics; `hot_above` is the emergency temperature
    threshold (in the where and in the overheat alert), `filtered_drop` the field filtered
    drops."""
    text = DEFAULT_ROUTES.read_text(encoding="utf-8")
    text = _replace_once(text, "input: sensors.readings", f"input: {names.input}")
    text = _replace_once(text, "dead_letter_topic: sensors.dlq", f"dead_letter_topic: {names.dlq}")
    for route in ("raw", "schematized", "filtered", "emergency"):
        text = _replace_once(text, f"topic: sensors.{route}\n", f"topic: {names.topic(route)}\n")
    text = _replace_once(
        text,
        'topic: "sensors.regional.{_region}"',
        f'topic: "t.{names.unique}.regional.{{_region}}"',
    )
    text = _replace_once(
        text,
        f'where: "{V1_EMERGENCY}"',
        f'where: "anomaly_flag or temperature > {hot_above} or vibration > 50"',
    )
    text = _replace_once(text, 'when: "temperature > 90"', f'when: "temperature > {hot_above}"')
    return _replace_once(text, "drop: [serial_number]", f"drop: [{filtered_drop}]")


def hot_rule(threshold: float) -> Callable[[dict], bool]:
    """The emergency where, in Python: comparisons with null are false."""

    def matches(r: dict) -> bool:
        temperature, vibration = r["temperature"], r["vibration"]
        return (
            bool(r["anomaly_flag"])
            or (temperature is not None and temperature > threshold)
            or (vibration is not None and vibration > 50)
        )

    return matches


def filtered_rule(r: dict) -> bool:
    return r["anomaly_flag"] == 0 and r["status_code"] == 0


def router_settings(names: Names, routes: Path | None, **extra) -> RouterSettings:
    return RouterSettings(
        routes=routes,
        consumer_group=names.group,
        control_topic=names.control,
        commit_interval_s=0.5,
        applied_by="router-test",
        **extra,
    )


# --- input -----------------------------------------------------------------------------------


def produce_batch(
    connection, tmp_path: Path, names: Names, node: str, region: str, count: int, seed: int
) -> str:
    """`count` simulated readings of one edge node into the input topic, through the real
    producer; returns the node id (the batch's identity in every output)."""
    db = tmp_path / f"{node}.db"
    run_simulator(
        SimulatorSettings(db=db, count=count, rate=0, seed=seed, sensors=6, region=region),
        clock=SteppingClock(START, timedelta(milliseconds=10)),
    )
    node_id = f"{node}-{names.unique}"
    result = EdgeTailer(producer_settings(names, db, node_id, region), connection).run()
    assert (result.rows, result.dead_letters) == (count, 0)
    return node_id


def producer_settings(names: Names, db: Path, node_id: str, region: str, **extra):
    return ProducerSettings(
        sqlite=db,
        node_id=node_id,
        region=region,
        topic=names.input,
        dead_letter_topic=f"t.{names.unique}.edge-dlq",
        checkpoint_topic=f"t.{names.unique}.edge-ckpt",
        **{"once": True, **extra},
    )


# --- reading outputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    key: Key
    record: dict
    headers: dict[str, str]
    partition: int
    offset: int


def read_records(kafka, decoder: AvroDecoder, topic: str) -> list[Out]:
    out = []
    # Every router has ended; a killed one's open transaction is aborted by the broker after
    # its timeout, and records committed behind it are only readable then: wait for it.
    for m in read_topic(kafka.bootstrap_servers, topic, await_open_transactions=True):
        _, record = decoder.decode(m.value())
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        key = (record["_node_id"], record["_source_rowid"])
        out.append(Out(key, record, headers, m.partition(), m.offset()))
    return out


def assert_once(outputs: list[Out], expected: set[Key], what: str) -> None:
    counts = Counter(o.key for o in outputs)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    assert not duplicated, f"{what}: {len(duplicated)} records more than once: {duplicated[:5]}"
    missing = sorted(expected - set(counts))
    assert not missing, f"{what}: {len(missing)} records missing: {missing[:5]}"
    extra = sorted(set(counts) - expected)
    assert not extra, f"{what}: {len(extra)} records that should not be there: {extra[:5]}"


class CommittedCounter:
    """Counts the messages of a topic a read_committed consumer sees, as they commit."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "tests-counter",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
        self.topic = topic
        self.count = 0
        self.assigned = False

    def poll(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        if not self.assigned:  # the router creates its output topics on first use
            metadata = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
            if metadata.error is not None or not metadata.partitions:
                time.sleep(seconds)
                return 0
            partitions = [TopicPartition(self.topic, p, 0) for p in metadata.partitions]
            self.consumer.assign(partitions)
            self.assigned = True
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(1000, 0.1):
                if not msg.error():
                    self.count += 1
        return self.count

    def wait_for(self, count: int, timeout: float, alive: Callable[[], bool] = lambda: True):
        deadline = time.monotonic() + timeout
        while self.poll(0.2) < count:
            assert alive(), f"the router stopped with {self.count}/{count} in {self.topic}"
            assert time.monotonic() < deadline, (
                f"{self.topic}: {self.count}/{count} committed after {timeout} s"
            )

    def close(self) -> None:
        self.consumer.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


# --- running routers in threads --------------------------------------------------------------


@dataclass
class Running:
    """A RouterApp run() in a thread of its own: one run, one object, from start to stop."""

    router: RouterApp
    result: RouterResult | None = None
    error: BaseException | None = None
    runs: int = 0
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="router", daemon=True)

    def _run(self) -> None:
        self.runs += 1
        try:
            self.result = self.router.run()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Running:
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def routed(self) -> int:
        return self.router.router.routed if self.router.router else 0

    def stop(self, timeout: float = 30) -> RouterResult:
        self.router.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the router did not stop"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# --- 1. a routing change while the router runs -----------------------------------------------


def test_routing_change_switches_in_live_at_a_checkpoint(
    kafka, schema_registry, connection, tmp_path, unique, monkeypatch, capsys
):
    names = Names(unique)
    v1_file = tmp_path / "routes-v1.yaml"
    v1_file.write_text(routing_text(names), encoding="utf-8")
    v2_text = routing_text(names, hot_above=15, filtered_drop="firmware_version")
    v3_text = routing_text(names, hot_above=20, filtered_drop="firmware_version")
    rules = {"1": hot_rule(90), "2": hot_rule(15), "3": hot_rule(20)}
    control = RoutingControl(connection.kafka_client_config(), names.control)

    router = RouterApp(router_settings(names, v1_file), connection)
    router.build()  # publishes the file as version 1
    running = Running(router).start()
    raw = None
    try:
        raw = CommittedCounter(kafka.bootstrap_servers, names.topic("raw"))
        # A: 2000 records under version 1.
        node_a = produce_batch(connection, tmp_path, names, "a", "eu-west-1", 2000, seed=3)
        raw.wait_for(2000, 40, running.alive)

        # Version 2 published while the router is idle: in force before the next record.
        v2, new = control.publish(v2_text, "alice", "v2.yaml")
        assert (v2.version, new) == (2, True)
        wait_until(lambda: router.router.active.version == 2, 15, "version 2 in force (idle)")

        # B: 2000 records, all under version 2.
        node_b = produce_batch(connection, tmp_path, names, "b", "us-east-1", 2000, seed=4)
        raw.wait_for(4000, 40, running.alive)

        # C: a continuous stream (edge writer and tailer running); version 3 is published
        # while it flows and must switch in between two checkpoints, mid-stream.
        node_c = f"c-{unique}"
        db_c = tmp_path / "c.db"
        run_simulator(SimulatorSettings(db=db_c, count=1, rate=0, seed=5, sensors=6))
        stop_tailer = threading.Event()
        tailer = EdgeTailer(
            producer_settings(names, db_c, node_c, "ap-southeast-2", once=False, chunk_rows=200),
            connection,
            stop_tailer,
        )
        tailing = threading.Thread(target=tailer.run, daemon=True)
        tailing.start()
        writer_result = []
        writer = threading.Thread(
            target=lambda: writer_result.append(
                run_simulator(
                    SimulatorSettings(
                        db=db_c, duration=5, rate=1500, seed=5, sensors=6, tick_s=0.02
                    )
                )
            ),
            daemon=True,
        )
        writer.start()
        try:
            # Some C records routed under version 2, then version 3 while C still flows.
            wait_until(lambda: running.routed >= 4000 + 1500, 30, "1500 C records routed")
            v3, new = control.publish(v3_text, "bob", "v3.yaml")
            assert (v3.version, new) == (3, True)
            writer.join(30)
            assert not writer.is_alive() and writer_result, "the edge writer did not finish"
            total_c = writer_result[0].last_rowid
            wait_until(
                lambda: tailer.checkpoint is not None and tailer.checkpoint.rowid == total_c,
                30,
                "the tailer to catch up with the writer",
            )
        finally:
            stop_tailer.set()
            tailing.join(30)
        assert writer_result[0].last_rowid > 5500
        raw.wait_for(4000 + total_c, 40, running.alive)
        assert running.alive() and running.runs == 1  # never restarted
    finally:
        result = running.stop()
        if raw is not None:
            raw.close()
    total = 4000 + total_c
    assert (result.routed, result.routes_version) == (total, 3)

    decoder = AvroDecoder(schema_registry.url)
    inputs = read_records(kafka, decoder, names.input)
    expected = {o.key for o in inputs}
    by_key = {o.key: o.record for o in inputs}
    batches = {node: {k for k in expected if k[0] == node} for node in (node_a, node_b, node_c)}
    assert [len(batches[n]) for n in (node_a, node_b, node_c)] == [2000, 2000, total_c]
    assert len(inputs) == total

    raw_out = read_records(kafka, decoder, names.topic("raw"))
    assert_once(raw_out, expected, "raw")
    version_of = {o.key: o.headers[HEADER_ROUTES_VERSION] for o in raw_out}
    assert {version_of[k] for k in batches[node_a]} == {"1"}
    assert {version_of[k] for k in batches[node_b]} == {"2"}
    assert {version_of[k] for k in batches[node_c]} == {"2", "3"}, "no switch mid-stream"
    # Per partition, in offset order, the version only goes up: one switch, at a boundary.
    by_partition = defaultdict(list)
    for o in sorted(raw_out, key=lambda o: (o.partition, o.offset)):
        by_partition[o.partition].append(int(o.headers[HEADER_ROUTES_VERSION]))
    for partition, versions in by_partition.items():
        assert versions == sorted(versions), f"raw partition {partition} went back a version"

    # Every output of one input record says the same version as its raw copy.
    outputs = {
        route: read_records(kafka, decoder, names.topic(route))
        for route in ("schematized", "filtered", "emergency")
    }
    outputs["regional"] = [
        o
        for region in ("eu-west-1", "us-east-1", "ap-southeast-2")
        for o in read_records(kafka, decoder, names.regional(region))
    ]
    for route, outs in outputs.items():
        for o in outs:
            assert o.headers[HEADER_ROUTE] == route
            assert o.headers[HEADER_ROUTES_VERSION] == version_of[o.key], (route, o.key)
    assert_once(outputs["regional"], expected, "regional")
    for o in outputs["regional"]:
        assert o.record["_region"] == {node_a: "eu-west-1", node_b: "us-east-1"}.get(
            o.key[0], "ap-southeast-2"
        )

    # Emergency: exactly the records the rule of their version selects.
    hot = {k for k in expected if rules[version_of[k]](by_key[k])}
    assert_once(outputs["emergency"], hot, "emergency")
    old_rule_only = {k for k in batches[node_b] if hot_rule(90)(by_key[k])}
    assert len(hot & batches[node_b]) > len(old_rule_only) + 100, "version 2 did not widen"
    for o in outputs["emergency"]:
        assert o.record["severity"] in ("warning", "critical")

    # Filtered: the same selection, but version 1 drops serial_number, 2 and 3 firmware_version.
    assert_once(outputs["filtered"], {k for k in expected if filtered_rule(by_key[k])}, "filtered")
    for o in outputs["filtered"]:
        if o.headers[HEADER_ROUTES_VERSION] == "1":
            assert "serial_number" not in o.record and "firmware_version" in o.record
        else:
            assert "firmware_version" not in o.record and "serial_number" in o.record

    # History: every version, who applied it, its content hash.
    history = control.history()
    assert [(v.version, v.applied_by, v.source) for v in history] == [
        (1, "router-test", str(v1_file)),
        (2, "alice", "v2.yaml"),
        (3, "bob", "v3.yaml"),
    ]
    texts = [v1_file.read_text(encoding="utf-8"), v2_text, v3_text]
    assert [v.content_hash for v in history] == [content_hash(t) for t in texts]
    assert [v.content for v in history] == texts

    from sensorstream.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", schema_registry.url)
    monkeypatch.setenv("SENSORSTREAM_ROUTER_CONTROL_TOPIC", names.control)
    capsys.readouterr()
    assert main(["routes", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 3
    for line, version in zip(lines, history, strict=True):
        fields = line.split()
        assert fields[0] == str(version.version)
        assert fields[2] == version.applied_by
        assert fields[3] == version.content_hash[:12]


# --- 2. two instances and two rebalances -----------------------------------------------------


def two_node_backlog(connection, tmp_path, names: Names, per_node: int) -> dict[str, str]:
    """`per_node` readings from each of two nodes in two regions: {node_id: region}."""
    ensure_topics(connection.kafka_client_config(), [TopicSpec(names.input, 3)])
    nodes = {}
    for node, region, seed in (("e", "eu-west-1", 11), ("u", "us-east-1", 12)):
        node_id = produce_batch(connection, tmp_path, names, node, region, per_node, seed)
        nodes[node_id] = region
    return nodes


def routed_backlog(
    connection, tmp_path, unique: str, per_node: int = 5_000
) -> tuple[Names, Path, dict[str, str]]:
    """A test's names, its routing file, and its input holding `per_node` readings from each of
    two nodes in two regions ({node_id: region})."""
    names = Names(unique)
    routes = tmp_path / "routes.yaml"
    routes.write_text(routing_text(names), encoding="utf-8")
    return names, routes, two_node_backlog(connection, tmp_path, names, per_node)


def assert_every_route_exactly_once(kafka, schema_registry, names: Names, nodes) -> set[Key]:
    """Each route's topic holds each record it selects once; schematized's refusals are in the
    DLQ instead, once each. Returns the input records."""
    decoder = AvroDecoder(schema_registry.url)
    inputs = read_records(kafka, decoder, names.input)
    expected = {o.key for o in inputs}
    by_key = {o.key: o.record for o in inputs}
    assert len(inputs) == len(expected)

    assert_once(read_records(kafka, decoder, names.topic("raw")), expected, "raw")
    for region in set(nodes.values()):
        regional = read_records(kafka, decoder, names.regional(region))
        in_region = {k for k in expected if nodes[k[0]] == region}
        assert_once(regional, in_region, f"regional {region}")
    hot = {k for k in expected if hot_rule(90)(by_key[k])}
    assert_once(read_records(kafka, decoder, names.topic("emergency")), hot, "emergency")
    kept = {k for k in expected if filtered_rule(by_key[k])}
    assert_once(read_records(kafka, decoder, names.topic("filtered")), kept, "filtered")

    schematized = read_records(kafka, decoder, names.topic("schematized"))
    refused = []
    for m in read_topic(kafka.bootstrap_servers, names.dlq, await_open_transactions=True):
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        assert headers.get(HEADER_ROUTE) == "schematized", headers
        _, record = decoder.decode(m.value())
        refused.append(Out((record["_node_id"], record["_source_rowid"]), record, headers, 0, 0))
    assert_once(schematized + refused, expected, "schematized + its dead letters")
    return expected


def test_two_instances_and_rebalances_route_each_record_once(
    kafka, schema_registry, connection, tmp_path, unique
):
    names, routes, nodes = routed_backlog(connection, tmp_path, unique)
    total = 20_000

    first = Running(RouterApp(router_settings(names, routes), connection))
    second = Running(RouterApp(router_settings(names, routes), connection))
    first.router.build()
    second.router.build()  # the same file: no new version
    first.start()
    raw = CommittedCounter(kafka.bootstrap_servers, names.topic("raw"))
    try:
        wait_until(lambda: first.routed >= 3000, 40, "the first instance to route 3000")
        second.start()  # joins the group: rebalance
        # More input after the join, so the second instance has records to route however fast
        # the first one drained the backlog.
        for node, region, seed in (("f", "eu-west-1", 13), ("v", "us-east-1", 14)):
            node_id = produce_batch(connection, tmp_path, names, node, region, 5_000, seed)
            nodes[node_id] = region
        wait_until(lambda: second.routed >= 1000, 40, "the second instance to take partitions")
        in_flight = raw.poll(0.1)
        first_result = first.stop()  # leaves the group mid-stream: rebalance
        assert in_flight < total, "the backlog was done before the first instance left"
        raw.wait_for(total, 50, second.alive)
        second_result = second.stop()
    finally:
        for running in (first, second):
            if running.alive():
                running.router.stop()
                running.thread.join(30)
        raw.close()
    print(f"routed: first {first_result.routed}, second {second_result.routed}")
    assert first_result.routed > 0 and second_result.routed > 0
    assert first_result.routed + second_result.routed >= total
    assert_every_route_exactly_once(kafka, schema_registry, names, nodes)


# --- 3. kill -9 of a router process mid-stream -----------------------------------------------


def route_process(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "route", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def raw_high_watermarks(bootstrap: str, topic: str) -> int:
    """Records in `topic` so far; 0 while the topic is too new to answer (no leader known yet:
    a poll loop asks again)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-watermarks"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in metadata.partitions
        )
    except KafkaException as exc:
        if exc.args[0].retriable():
            return 0
        raise
    finally:
        consumer.close()


def test_kill_9_mid_stream_then_once_routes_each_record_once(
    kafka, schema_registry, connection, tmp_path, unique
):
    # A backlog the router needs several seconds for, so that the kill lands mid-stream.
    names, routes, nodes = routed_backlog(connection, tmp_path, unique, per_node=20_000)
    total = 40_000
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": names.group,
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": names.control,
    }
    doomed = route_process(env, "--routes", str(routes))
    try:
        # Wait for it to have produced a twentieth of the backlog into raw, then kill it.
        deadline = time.monotonic() + 180
        while raw_high_watermarks(kafka.bootstrap_servers, names.topic("raw")) < total // 20:
            assert doomed.poll() is None, doomed.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the router never produced"
            time.sleep(0.1)
        assert doomed.poll() is None, "the router exited before the kill"
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.communicate(timeout=30)
    assert doomed.returncode == -signal.SIGKILL
    committed_before = len(read_topic(kafka.bootstrap_servers, names.topic("raw")))
    assert committed_before < total, "the backlog was done before the kill"
    print(f"killed with {committed_before} of {total} committed in raw")

    started = time.monotonic()
    finisher = route_process(env, "--once")
    out, err = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, err[-3000:]
    print(f"--once after the kill: {out.strip()} ({time.monotonic() - started:.1f} s)")
    assert_every_route_exactly_once(kafka, schema_registry, names, nodes)


def test_restarting_with_a_superseded_routing_file_keeps_the_newer_version(
    kafka, connection, tmp_path, unique, caplog
):
    """A router deployed with --routes v1, restarted after `routes apply` published v2, must
    not republish v1: that would revert the change for every router of the group."""
    names = Names(unique)
    first = tmp_path / "routes-v1.yaml"
    first.write_text(routing_text(names))

    def start_version(routes: Path) -> int:
        app = RouterApp(router_settings(names, routes), connection)
        app.control.ensure_topic()
        return app.initial_version().version

    assert start_version(first) == 1
    control = RoutingControl(connection.kafka_client_config(), names.control)
    applied, new = control.publish(routing_text(names, hot_above=80), "operator", "routes apply")
    assert (applied.version, new) == (2, True)

    with caplog.at_level("WARNING", logger="sensorstream.router"):
        assert start_version(first) == 2
    assert "superseded by version 2" in caplog.text
    assert [v.version for v in control.history()] == [1, 2]

    # A file never published before is an intended change: it is published.
    third = tmp_path / "routes-v3.yaml"
    third.write_text(routing_text(names, hot_above=70))
    assert start_version(third) == 3
