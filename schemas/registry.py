"""Schema registry glue: register value schemas under BACKWARD compatibility and frame Avro
bodies in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, body)."""

from __future__ import annotations

import importlib
import json
import struct
from typing import TYPE_CHECKING, Any

from sensorstream.errors import PipelineError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

# confluent-kafka's registry client (authlib, httpx, cryptography: about 21 MB resident) is
# imported when a `SchemaRegistry` is made, not with this module: the sink uses only the wire
# format from here and reads schemas with `schemas.registry_reader`.
_CLIENT_NAMES = {
    "Schema": "confluent_kafka.schema_registry",
    "SchemaRegistryClient": "confluent_kafka.schema_registry",
    "SchemaRegistryError": "confluent_kafka.schema_registry.error",
}


def __getattr__(name: str) -> Any:
    module = _CLIENT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "IncompatibleSchema",
    "SchemaRegistry",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "read_wire_header",
    "wire_prefix",
]

_HEADER = struct.Struct(">bI")
_COMPATIBILITY_ATTEMPTS = 3
WIRE_HEADER_SIZE = _HEADER.size


class NotAvroSchema(ValueError):
    """A schema id registered with another schema type (JSON, Protobuf): ids are shared by
    all types, so a frame can carry one; its messages cannot be read as Avro."""


class IncompatibleSchema(PipelineError):
    """The registry refused a schema version: it would break readers of older data."""


def wire_prefix(schema_id: int) -> bytes:
    return _HEADER.pack(0, schema_id)


def read_wire_header(message: bytes) -> int:
    """The schema id of a Confluent-framed message; ValueError when it is not one."""
    if len(message) < WIRE_HEADER_SIZE:
        raise ValueError(f"{len(message)} bytes is too short for the Confluent wire format")
    magic, schema_id = _HEADER.unpack_from(message)
    if magic != 0:
        raise ValueError(f"magic byte {magic} is not the Confluent wire format's 0")
    return schema_id


class SchemaRegistry:
    def __init__(self, config: dict[str, str]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.client = SchemaRegistryClient(config)
        self._compatibility_set: set[str] = set()

    def register_value_schema(self, topic: str, schema: dict) -> int:
        """Register `schema` as the next version of `<topic>-value`; returns its global id.

        Registering an identical schema again returns the existing id, so this is safe to call
        on every start.
        """
        from confluent_kafka.schema_registry import Schema, SchemaRegistryError

        subject = f"{topic}-value"
        self._require_backward(subject)
        try:
            return self.client.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                raise IncompatibleSchema(
                    f"the schema registry refused a new version of {subject} as not BACKWARD "
                    f"compatible: {exc.error_message}"
                ) from exc
            raise

    def _require_backward(self, subject: str) -> None:
        """Set the subject's compatibility to BACKWARD (once per process).

        Several routers meet a new output subject at the same moment. Apicurio answers the
        loser of that race with 409 "A rule named 'COMPATIBILITY' already exists": not an
        incompatible schema (which would send the record to the dead-letter topic) but a rule
        another instance has just created. Setting it again is then an update, and succeeds.
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if subject in self._compatibility_set:
            return
        for attempt in range(_COMPATIBILITY_ATTEMPTS):
            try:
                self.client.set_compatibility(subject, "BACKWARD")
                break
            except SchemaRegistryError as exc:
                if exc.http_status_code != 409 or attempt == _COMPATIBILITY_ATTEMPTS - 1:
                    raise
        self._compatibility_set.add(subject)

    def schema_by_id(self, schema_id: int) -> Any:
        """The Avro schema registered under the global `schema_id` (parsed JSON: a record's is
        a dict), or None when there is none; NotAvroSchema for a JSON or Protobuf schema."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            registered = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise
        kind = registered.schema_type or "AVRO"
        if kind.upper() != "AVRO":
            raise NotAvroSchema(f"schema id {schema_id} is a {kind} schema, not Avro")
        return json.loads(registered.schema_str)

    def value_schemas(self, topic: str) -> list[dict]:
        """Every registered version of `<topic>-value`, oldest first; empty when there is none."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        subject = f"{topic}-value"
        try:
            versions = self.client.get_versions(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return []
            raise
        return [
            json.loads(self.client.get_version(subject, version).schema.schema_str)
            for version in versions
        ]

    def latest_value_schema(self, topic: str) -> dict | None:
        """The latest registered schema of `<topic>-value`, or None when there is none."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            registered = self.client.get_latest_version(f"{topic}-value")
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            raise
        return json.loads(registered.schema.schema_str)
