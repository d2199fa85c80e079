"""Which routing versions a running router may switch to at a checkpoint: its input topic and
dead-letter topic are fixed for the life of the process, so a version changing either is
refused as a whole (and logged), never applied by half."""

from __future__ import annotations

from pathlib import Path

from schemas.value_schema import PROVENANCE_NAMES, curated_schema
from stream_apps.app import live_switch_refusal
from stream_apps.routing.config import CompiledRouting, parse_routing

DEFAULT_ROUTES = Path(__file__).resolve().parents[3] / "stream_apps" / "routes.yaml"
FIELDS = {f["name"] for f in curated_schema()["fields"]} | set(PROVENANCE_NAMES)


def compiled(replace: tuple[str, str] | None = None) -> CompiledRouting:
    text = DEFAULT_ROUTES.read_text(encoding="utf-8")
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    return parse_routing(text, "routes.yaml", FIELDS)


def test_a_change_of_routes_only_is_switched_to() -> None:
    running = compiled()
    new = compiled(('"sensors.regional.{_region}"', '"sensors.by-region.{_region}"'))
    assert new.config.routes != running.config.routes
    assert live_switch_refusal(running, new) is None


def test_a_new_dead_letter_topic_is_refused_with_both_names() -> None:
    running = compiled()
    old_dlq = running.config.dead_letter_topic
    new = compiled((f"dead_letter_topic: {old_dlq}", "dead_letter_topic: sensors.dlq.v2"))
    refusal = live_switch_refusal(running, new)
    assert refusal is not None
    assert "dead-letter topic" in refusal and old_dlq in refusal and "sensors.dlq.v2" in refusal


def test_a_new_input_topic_is_refused() -> None:
    running = compiled()
    old_input = running.config.input
    new = compiled((f"input: {old_input}", "input: sensors.readings.v2"))
    refusal = live_switch_refusal(running, new)
    assert refusal is not None and "input topic" in refusal and "sensors.readings.v2" in refusal
