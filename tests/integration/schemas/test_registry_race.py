"""Several routers registering a new output subject at the same moment (the chaos test caught
one record dead-lettered as "not BACKWARD compatible" when it was only this race)."""

from __future__ import annotations

import threading

import pytest

from schemas.registry import SchemaRegistry

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "record",
    "name": "Reading",
    "fields": [{"name": "sensor_id", "type": "string"}],
}


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_first_registrations_all_get_the_one_id(schema_registry, unique, round_):
    topic = f"t.race.{unique}.{round_}"
    instances = 8
    start = threading.Barrier(instances)
    ids: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        registry = SchemaRegistry({"url": schema_registry.url})  # one per router process
        start.wait()
        try:
            ids.append(registry.register_value_schema(topic, SCHEMA))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(ids) == instances and len(set(ids)) == 1
    client = SchemaRegistry({"url": schema_registry.url}).client
    assert client.get_compatibility(f"{topic}-value") == "BACKWARD"
