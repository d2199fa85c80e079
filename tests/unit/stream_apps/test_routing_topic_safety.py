"""Where routes may write: never into the input, the DLQ, an internal topic or another route's
topic. Literal topics are refused when the file is loaded (one message naming file, line, route
and key); a template's topic is known only per record, so a record rendering a forbidden topic
goes to the dead-letter topic for that route, naming why."""

from __future__ import annotations

import pytest

from sensorstream.topics import internal_topics
from tests.routing_files import compile_text, config_error


def one_route(topic: str) -> str:
    return f"""
        version: 1
        input: sensors.readings
        dead_letter_topic: sensors.dlq
        routes:
          - name: out
            topic: {topic}
        """


# ---- literal topics: refused at load ---------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("sensors.readings", "'sensors.readings' is the input topic"),
        ("sensors.dlq", "'sensors.dlq' is the dead-letter topic"),
        ("sensors.routing.control", "'sensors.routing.control' is the routing control topic"),
        (
            "sensors.producer.checkpoints",
            "'sensors.producer.checkpoints' is the producers' checkpoint topic",
        ),
        ("__consumer_offsets", "'__consumer_offsets' is one of Kafka's internal topics"),
        ("__transaction_state", "'__transaction_state' is one of Kafka's internal topics"),
    ],
)
def test_a_route_into_the_input_the_dlq_or_an_internal_topic_is_refused(
    topic: str, why: str
) -> None:
    message = config_error(one_route(topic))
    assert message.startswith(f"routes.yaml, line 7, route 'out', key 'topic': {why}"), message
    assert "a route cannot write there" in message


def test_the_routers_own_control_topic_is_internal() -> None:
    text = one_route("ops.routing")
    assert compile_text(text).routes[0].topic.literal == "ops.routing"
    message = config_error(text, internal=internal_topics("ops.routing"))
    assert "'ops.routing' is the routing control topic" in message
    # The default control topic stays internal for a router with a control topic of its own
    # (a replay router must not write into the shared one).
    message = config_error(one_route("sensors.routing.control"), internal=internal_topics("ops.r"))
    assert "is the routing control topic" in message


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("input", "sensors.routing.control", "is the routing control topic"),
        ("dead_letter_topic", "sensors.producer.checkpoints", "is the producers' checkpoint"),
        ("dead_letter_topic", "__consumer_offsets", "Kafka's internal topics"),
    ],
)
def test_input_and_dlq_cannot_be_internal_topics(key: str, value: str, why: str) -> None:
    text = one_route("sensors.raw").replace(f"{key}: ", f"{key}: {value} #", 1)
    message = config_error(text)
    assert message.startswith("routes.yaml, line ") and f", key '{key}': '{value}' " in message
    assert why in message


def test_two_routes_to_one_topic_are_refused() -> None:
    message = config_error(
        """
        version: 1
        routes:
          - name: raw
            topic: sensors.raw
          - name: copy
            topic: sensors.copy
          - name: again
            topic: sensors.raw
            where: "anomaly_flag"
        """
    )
    assert message.startswith("routes.yaml, line 9, route 'again', key 'topic': ")
    assert "'sensors.raw' is already the topic of route 'raw' (line 5)" in message
    assert "twice" in message  # why it matters
    assert "give each route a topic of its own" in message  # the remedy


@pytest.mark.parametrize(
    ("first", "second", "example"),
    [
        ("sensors.regional.{_region}", "sensors.{_node_id}", "sensors.regional."),
        ("sensors.{_region}", "sensors.{_node_id}", "sensors."),
        ("x.{_region}.y", "x.{_node_id}", "x."),
        ("{_region}", "t.{_node_id}", "t."),
        # `{_region}` = 'ax' in the first, or 'a' then the literal 'x' in the second.
        ("sensors.regional.{_region}", "sensors.regional.{_region}x", "sensors.regional."),
    ],
)
def test_two_templates_that_can_render_one_topic_are_refused(
    first: str, second: str, example: str
) -> None:
    message = config_error(
        f"""
        version: 1
        routes:
          - name: a
            topic: "{first}"
          - name: b
            topic: "{second}"
        """
    )
    assert message.startswith("routes.yaml, line 7, route 'b', key 'topic': "), message
    assert f"can render the same topic as route 'a' ('{first}')" in message
    shown = message.split("e.g. '", 1)[1].split("'", 1)[0]
    assert shown.startswith(example)
    rendered = [route.topic.pattern.fullmatch(shown) for route in compile_ok(first, second)]
    assert all(rendered), shown  # the example really is a topic both can render


def compile_ok(*templates: str) -> list:
    """Each template compiled alone (so both patterns can be checked against the example)."""
    return [compile_text(one_route(f'"{t}"')).routes[0] for t in templates]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("sensors.regional.{_region}", "sensors.national.{_region}"),
        ("a.{_region}", "b.{_region}"),
        ("s.{_region}.eu", "s.{_region}.us"),
        ("s.{_region}", "s_{_region}"),
    ],
)
def test_templates_that_cannot_meet_load(first: str, second: str) -> None:
    routing = compile_text(
        f"""
        version: 1
        routes:
          - {{name: a, topic: "{first}"}}
          - {{name: b, topic: "{second}"}}
        """
    )
    assert len(routing.routes) == 2


# ---- templated topics: checked per record ----------------------------------------------------

ROUTES = """
    version: 1
    input: sensors.readings
    dead_letter_topic: sensors.dlq
    routes:
      - name: raw
        topic: sensors.raw
      - name: eu
        topic: sensors.regional.eu
      - name: regional
        topic: "sensors.regional.{_region}"
    """
LOOSE = """
    version: 1
    routes:
      - name: raw
        topic: sensors.raw
      - name: loose
        topic: "{_node_id}"
    """


@pytest.mark.parametrize(
    ("route", "field", "value", "why"),
    [
        ("loose", "_node_id", "sensors.readings", "'sensors.readings', the input topic"),
        ("loose", "_node_id", "sensors.dlq", "'sensors.dlq', the dead-letter topic"),
        (
            "loose",
            "_node_id",
            "sensors.routing.control",
            "'sensors.routing.control', the routing control topic",
        ),
        (
            "loose",
            "_node_id",
            "sensors.producer.checkpoints",
            "'sensors.producer.checkpoints', the producers' checkpoint topic",
        ),
        (
            "loose",
            "_node_id",
            "__consumer_offsets",
            "'__consumer_offsets', one of Kafka's internal topics",
        ),
        ("loose", "_node_id", "sensors.raw", "'sensors.raw', the topic of route 'raw'"),
        ("regional", "_region", "eu", "'sensors.regional.eu', the topic of route 'eu'"),
    ],
)
def test_a_record_rendering_a_forbidden_topic_goes_to_the_dlq(
    route: str, field: str, value: str, why: str
) -> None:
    routing = compile_text(LOOSE if route == "loose" else ROUTES)
    record = {"_node_id": "edge-1", "_region": "us", field: value}
    for _ in range(2):  # the second time too: a refused topic is never remembered as good
        result = routing.route(record)
        failed = {f.route: f.reason for f in result.dead_letters}
        assert list(failed) == [route]
        rendered = f"{field} value '{value}' renders {why}"
        assert failed[route].startswith(f"{route}: topic template: {rendered}"), failed[route]
        assert "a route cannot write there" in failed[route]
        outputs = {o.route: o.topic for o in result.outputs}
        assert route not in outputs
        assert outputs["raw"] == "sensors.raw"  # the other routes still get the record


def test_records_rendering_allowed_topics_are_routed() -> None:
    record = {"_node_id": "edge-1", "_region": "us"}
    result = compile_text(ROUTES).route(record)
    assert result.dead_letters == []
    assert {o.route: o.topic for o in result.outputs} == {
        "raw": "sensors.raw",
        "eu": "sensors.regional.eu",
        "regional": "sensors.regional.us",
    }
    result = compile_text(LOOSE).route(record)
    assert result.dead_letters == []
    assert {o.route: o.topic for o in result.outputs} == {"raw": "sensors.raw", "loose": "edge-1"}


def test_a_template_cannot_render_the_routers_own_control_topic() -> None:
    text = """
        version: 1
        routes:
          - name: loose
            topic: "ops.{_node_id}"
        """
    routing = compile_text(text, internal=internal_topics("ops.control"))
    reason = routing.route({"_node_id": "control"}).dead_letters[0].reason
    assert "renders 'ops.control', the routing control topic" in reason
    assert compile_text(text).route({"_node_id": "control"}).outputs[0].topic == "ops.control"
