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
