"""Records on the router's input that are valid Avro but not readings: their schema lacks the
provenance fields producers add (`_node_id`, `_region`, `_source_table`, `_source_rowid`). They
go to the dead-letter topic, once each, naming the schema and the missing fields; no route
(not even `raw`) forwards them, and the readings beside them are routed as usual."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from schemas.avro_codec import AvroEncoder
from schemas.registry import SchemaRegistry
from schemas.value_schema import PROVENANCE_NAMES
from sensorstream.metrics import MetricFamilies
from stream_apps.app import RouterApp
from stream_apps.metrics import RouterMetrics
from tests.integration.stream_apps.test_router import produce_nodes, router_settings, routing_file
from tests.kafka_helpers import AvroDecoder, read_topic
from tests.unit.sensorstream.test_metrics_router_sink import scrape, value

pytestmark = pytest.mark.integration


def committed(kafka, topic: str) -> list:
    """Every committed message of `topic`, once the transactions open now have finished
    (a commit's markers reach the partitions a moment after the writer returns)."""
    return read_topic(kafka.bootstrap_servers, topic, await_open_transactions=True)


INVOICE = {
    "type": "record",
    "name": "Invoice",
    "namespace": "com.example.billing",
    "fields": [
        {"name": "invoice_id", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
}


def test_records_whose_schema_is_not_a_reading_go_to_the_dlq(
    kafka, schema_registry, connection, tmp_path, unique
):
    produce_nodes(tmp_path, connection, unique, {"edge-a": "eu-west-1"})  # 6 readings
    topic = f"t.{unique}.in"
    registry = SchemaRegistry(connection.schema_registry_config())
    decoder = AvroDecoder(schema_registry.url)
    sample = decoder.decode(committed(kafka, topic)[0].value())[1]

    # A reading as an older uploader wrote it: the columns, no provenance (another subject:
    # the input's own would refuse it under BACKWARD compatibility; ids are global anyway).
    reading = registry.latest_value_schema(topic)
    bare = {
        **reading,
        "name": "BareReading",
        "fields": [f for f in reading["fields"] if f["name"] not in PROVENANCE_NAMES],
    }
    bare_id = registry.register_value_schema(f"t.{unique}.legacy", bare)
    invoice_id = registry.register_value_schema(f"t.{unique}.billing", INVOICE)
    foreign = {
        "bare": AvroEncoder(bare, bare_id).encode(
            {k: v for k, v in sample.items() if k not in PROVENANCE_NAMES}
            | {"sensor_id": "legacy-1"}
        ),
        "invoice": AvroEncoder(INVOICE, invoice_id).encode({"invoice_id": "F-1", "amount": 9.5}),
    }
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for key, message in foreign.items():
        producer.produce(topic, key=key.encode(), value=message, partition=0)
    assert producer.flush(30) == 0

    families = MetricFamilies()
    routes = routing_file(tmp_path, unique)
    result = RouterApp(router_settings(routes, unique), connection, RouterMetrics(families)).run()
    assert result.routed == 6 + 2
    assert result.dead_letters == 1 + 2  # schematized refuses out_of_range; both foreigners

    letters = committed(kafka, f"t.{unique}.dlq")
    by_key = {m.key(): m for m in letters if m.key() in (b"bare", b"invoice")}
    assert sorted(by_key) == [b"bare", b"invoice"]
    assert len(letters) == 3  # one letter per foreign record, not one per route
    for key, letter in by_key.items():
        headers = dict(letter.headers())
        assert headers["dlq.stage"] == b"router"
        assert "sensorstream.route" not in headers  # refused before any route saw it
        assert headers["dlq.source.topic"] == topic.encode()
        assert letter.value() == foreign[key.decode()]  # as it came, for a replay elsewhere
        error = headers["dlq.error"].decode()
        assert "is not a reading" in error, error
        assert "_node_id, _region, _source_table, _source_rowid" in error, error
    invoice_error = dict(by_key[b"invoice"].headers())["dlq.error"].decode()
    assert f"schema id {invoice_id} (com.example.billing.Invoice)" in invoice_error
    bare_error = dict(by_key[b"bare"].headers())["dlq.error"].decode()
    assert f"schema id {bare_id} (" in bare_error

    raw = committed(kafka, f"t.{unique}.raw")
    assert len(raw) == 6 and not {m.key() for m in raw} & set(by_key)
    assert "legacy-1" not in {decoder.decode(m.value())[1]["sensor_id"] for m in raw}

    dead = scrape(families)
    assert value(dead, "sensorstream_dead_letters_total", stage="router", reason="decode") == 2
    assert value(dead, "sensorstream_dead_letters_total", stage="router", reason="route") == 1


def test_frames_of_schemas_that_are_not_avro_records_go_to_the_dlq(
    kafka, schema_registry, connection, tmp_path, unique
):
    """A Confluent frame whose schema id is registered, but as a JSON schema or as an Avro
    value that is not a record: each is one dead letter, and the router carries on."""
    from confluent_kafka.schema_registry import Schema

    produce_nodes(tmp_path, connection, unique, {"edge-a": "eu-west-1"})  # 6 readings
    topic = f"t.{unique}.in"
    client = SchemaRegistry(connection.schema_registry_config()).client
    ids = {
        "text": client.register_schema(f"t.{unique}.text-value", Schema('"string"', "AVRO")),
        "json": client.register_schema(
            f"t.{unique}.json-value",
            Schema(json.dumps({"type": "object", "properties": {"a": {"type": "string"}}}), "JSON"),
        ),
    }
    frames = {
        "text": b"\x00" + ids["text"].to_bytes(4, "big") + b"\x06abc",  # the Avro string "abc"
        "json": b"\x00" + ids["json"].to_bytes(4, "big") + b'{"a": "b"}',
    }
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for key, frame in frames.items():
        producer.produce(topic, key=key.encode(), value=frame, partition=0)
    assert producer.flush(30) == 0

    routes = routing_file(tmp_path, unique)
    result = RouterApp(router_settings(routes, unique), connection).run()
    assert (result.routed, result.dead_letters) == (6 + 2, 1 + 2)

    letters = {m.key(): dict(m.headers()) for m in committed(kafka, f"t.{unique}.dlq")}
    errors = {key: letters[key.encode()]["dlq.error"].decode() for key in frames}
    assert f"schema id {ids['text']} is not an Avro record" in errors["text"], errors
    assert f"schema id {ids['json']} is a JSON schema, not Avro" in errors["json"], errors
    for key in frames:
        assert "sensorstream.route" not in letters[key.encode()]
    assert len(committed(kafka, f"t.{unique}.raw")) == 6
