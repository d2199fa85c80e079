"""The routing control topic: versions are serialized (two applies at the same moment never
both become version N, and every reader agrees on which did), a bad message never stops a
router from following later versions, and any version can be shown or rolled back to."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from sensorstream.metrics import MetricFamilies
from sensorstream.topics import read_to_end
from stream_apps.app import RouterApp
from stream_apps.control import ConcurrentPublish, ControlWatcher, RoutingControl, RoutingVersion
from stream_apps.metrics import RouterMetrics
from stream_apps.routing.config import content_hash
from tests.integration.stream_apps.test_router_live import (
    Names,
    Running,
    router_settings,
    routing_text,
    wait_until,
)

pytestmark = pytest.mark.integration

ROUNDS = 25


def test_concurrent_applies_serialize_versions_and_every_reader_agrees(
    kafka, connection, unique, monkeypatch, capsys
):
    names = Names(unique)
    control = RoutingControl(connection.kafka_client_config(), names.control)
    control.ensure_topic()
    followed: dict[int, str] = {}  # what a running router's watcher switched to
    watcher = ControlWatcher(
        control, 0, lambda v: followed.setdefault(v.version, v.content), lambda *_: None
    )
    watcher.start()
    results: list[tuple[str, str, int | None, str]] = []  # who, content, version, error
    lock = threading.Lock()

    def apply(who: str, text: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            version, new = control.publish(text, who, f"{who}.yaml")
            assert new
            outcome = (who, text, version.version, "")
        except ConcurrentPublish as exc:
            outcome = (who, text, None, str(exc))
        with lock:
            results.append(outcome)

    try:
        for round_ in range(ROUNDS):
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(
                    target=apply,
                    args=(who, f"# round {round_} by {who}\n{routing_text(names)}", barrier),
                )
                for who in ("alice", "bob")
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
                assert not thread.is_alive()

        won = [(who, text, v) for who, text, v, _ in results if v is not None]
        lost = [(who, error) for who, _, v, error in results if v is None]
        claims = Counter(v for _, _, v in won)
        assert all(n == 1 for n in claims.values()), f"versions claimed twice: {claims}"
        assert lost, f"no apply of {ROUNDS} rounds ran into another: the race was not hit"
        for _who, error in lost:
            assert "was published concurrently by" in error and "re-run" in error, error
        with capsys.disabled():
            print(f"\n{len(won)} applies won, {len(lost)} lost to a concurrent apply")

        # `routes show`/`history` readers and restarted routers: the winners, in order.
        history = control.history()
        assert [v.version for v in history] == list(range(1, len(won) + 1))
        assert {v.version: v.content for v in history} == {v: text for _, text, v in won}

        # Running routers followed the same versions with the same content.
        wait_until(lambda: len(followed) == len(history), 120, "the watcher to catch up")
        assert followed == {v.version: v.content for v in history}

        # A restarted router starts with the same latest version.
        restarted = RouterApp(router_settings(names, None), connection)
        assert restarted.initial_version().content == history[-1].content
    finally:
        watcher.stop()

    from sensorstream.cli import main

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("SENSORSTREAM_ROUTER_CONTROL_TOPIC", names.control)
    capsys.readouterr()
    assert main(["routes", "show"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"# routing version {history[-1].version},")
    assert shown.split("\n", 1)[1] == history[-1].content


def _produce_raw(connection, topic: str, key: bytes, value: bytes) -> int:
    producer = Producer({**connection.kafka_client_config(), "acks": "all"})
    offsets: list[int] = []
    producer.produce(
        topic, key=key, value=value, on_delivery=lambda e, m: offsets.append(m.offset())
    )
    assert producer.flush(30) == 0
    return offsets[0]


def test_a_bad_control_message_is_dead_lettered_and_the_router_follows_the_next_version(
    kafka, schema_registry, connection, tmp_path, unique
):
    names = Names(unique)
    v1_file = tmp_path / "routes-v1.yaml"
    v1_file.write_text(routing_text(names))
    families = MetricFamilies()
    app = RouterApp(router_settings(names, v1_file), connection, RouterMetrics(families))
    running = Running(app).start()
    try:
        wait_until(lambda: app.router is not None, 180, "the router to start")
        assert app.router.active.version == 1

        # Not JSON at all; then JSON claiming version 2 without the fields of a version.
        garbage = _produce_raw(connection, names.control, b"junk", b"\xff\xfe not json")
        partial = _produce_raw(connection, names.control, b"version-00000002", b'{"version": 2}')
        v2_text = routing_text(names, hot_above=15)
        v2 = RoutingVersion(
            version=2,
            content=v2_text,
            content_hash=content_hash(v2_text),
            applied_by="operator",
            applied_at="2026-12-02T17:00:00+00:00",
            source="v2.yaml",
        )
        _produce_raw(connection, names.control, b"version-00000002/x", v2.to_bytes())

        wait_until(lambda: app.router.active.version == 2, 120, "version 2 to be in force")
        assert running.alive()
    finally:
        running.stop()

    bad = families.registry.get_sample_value(
        "sensorstream_router_control_bad_messages_total", {"reason": "undecodable"}
    )
    assert bad == 2

    letters = {}
    deadline = time.monotonic() + 120
    while len(letters) < 2 and time.monotonic() < deadline:
        for m in read_to_end(connection.kafka_client_config(), names.dlq):
            headers = {k: v.decode() for k, v in (m.headers() or [])}
            if headers.get("dlq.source.topic") == names.control:
                letters[int(headers["dlq.source.offset"])] = (headers, m.value())
        time.sleep(0.5)
    assert set(letters) == {garbage, partial}
    headers, value = letters[garbage]
    assert headers["dlq.stage"] == "router"
    assert "not a routing version" in headers["dlq.error"]
    assert value == b"\xff\xfe not json"

    # Every other reader skips the same messages: history is versions 1 and 2, v2's content.
    history = RoutingControl(connection.kafka_client_config(), names.control).history()
    assert [(v.version, v.content) for v in history] == [
        (1, v1_file.read_text()),
        (2, v2_text),
    ]


def test_routes_show_n_and_rollback_n(
    kafka, schema_registry, unique, tmp_path, monkeypatch, capsys
):
    from sensorstream.cli import main

    names = Names(unique)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", schema_registry.url)
    monkeypatch.setenv("SENSORSTREAM_ROUTER_CONTROL_TOPIC", names.control)
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(routing_text(names))
    v2.write_text(routing_text(names, hot_above=15))
    monkeypatch.setenv("SENSORSTREAM_ROUTER_APPLIED_BY", "alice")
    assert main(["routes", "apply", str(v1)]) == 0
    assert main(["routes", "apply", str(v2)]) == 0
    capsys.readouterr()

    assert main(["routes", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# routing version 1, applied ")
    assert out.split("\n", 1)[1] == v1.read_text()

    monkeypatch.setenv("SENSORSTREAM_ROUTER_APPLIED_BY", "bob")
    assert main(["routes", "rollback", "1"]) == 0
    assert "rolled back to version 1 as routing version 3" in capsys.readouterr().out

    history = RoutingControl({"bootstrap.servers": kafka.bootstrap_servers}, names.control)
    latest = history.history()[-1]
    assert (latest.version, latest.content, latest.applied_by) == (3, v1.read_text(), "bob")
    assert latest.source == "rollback to version 1"

    assert main(["routes", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split()[0] == "3" and lines[-1].endswith("rollback to version 1")

    # Rolling back to what is in force already publishes nothing.
    assert main(["routes", "rollback", "3"]) == 0
    assert "nothing applied" in capsys.readouterr().out
    assert len(history.history()) == 3

    # A version that does not exist, or no number: exit 2 naming it.
    assert main(["routes", "show", "9"]) == 2
    assert "no routing version 9" in capsys.readouterr().err
    assert main(["routes", "rollback"]) == 2
    assert "rollback needs the version" in capsys.readouterr().err
