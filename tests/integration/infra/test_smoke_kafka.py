"""The servers are real and speak the protocols the pipeline relies on."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.integration

READING_SCHEMA = {
    "type": "record",
    "name": "SmokeReading",
    "namespace": "sensorstream.test",
    "fields": [
        {"name": "sensor_id", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "temperature", "type": ["null", "double"], "default": None},
    ],
}


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    futures[topic].result(timeout=30)


def consume_all(bootstrap: str, topic: str, expected: int, isolation: str) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"smoke-{topic}-{isolation}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    messages, eof = [], False
    try:
        for _ in range(300):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof = True
                    if len(messages) >= expected:
                        break
                    continue
                raise AssertionError(f"consume error: {msg.error()}")
            messages.append(msg)
    finally:
        consumer.close()
    assert eof, f"never reached the end of {topic}"
    return messages


def test_avro_round_trip_in_confluent_wire_format(kafka, schema_registry, unique):
    topic = f"smoke.avro.{unique}"
    create_topic(kafka.bootstrap_servers, topic)
    registry = SchemaRegistryClient({"url": schema_registry.url})
    schema_id = registry.register_schema(
        f"{topic}-value", Schema(json.dumps(READING_SCHEMA), "AVRO")
    )
    serializer = AvroSerializer(registry, json.dumps(READING_SCHEMA))
    reading = {"sensor_id": "s-7", "timestamp": 1_790_000_000_123_456, "temperature": 21.5}
    ctx = SerializationContext(topic, MessageField.VALUE)

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    producer.produce(topic, key=b"s-7", value=serializer(reading, ctx))
    assert producer.flush(30) == 0

    (msg,) = consume_all(kafka.bootstrap_servers, topic, 1, "read_committed")
    magic, wire_id = struct.unpack(">bI", msg.value()[:5])
    assert (magic, wire_id) == (0, schema_id)
    assert msg.key() == b"s-7"
    decoded = AvroDeserializer(registry)(msg.value(), ctx)
    # timestamp-micros decodes to an aware UTC datetime, to the microsecond
    assert decoded == {
        **reading,
        "timestamp": datetime(2026, 9, 21, 14, 13, 20, 123456, tzinfo=UTC),
    }


def test_registry_enforces_backward_compatibility(schema_registry, unique):
    registry = SchemaRegistryClient({"url": schema_registry.url})
    subject = f"smoke.compat.{unique}-value"
    registry.set_compatibility(subject, "BACKWARD")
    first = registry.register_schema(subject, Schema(json.dumps(READING_SCHEMA), "AVRO"))

    evolved = json.loads(json.dumps(READING_SCHEMA))
    evolved["fields"].append({"name": "humidity", "type": ["null", "double"], "default": None})
    second = registry.register_schema(subject, Schema(json.dumps(evolved), "AVRO"))
    assert second != first
    assert [v for v in registry.get_versions(subject)] == [1, 2]

    breaking = json.loads(json.dumps(READING_SCHEMA))
    breaking["fields"].append({"name": "voltage", "type": "double"})  # no default: not BACKWARD
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    with pytest.raises(SchemaRegistryError) as rejected:
        registry.register_schema(subject, Schema(json.dumps(breaking), "AVRO"))
    assert rejected.value.http_status_code == 409


def test_aborted_transaction_is_invisible_to_read_committed(kafka, unique):
    topic = f"smoke.txn.{unique}"
    create_topic(kafka.bootstrap_servers, topic)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": f"smoke-{unique}"}
    )
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)

    committed = consume_all(kafka.bootstrap_servers, topic, 1, "read_committed")
    assert [m.value() for m in committed] == [b"committed"]
    # The aborted record did reach the log: only the isolation level hides it.
    uncommitted = consume_all(kafka.bootstrap_servers, topic, 2, "read_uncommitted")
    assert [m.value() for m in uncommitted] == [b"aborted", b"committed"]
