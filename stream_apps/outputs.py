"""Output records of re-encoding routes (schematized, filtered, emergency) as registered Avro.

A route's output schema follows from the input record's writer schema, so it is built, and
registered under `<topic>-value`, once per (routing version, route, topic, input schema id)
and cached; routes that pass records through unchanged (raw, regional) never come here: their
original bytes and schema id are forwarded as they are.
"""

from __future__ import annotations

from typing import Any

from schemas.avro_codec import AvroDecoder, AvroEncoder
from schemas.registry import SchemaRegistry
from stream_apps.routing.config import CompiledRouting


class OutputEncoders:
    def __init__(self, registry: SchemaRegistry, decoder: AvroDecoder) -> None:
        self.registry = registry
        self.decoder = decoder
        self._encoders: dict[tuple[int, str, str, int], AvroEncoder] = {}

    def encode(
        self,
        routing: CompiledRouting,
        routing_version: int,
        route: str,
        topic: str,
        input_schema_id: int,
        record: dict[str, Any],
    ) -> bytes:
        key = (routing_version, route, topic, input_schema_id)
        encoder = self._encoders.get(key)
        if encoder is None:
            schema = routing.output_schema(route, self.decoder.writer_schema(input_schema_id))
            schema_id = self.registry.register_value_schema(topic, schema)
            encoder = self._encoders[key] = AvroEncoder(schema, schema_id)
        return encoder.encode(record)
