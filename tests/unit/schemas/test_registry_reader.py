"""The sink's schema reader: the registry's `GET /schemas/ids/<id>` with the standard library,
answering as the confluent-kafka client did, so that the sink need not import that client."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from schemas.registry import NotAvroSchema
from schemas.registry_reader import RegistryUnavailable, SchemaReader

RECORD = {"type": "record", "name": "Reading", "fields": [{"name": "x", "type": "long"}]}


class Registry:
    """A registry on a local port: each GET answers the next of `answers` ((status, body)),
    the last one from then on; `seen` keeps (path, Authorization header)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict]] = []
        self.seen: list[tuple[str, str | None]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.seen.append((self.path, self.headers.get("Authorization")))
                status, body = (
                    registry.answers.pop(0) if len(registry.answers) > 1 else registry.answers[0]
                )
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def registry() -> Iterator[Registry]:
    server = Registry()
    threading.Thread(target=server.server.serve_forever, daemon=True).start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_a_schema_is_read_by_id_with_the_credentials(registry: Registry) -> None:
    registry.answers = [(200, {"schema": json.dumps(RECORD)})]
    reader = SchemaReader({"url": registry.url + "/", "basic.auth.user.info": "svc:secret"})
    assert reader.schema_by_id(7) == RECORD
    expected = "Basic " + base64.b64encode(b"svc:secret").decode()
    assert registry.seen == [("/schemas/ids/7", expected)]


def test_an_unknown_id_is_none_and_another_schema_type_is_not_avro(registry: Registry) -> None:
    reader = SchemaReader({"url": registry.url})
    registry.answers = [(404, {"error_code": 40403, "message": "Schema not found"})]
    assert reader.schema_by_id(8) is None
    registry.answers = [(200, {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"})]
    with pytest.raises(NotAvroSchema, match="schema id 9 is a PROTOBUF schema"):
        reader.schema_by_id(9)


def test_a_registry_that_fails_for_a_moment_is_asked_again(registry: Registry) -> None:
    registry.answers = [(503, {}), (503, {}), (200, {"schema": json.dumps(RECORD)})]
    reader = SchemaReader({"url": registry.url}, retry_wait_s=0.01)
    assert reader.schema_by_id(1) == RECORD
    assert len(registry.seen) == 3


def test_a_registry_that_never_answers_fails_loudly_naming_the_remedy(registry: Registry) -> None:
    registry.answers = [(401, {"message": "unauthorized"})]
    reader = SchemaReader({"url": registry.url}, retry_wait_s=0.01)
    with pytest.raises(RegistryUnavailable, match=r"HTTP 401.*SCHEMA_REGISTRY_BASIC_AUTH"):
        reader.schema_by_id(1)
    assert len(registry.seen) == 1  # not retried: credentials do not fix themselves
    down = SchemaReader({"url": "http://127.0.0.1:9"}, retry_wait_s=0.01)  # nothing listens
    with pytest.raises(RegistryUnavailable, match="SCHEMA_REGISTRY_URL"):
        down.schema_by_id(1)


def test_the_sink_does_not_import_the_registry_client() -> None:
    """confluent-kafka's registry client (authlib, httpx, cryptography) is about 21 MB of the
    sink's resident memory."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, sinks.app; print(sorted(m for m in sys.modules "
            "if m.startswith(('confluent_kafka.schema_registry', 'httpx', 'authlib'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout.strip()
    assert loaded == "[]"
