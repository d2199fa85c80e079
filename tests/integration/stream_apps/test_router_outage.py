"""The router through a broker outage (DESIGN section 7: retry with backoff, then fail loudly).

A broker that stays away longer than a checkpoint's transaction can wait makes quixstreams raise
out of `run()`. The router then starts its clients again, with backoff, from the committed
offsets: the lost transaction was never committed, so nothing is lost or doubled. Only an
outage longer than the retry budget ends the process, with one line naming the broker and the
last error. Both tests stop a dedicated broker mid-stream, while a transaction is open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.integration.stream_apps.test_router_live import (
    CommittedCounter,
    Names,
    assert_every_route_exactly_once,
    raw_high_watermarks,
    route_process,
    routing_text,
    two_node_backlog,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_NODE = 5_000


@contextmanager
def router_mid_backlog(
    dedicated_kafka, schema_registry, connection, tmp_path, names, budget
) -> Iterator[tuple[subprocess.Popen, dict[str, str]]]:
    """A backlog on the dedicated broker and a router process on it, handed over once the
    router has produced its first outputs (its transaction is open then); killed on exit if
    it still runs."""
    on_dedicated = connection.model_copy(
        update={"kafka_bootstrap_servers": dedicated_kafka.bootstrap_servers}
    )
    nodes = two_node_backlog(on_dedicated, tmp_path, names, PER_NODE)
    routes = tmp_path / "routes.yaml"
    routes.write_text(routing_text(names), encoding="utf-8")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": dedicated_kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": names.group,
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": names.control,
        "SENSORSTREAM_ROUTER_RETRY_BUDGET_S": str(budget),
    }
    router = route_process(env, "--routes", str(routes), "--metrics-port", "0")
    deadline = time.monotonic() + 60
    while produced(dedicated_kafka.bootstrap_servers, names.topic("raw")) == 0:
        assert router.poll() is None, router.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the router never produced"
        time.sleep(0.05)
    try:
        yield router, nodes
    finally:
        if router.poll() is None:
            router.kill()
            router.communicate(timeout=30)


def produced(bootstrap: str, topic: str) -> int:
    """Messages in `topic` so far; 0 while the topic is too new to have a known leader."""
    try:
        return raw_high_watermarks(bootstrap, topic)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
            raise
        return 0


def test_an_outage_mid_stream_is_ridden_out_and_every_record_routed_once(
    dedicated_kafka, schema_registry, connection, tmp_path, unique
):
    names = Names(unique)
    with router_mid_backlog(
        dedicated_kafka, schema_registry, connection, tmp_path, names, budget=300
    ) as (router, nodes):
        dedicated_kafka.stop(signal.SIGKILL)
        time.sleep(35)  # past the transaction timeout (10 s): the open transaction fails
        assert router.poll() is None, "the router exited during the outage"
        dedicated_kafka.start()
        counter = CommittedCounter(dedicated_kafka.bootstrap_servers, names.topic("raw"))
        try:
            counter.wait_for(2 * PER_NODE, 180, alive=lambda: router.poll() is None)
        finally:
            counter.close()
        router.send_signal(signal.SIGINT)
        _, err = router.communicate(timeout=60)
    assert router.returncode == 0, err[-3000:]
    assert "unreachable" in err and "starting the router's clients again" in err, (
        "the outage did not reach the router's reconnect path: " + err[-3000:]
    )
    assert_every_route_exactly_once(dedicated_kafka, schema_registry, names, nodes)


def test_an_outage_past_the_retry_budget_fails_with_one_clear_line(
    dedicated_kafka, schema_registry, connection, tmp_path, unique
):
    names = Names(unique)
    with router_mid_backlog(
        dedicated_kafka, schema_registry, connection, tmp_path, names, budget=15
    ) as (router, _):
        dedicated_kafka.stop(signal.SIGKILL)
        _, err = router.communicate(timeout=180)
    assert router.returncode == 1, err[-3000:]
    # The process ends on this line, not on a traceback (quixstreams' own log of the failed
    # row, earlier in the log, does print one).
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"sensorstream route: Kafka at {dedicated_kafka.bootstrap_servers} unreachable for "
    ), last
    assert "retry budget 15 s" in last and "last error:" in last, last
