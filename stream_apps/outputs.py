"""Output records of re-encoding routes (schematized, filtered, emergency) as registered Avro.

A route's output schema follows from the input record's writer schema, so it is built, and
registered under `<topic>-value`, once per (routing version, route, topic, input schema id)
and cached; routes that pass records through unchanged (raw, regional) never come here: their
original bytes and schema id are forwarded as they are.

Nodes of a fleet whose tables have different shapes write the input with different schema
versions, and the output schemas derived from them take turns as the latest version of the
output subject. When the registry refuses one (a field non-null in it that the latest lacks),
the output schema is registered in the form every shape can share: every field but provenance
`["null", T]` with default null. The route's checks (required fields) still ran on the record.

A re-encoding route often changes nothing in a record (schematized: a clean reading is already
normalised) while its schema lays bodies out exactly as the input's does (required fields that
were never nullable, nothing dropped or added). Encoding such a record would rebuild the
input's body byte for byte, so the input's body is forwarded behind the output schema's id.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.avro_codec import AvroDecoder, AvroEncoder, same_body_layout
from schemas.registry import WIRE_HEADER_SIZE, IncompatibleSchema, SchemaRegistry, wire_prefix
from schemas.value_schema import PROVENANCE_NAMES, optional_field
from stream_apps.routing.config import CompiledRouting, RoutedRecord


class _RouteEncoder(NamedTuple):
    encoder: AvroEncoder
    forward_prefix: bytes | None
    """The output schema's wire header when input bodies are valid output bodies, else None."""


class OutputEncoders:
    def __init__(self, registry: SchemaRegistry, decoder: AvroDecoder) -> None:
        self.registry = registry
        self.decoder = decoder
        self._encoders: dict[tuple[int, str, str, int], _RouteEncoder] = {}

    def encode(
        self,
        routing: CompiledRouting,
        routing_version: int,
        output: RoutedRecord,
        input_schema_id: int,
        message: bytes,
    ) -> bytes:
        """The framed output of a re-encoding route for the input `message` (whose writer
        schema is `input_schema_id`)."""
        key = (routing_version, output.route, output.topic, input_schema_id)
        entry = self._encoders.get(key)
        if entry is None:
            entry = self._encoders[key] = self._new(routing, output, input_schema_id)
        if output.unchanged and entry.forward_prefix is not None:
            return entry.forward_prefix + message[WIRE_HEADER_SIZE:]
        return entry.encoder.encode(output.record)

    def _new(
        self, routing: CompiledRouting, output: RoutedRecord, input_schema_id: int
    ) -> _RouteEncoder:
        input_schema = self.decoder.writer_schema(input_schema_id)
        schema = routing.output_schema(output.route, input_schema)
        try:
            schema_id = self.registry.register_value_schema(output.topic, schema)
        except IncompatibleSchema:
            schema = shareable(schema)
            schema_id = self.registry.register_value_schema(output.topic, schema)
        forward = wire_prefix(schema_id) if same_body_layout(input_schema, schema) else None
        return _RouteEncoder(AvroEncoder(schema, schema_id), forward)


def shareable(schema: dict) -> dict:
    """`schema` with every field but provenance optional (nullable, default null)."""
    fields = [f if f["name"] in PROVENANCE_NAMES else optional_field(f) for f in schema["fields"]]
    return {**schema, "fields": fields}
