"""Reading topics back in tests: everything up to the end, as a read_committed consumer would."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fastavro import schemaless_reader

from schemas.registry import SchemaRegistryClient, read_wire_header


def read_topic(bootstrap: str, topic: str, isolation: str = "read_committed", timeout: float = 60):
    """Every message of `topic` from the beginning to its end at call time."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-reader",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        assert metadata.error is None, f"{topic}: {metadata.error}"
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        pending = set()
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
            if high > low:
                pending.add(tp.partition)
        consumer.assign([tp for tp in partitions if tp.partition in pending])
        messages = []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise AssertionError(f"reading {topic}: {msg.error()}")
            messages.append(msg)
        return messages
    finally:
        consumer.close()


class AvroDecoder:
    """Decodes Confluent-framed Avro with the writer schema fetched (and cached) by id."""

    def __init__(self, registry_url: str) -> None:
        self.client = SchemaRegistryClient({"url": registry_url})
        self._schemas: dict[int, dict] = {}

    def schema(self, schema_id: int) -> dict:
        if schema_id not in self._schemas:
            import json

            from fastavro import parse_schema

            text = self.client.get_schema(schema_id).schema_str
            self._schemas[schema_id] = parse_schema(json.loads(text))
        return self._schemas[schema_id]

    def decode(self, value: bytes) -> tuple[int, dict]:
        import io

        schema_id = read_wire_header(value)
        record = schemaless_reader(io.BytesIO(value[5:]), self.schema(schema_id), None)
        return schema_id, record
