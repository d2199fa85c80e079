"""Fixtures of the integration tests that stop and restart servers."""

from __future__ import annotations

import pytest

from infra.local_stack.dedicated_kafka import DedicatedKafka


@pytest.fixture
def dedicated_kafka(tmp_path):
    """A broker of this test's own, to stop and restart without disturbing other tests;
    stopped at the end whatever happened."""
    broker = DedicatedKafka(tmp_path / "kafka")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        assert not broker.running


@pytest.fixture(scope="module")
def kafka_with_join_delay(tmp_path_factory):
    """A broker with Kafka's default `group.initial.rebalance.delay.ms` (3 s), which the
    local stack sets to 0: joining a new consumer group takes over 3 s, as on real clusters."""
    broker = DedicatedKafka(
        tmp_path_factory.mktemp("kafka-join-delay"),
        {"group.initial.rebalance.delay.ms": "3000"},
    )
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
