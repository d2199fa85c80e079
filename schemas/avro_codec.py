"""Avro bodies in the Confluent wire format.

One encoder per (schema, registered id): the schema is parsed and compiled once, and the
5-byte wire header is computed once and written before every body. Flat reading schemas are
written and read by `FlatRecordWriter`/`FlatRecordReader` (union branches resolved per schema,
not per value), everything else by fastavro, with the same bytes and records either way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from schemas.avro_reader import FlatRecordReader
from schemas.avro_writer import FlatRecordWriter
from schemas.registry import (
    WIRE_HEADER_SIZE,
    NotAvroSchema,
    SchemaRegistry,
    read_wire_header,
    wire_prefix,
)
from schemas.value_schema import parsed_schema

if TYPE_CHECKING:
    from schemas.registry_reader import SchemaReader


class AvroEncoder:
    def __init__(self, schema: dict[str, Any], schema_id: int) -> None:
        self.schema = schema
        self.schema_id = schema_id
        self._parsed = parsed_schema(schema)
        self._prefix = wire_prefix(schema_id)
        self._writer = FlatRecordWriter(schema, self._parsed)

    def encode(self, record: dict[str, Any]) -> bytes:
        """The framed message; ValueError/TypeError/OverflowError when a value does not fit."""
        return self._writer.write(record, self._prefix)


def same_body_layout(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether every record has the same Avro body under record schemas `a` and `b`: the same
    fields in the same order with the same types. The record's own name, namespace and doc,
    and field docs and defaults, never reach the body."""

    def layout(schema: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(field["name"], field["type"]) for field in schema["fields"]]

    return a.get("type") == b.get("type") == "record" and layout(a) == layout(b)


class UndecodableMessage(ValueError):
    """A message that is not a record we can read; the reason goes into a dead-letter header."""


class AvroDecoder:
    """Decodes Confluent-framed Avro, fetching each writer schema from the registry once.

    Schema ids are global in the registry, so one cache serves every topic. Registry outages
    surface as the registry client's own errors (not UndecodableMessage): an unreachable
    registry is a reason to wait, never a reason to dead-letter a good message.
    """

    def __init__(self, registry: SchemaRegistry | SchemaReader) -> None:
        self.registry = registry
        # Per schema id: the schema and its reader, or why its messages cannot be read (ids
        # never change meaning, so a schema that is not an Avro record is asked for once).
        self._schemas: dict[int, tuple[dict[str, Any], FlatRecordReader] | str] = {}

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The record schema of `schema_id`; UndecodableMessage when it is none."""
        return self._schema(schema_id)[0]

    def _schema(self, schema_id: int) -> tuple[dict[str, Any], FlatRecordReader]:
        cached = self._schemas.get(schema_id)
        if cached is None:
            cached = self._schemas[schema_id] = self._load(schema_id)
        if isinstance(cached, str):
            raise UndecodableMessage(cached)
        return cached

    def _load(self, schema_id: int) -> tuple[dict[str, Any], FlatRecordReader] | str:
        try:
            schema = self.registry.schema_by_id(schema_id)
        except NotAvroSchema as exc:
            return str(exc)
        if schema is None:  # not remembered: the id may be registered a moment from now
            raise UndecodableMessage(f"schema id {schema_id} is not in the schema registry")
        if not isinstance(schema, dict) or schema.get("type") != "record":
            shown = json.dumps(schema)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return f"schema id {schema_id} is not an Avro record schema: {shown}"
        try:
            return schema, FlatRecordReader(schema, parsed_schema(schema))
        except Exception as exc:  # fastavro's own errors for a schema it cannot parse
            return f"schema id {schema_id} cannot be read: {type(exc).__name__}: {exc}"

    def decode(self, message: bytes | None) -> tuple[int, dict[str, Any]]:
        """(schema id, record) of a framed message."""
        if message is None:
            raise UndecodableMessage("the message has no value (a tombstone)")
        try:
            schema_id = read_wire_header(message)
        except ValueError as exc:
            raise UndecodableMessage(f"not Avro in the Confluent wire format: {exc}") from None
        reader = self._schema(schema_id)[1]
        try:
            record, end = reader.read(message, WIRE_HEADER_SIZE)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise UndecodableMessage(
                f"the Avro body does not match schema id {schema_id}: {type(exc).__name__}: {exc}"
            ) from None
        if end != len(message):
            raise UndecodableMessage(
                f"{len(message) - end} bytes left over after the record of schema id "
                f"{schema_id}: the body was written with another schema"
            )
        return schema_id, record
