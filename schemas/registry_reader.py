"""Writer schemas by id from the schema registry's REST API, for a process that only reads.

The sink asks the registry one thing: the schema of each id it meets (`GET /schemas/ids/<id>`,
once per id). confluent-kafka's registry client, made for registering too, imports authlib,
httpx and cryptography on the way: about 21 MB of resident memory, a twentieth of the sink's
memory target (docs/benchmarks.md, "Sink memory"). This reader makes the same request with the
standard library, from the same configuration (`url`, comma-separated for several, and
`basic.auth.user.info`), and answers as `SchemaRegistry.schema_by_id` does.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Any

from schemas.registry import NotAvroSchema
from sensorstream.errors import PipelineError

ATTEMPTS = 4
"""Tries of each request (confluent-kafka's client: 1 + 3 retries)."""
RETRY_WAIT_S = 1.0
"""Wait before the second try, doubled before each later one."""
RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TIMEOUT_S = 30.0


class RegistryUnavailable(PipelineError):
    """The registry did not answer (or answered an error) after every try: the records wait,
    they are not dead-lettered (`schemas.avro_codec.AvroDecoder`)."""


class SchemaReader:
    """`schema_by_id` over HTTP: the registry's schema (parsed JSON) or None when the id is not
    registered; NotAvroSchema for a JSON or Protobuf schema; RegistryUnavailable otherwise."""

    def __init__(
        self, config: dict[str, str], retry_wait_s: float = RETRY_WAIT_S, timeout_s=TIMEOUT_S
    ) -> None:
        self.urls = [url.strip().rstrip("/") for url in config["url"].split(",") if url.strip()]
        self.retry_wait_s = retry_wait_s
        self.timeout_s = timeout_s
        self.headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        user_info = config.get("basic.auth.user.info")
        if user_info:
            token = base64.b64encode(user_info.encode("utf-8")).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"

    def schema_by_id(self, schema_id: int) -> Any:
        registered = self._get(f"/schemas/ids/{schema_id}")
        if registered is None:
            return None
        kind = registered.get("schemaType") or "AVRO"
        if kind.upper() != "AVRO":
            raise NotAvroSchema(f"schema id {schema_id} is a {kind} schema, not Avro")
        return json.loads(registered["schema"])

    def _get(self, path: str) -> dict[str, Any] | None:
        """The JSON answer to GET `path` from the first registry URL that answers; None on
        404. Connection errors and the statuses of `RETRIED_STATUS` are tried again."""
        failure = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(self.retry_wait_s * 2 ** (attempt - 1))
            for url in self.urls:
                request = urllib.request.Request(url + path, headers=self.headers)
                try:
                    with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                        return json.loads(response.read())
                except urllib.error.HTTPError as exc:
                    if exc.code == 404:
                        return None
                    failure = f"HTTP {exc.code} {exc.reason}"
                    if exc.code not in RETRIED_STATUS:
                        raise RegistryUnavailable(self._message(path, failure)) from None
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    failure = f"{type(exc).__name__}: {exc}"
        raise RegistryUnavailable(self._message(path, failure))

    def _message(self, path: str, failure: str) -> str:
        return (
            f"the schema registry ({', '.join(self.urls)}) did not answer GET {path} after "
            f"{ATTEMPTS} tries ({failure}): check SCHEMA_REGISTRY_URL, its credentials "
            "(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO) and that the registry is up"
        )
