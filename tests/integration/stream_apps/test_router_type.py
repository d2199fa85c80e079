"""`RouterApp(router_type=...)`: the router benchmark times route() inside the running
application through a subclass of `MessageRouter`, not by replacing the app's router's
method. Every input message goes through the subclass's route(), once, and what it returns is
what the router produces."""

from __future__ import annotations

from typing import Any

import pytest

from stream_apps.app import RouterApp
from stream_apps.dispatch import MessageRouter
from stream_apps.metrics import RouterMetrics
from tests.integration.stream_apps.test_router import produce_nodes, router_settings, routing_file
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def test_every_message_goes_through_the_given_router_type(kafka, connection, tmp_path, unique):
    produce_nodes(tmp_path, connection, unique, {"edge-a": "eu-west-1"})
    seen: list[tuple[str, int, int]] = []
    outputs: list[int] = []

    class CountingRouter(MessageRouter):
        def route(self, value: bytes, source: Any):
            out = super().route(value, source)
            seen.append(source)
            outputs.append(len(out))
            return out

    routes = routing_file(tmp_path, unique)
    app = RouterApp(router_settings(routes, unique), connection, RouterMetrics(), CountingRouter)
    result = app.run()

    inputs = read_topic(kafka.bootstrap_servers, f"t.{unique}.in")
    assert sorted(seen) == sorted((m.topic(), m.partition(), m.offset()) for m in inputs)
    assert isinstance(app.router, CountingRouter)
    assert result.routed == len(seen)
    raw = read_topic(kafka.bootstrap_servers, f"t.{unique}.raw", await_open_transactions=True)
    assert len(raw) == len(seen)  # the raw route forwards every reading: once each
    assert sum(outputs) > len(seen)  # and the other routes took some of them too
