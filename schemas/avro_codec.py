"""Avro bodies in the Confluent wire format, encoded with fastavro.

One encoder per (schema, registered id): the schema is parsed once, and the 5-byte wire header
is computed once and written before every body.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_writer

from schemas.registry import wire_prefix
from schemas.value_schema import parsed_schema


class AvroEncoder:
    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        self.schema = schema
        self.schema_id = schema_id
        self._parsed = parsed_schema(schema)
        self._prefix = wire_prefix(schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        """The framed message; ValueError/TypeError/OverflowError when a value does not fit."""
        buffer = BytesIO()
        buffer.write(self._prefix)
        schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()
