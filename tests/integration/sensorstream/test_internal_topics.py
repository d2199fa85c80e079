"""The producers' checkpoint topic and the routing control topic must be compacted: with a
delete policy, retention would remove a quiet node's checkpoint (and it would stream its whole
database again) or old routing versions (and the history). A topic found with another policy
stops the command with exit 2 and the remedy; topics the product creates are compacted."""

from __future__ import annotations

import os
import subprocess

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from producers.simulator import SimulatorSettings, run_simulator
from tests.processes import sensorstream_cli

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, name: str, policy: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, 1, config={"cleanup.policy": policy})])
    futures[name].result(30)


def cleanup_policy(bootstrap: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([resource])[resource].result(30)["cleanup.policy"].value


@pytest.fixture
def cli_env(kafka, schema_registry, unique) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SCHEMA_REGISTRY_URL": schema_registry.url,
        "SENSORSTREAM_PRODUCER_TOPIC": f"t.{unique}.in",
        "SENSORSTREAM_PRODUCER_DEAD_LETTER_TOPIC": f"t.{unique}.dlq",
        "SENSORSTREAM_PRODUCER_CHECKPOINT_TOPIC": f"t.{unique}.ckpt",
        "SENSORSTREAM_ROUTER_CONTROL_TOPIC": f"t.{unique}.control",
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": f"g-{unique}",
    }


def edge_db(tmp_path):
    db = tmp_path / "edge.db"
    run_simulator(SimulatorSettings(db=db, count=20, rate=0, seed=1))
    return db


def produce(env, db) -> subprocess.CompletedProcess[str]:
    args = ["--sqlite", str(db), "--node-id", "n1", "--once", "--metrics-port", "0"]
    return sensorstream_cli(env, "produce", *args)


def assert_refused(result: subprocess.CompletedProcess[str], topic: str, policy: str) -> None:
    err = result.stderr
    assert result.returncode == 2, err[-3000:]
    assert f"topic {topic} has cleanup.policy={policy}" in err
    assert "must be compacted" in err
    assert f"--entity-name {topic} --add-config cleanup.policy=compact" in err


@pytest.mark.parametrize("policy", ["delete", "compact,delete"])
def test_producer_refuses_a_checkpoint_topic_that_is_not_compacted(
    kafka, cli_env, tmp_path, unique, policy
):
    topic = f"t.{unique}.ckpt"
    create_topic(kafka.bootstrap_servers, topic, policy)
    assert_refused(produce(cli_env, edge_db(tmp_path)), topic, policy)


def test_routes_commands_refuse_a_control_topic_that_is_not_compacted(kafka, cli_env, unique):
    topic = f"t.{unique}.control"
    create_topic(kafka.bootstrap_servers, topic, "delete")
    assert_refused(sensorstream_cli(cli_env, "routes", "history"), topic, "delete")


def test_router_refuses_a_control_topic_that_is_not_compacted(kafka, cli_env, tmp_path, unique):
    topic = f"t.{unique}.control"
    create_topic(kafka.bootstrap_servers, topic, "delete")
    routes = tmp_path / "routes.yaml"  # this test's own topics, whatever the outcome
    routes.write_text(
        f"version: 1\ninput: t.{unique}.in\ndead_letter_topic: t.{unique}.dlq\n"
        f"routes:\n  - name: raw\n    topic: t.{unique}.raw\n"
    )
    result = sensorstream_cli(
        cli_env, "route", "--routes", str(routes), "--once", "--metrics-port", "0"
    )
    assert_refused(result, topic, "delete")


def test_internal_topics_the_product_creates_are_compacted(kafka, cli_env, tmp_path, unique):
    result = produce(cli_env, edge_db(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    result = sensorstream_cli(cli_env, "routes", "history")
    assert result.returncode == 0, result.stderr[-3000:]
    assert cleanup_policy(kafka.bootstrap_servers, f"t.{unique}.ckpt") == "compact"
    assert cleanup_policy(kafka.bootstrap_servers, f"t.{unique}.control") == "compact"
