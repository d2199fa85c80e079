"""Which fields a routing file may name: those of ITS input topic (`input:`, sensors.readings
when it names none), and a refusal of any other that names the input topic and the remedy.
The registry here is a dict of registered value schemas per topic (the lookups are pure);
tests/integration/stream_apps/test_routing_input_fields.py runs the same rule against the real
registry, through `routes apply`, `route --routes` and the live switch."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.value_schema import PROVENANCE_FIELDS, PROVENANCE_NAMES, curated_schema
from sensorstream.errors import ConfigError
from sensorstream.topics import READINGS
from stream_apps.versions import check_routing, input_fields

CURATED = frozenset(f["name"] for f in curated_schema()["fields"])
WIND = "factory.wind"


class Registered:
    """Registered value schemas by topic, and the topics asked about."""

    def __init__(self, by_topic: dict[str, list[dict[str, Any]]]) -> None:
        self.by_topic = by_topic
        self.asked: list[str] = []

    def value_schemas(self, topic: str) -> list[dict[str, Any]]:
        self.asked.append(topic)
        return self.by_topic.get(topic, [])


def reading(*names: str) -> dict[str, Any]:
    fields = [{"name": n, "type": ["null", "double"], "default": None} for n in names]
    return {"type": "record", "name": "R", "fields": [*fields, *PROVENANCE_FIELDS]}


REGISTRY = Registered(
    {
        READINGS: [reading("sensor_id", "battery_level")],
        WIND: [reading("sensor_id", "gust"), reading("sensor_id", "gust", "yaw")],
    }
)


def routing(where: str, input_topic: str | None = WIND, **route: str) -> str:
    lines = ["version: 1"]
    if input_topic is not None:
        lines.append(f"input: {input_topic}")
    lines += ["routes:", "  - name: picked", "    topic: out.picked", f'    where: "{where}"']
    lines += [f"    {key}: {value}" for key, value in route.items()]
    return "\n".join(lines) + "\n"


def refusal(text: str, registry: Registered = REGISTRY) -> str:
    with pytest.raises(ConfigError) as info:
        check_routing(text, "wind-routes.yaml", registry, "sensors.routing.control")
    return str(info.value)


def test_sensors_readings_has_the_curated_reading_and_every_registered_version() -> None:
    fields = input_fields(REGISTRY, READINGS)
    assert fields.names == CURATED | set(PROVENANCE_NAMES) | {"battery_level"}


def test_another_topic_has_its_own_fields_only() -> None:
    fields = input_fields(REGISTRY, WIND)
    assert fields.names == {"sensor_id", "gust", "yaw", *PROVENANCE_NAMES}
    assert "vibration" not in fields.names and "battery_level" not in fields.names
    assert "every registered version of factory.wind-value" in fields.unknown


def test_a_topic_without_a_schema_of_its_own_is_checked_as_sensors_readings() -> None:
    """A replay topic holds copies of readings with their schema ids; nothing registered."""
    fields = input_fields(REGISTRY, "sensors.dlq-replay-1")
    assert fields.names == input_fields(REGISTRY, READINGS).names
    assert "sensors.dlq-replay-1-value has no version yet" in fields.unknown


def test_a_file_is_checked_against_its_own_input_topic() -> None:
    asked = Registered(REGISTRY.by_topic)
    check_routing(routing("gust > 20 and yaw < 5"), "wind-routes.yaml", asked, "c")
    assert asked.asked == [WIND]
    asked.asked.clear()
    check_routing(routing("battery_level < 10", None), "routes.yaml", asked, "c")
    assert asked.asked == [READINGS]  # no `input:`: sensors.readings


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (routing("vibration > 50"), "where"),
        (routing("gust > 20", **{"validate": "{required: [vibration]}"}), "validate.required.0"),
        (routing("gust > 20", transform="{drop: [vibration]}"), "transform.drop.0"),
        (routing("gust > 20").replace("out.picked", "'out.{vibration}'"), "topic"),
    ],
)
def test_a_field_the_input_topic_lacks_is_refused_naming_topic_and_remedy(
    text: str, key: str
) -> None:
    message = refusal(text)
    assert message.startswith("wind-routes.yaml, line "), message
    assert f"route 'picked', key '{key}': " in message, message
    assert "unknown field 'vibration'" in message, message
    assert message.endswith(
        "the records of input topic factory.wind do not carry that field (checked against "
        "every registered version of factory.wind-value): correct the field name, or set "
        "`input:` to the topic whose records carry it"
    ), message


def test_other_problems_do_not_blame_the_input_topic() -> None:
    message = refusal(routing("gust >"))
    assert "key 'where'" in message and "input topic" not in message, message
    message = refusal(routing("gust > 20", **{"validate": "{ranges: {gust: [9, 1]}}"}))
    assert "is above the high end" in message and "input topic" not in message, message
