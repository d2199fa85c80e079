"""One round trip through every server of a stack, proving the pipeline's building blocks work:
Avro readings registered in the schema registry, produced in a Kafka transaction, read back
read_committed, decoded, and landed in a Delta table on the object store.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable, write_deltalake

from sensorstream.errors import PipelineError
from sensorstream.settings import ConnectionSettings

SMOKE_SCHEMA = {
    "type": "record",
    "name": "SmokeReading",
    "namespace": "sensorstream.smoke",
    "fields": [
        {"name": "sensor_id", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "temperature", "type": ["null", "double"], "default": None},
        {"name": "_region", "type": "string"},
    ],
}


@dataclass(frozen=True)
class SmokeResult:
    topic: str
    schema_id: int
    produced: int
    consumed: int
    table_uri: str
    table_version: int
    table_rows: int
    seconds: float


def run_round_trip(
    connection: ConnectionSettings,
    run_id: str,
    count: int = 1000,
    progress: Callable[[str], None] = lambda _: None,
) -> SmokeResult:
    started = time.monotonic()
    topic = f"sensorstream.smoke.{run_id}"
    kafka = connection.kafka_client_config()
    admin = AdminClient(kafka)  # must outlive its futures, or they fail with _DESTROY
    admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(30)

    registry = SchemaRegistryClient(connection.schema_registry_config())
    schema_id = registry.register_schema(f"{topic}-value", Schema(json.dumps(SMOKE_SCHEMA), "AVRO"))
    serialize = AvroSerializer(registry, json.dumps(SMOKE_SCHEMA))
    ctx = SerializationContext(topic, MessageField.VALUE)

    rng = random.Random(run_id)
    base = datetime.now(UTC)
    producer = Producer({**kafka, "transactional.id": f"sensorstream-smoke-{run_id}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(count):
        sensor = f"sensor-{i % 10:02d}"
        reading = {
            "sensor_id": sensor,
            "timestamp": base + timedelta(milliseconds=i),
            "temperature": round(rng.gauss(22, 3), 2),
            "_region": ["eu-west", "us-east", "ap-south"][i % 3],
        }
        producer.produce(topic, key=sensor.encode(), value=serialize(reading, ctx))
        producer.poll(0)
    producer.commit_transaction(30)
    progress(f"produced {count} Avro readings to {topic} in one transaction")

    deserialize = AvroDeserializer(registry)
    consumer = Consumer(
        {
            **kafka,
            "group.id": f"sensorstream-smoke-{run_id}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    rows: list[dict] = []
    deadline = time.monotonic() + 60
    try:
        while len(rows) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise PipelineError(f"consuming {topic}: {msg.error()}")
            rows.append(deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)))
    finally:
        consumer.close()
    progress(f"consumed {len(rows)} readings read_committed")

    table_uri = f"{connection.lake_uri.rstrip('/')}/smoke/{run_id}"
    table = pa.Table.from_pylist(rows).append_column(
        "event_date", pa.array([r["timestamp"].date() for r in rows], pa.date32())
    )
    options = connection.storage_options() or None
    write_deltalake(table_uri, table, partition_by=["event_date"], storage_options=options)
    delta = DeltaTable(table_uri, storage_options=options)
    landed = delta.to_pyarrow_dataset().count_rows()
    progress(f"wrote {landed} rows to Delta table {table_uri}")
    return SmokeResult(
        topic=topic,
        schema_id=schema_id,
        produced=count,
        consumed=len(rows),
        table_uri=table_uri,
        table_version=delta.version(),
        table_rows=landed,
        seconds=time.monotonic() - started,
    )
