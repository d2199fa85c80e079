"""Where integration tests find real servers, in the order of DESIGN section 9.

1. Explicit environment variables (KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL, AWS_ENDPOINT_URL
   with its keys): a developer's own servers, or a CI service.
2. A Docker engine that answers: testcontainers (Redpanda, which also serves a schema registry,
   and MinIO).
3. The local stack (`sensorstream stack up`): real servers as local processes.

Nothing here skips: a server that cannot be had is an error that fails the run, with the reason.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

REDPANDA_IMAGE = "docker.redpanda.com/redpandadata/redpanda:v25.1.9"
MINIO_IMAGE = "minio/minio:RELEASE.2025-04-22T22-12-26Z"


@dataclass(frozen=True)
class KafkaServer:
    bootstrap_servers: str
    source: str


@dataclass(frozen=True)
class SchemaRegistryServer:
    url: str
    source: str


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    source: str

    def storage_options(self) -> dict[str, str]:
        options = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }
        if self.endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
        return options


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


class ServerPool:
    """Resolves each kind of server once per test session and stops what it started."""

    def __init__(self) -> None:
        self._cleanups: list[Any] = []
        self._docker: bool | None = None
        self._local_stack = None
        self._redpanda = None

    def _use_docker(self) -> bool:
        if self._docker is None:
            self._docker = docker_engine_answers()
        return self._docker

    def _stack(self):
        if self._local_stack is None:
            from infra.local_stack.stack import LocalStack

            stack = LocalStack()
            already_up = all(s.process.is_running() for s in stack.servers)
            stack.up()
            if not already_up:
                self._cleanups.append(stack.down)
            self._local_stack = stack
        return self._local_stack

    def _redpanda_container(self):
        if self._redpanda is None:
            from testcontainers.community.kafka import RedpandaContainer

            container = RedpandaContainer(REDPANDA_IMAGE).start()
            self._cleanups.append(container.stop)
            self._redpanda = container
        return self._redpanda

    def kafka(self) -> KafkaServer:
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            return KafkaServer(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "environment")
        if self._use_docker():
            return KafkaServer(self._redpanda_container().get_bootstrap_server(), "testcontainers")
        return KafkaServer(self._stack().kafka.bootstrap_servers, "local stack")

    def schema_registry(self) -> SchemaRegistryServer:
        if os.environ.get("SCHEMA_REGISTRY_URL"):
            return SchemaRegistryServer(os.environ["SCHEMA_REGISTRY_URL"], "environment")
        if self._use_docker():
            url = self._redpanda_container().get_schema_registry_address()
            return SchemaRegistryServer(url, "testcontainers")
        return SchemaRegistryServer(self._stack().registry.url, "local stack")

    def s3(self) -> S3Server:
        if os.environ.get("AWS_ENDPOINT_URL"):
            return S3Server(
                endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
                secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                region=os.environ.get("AWS_REGION", "us-east-1"),
                source="environment",
            )
        if self._use_docker():
            from testcontainers.community.minio import MinioContainer

            minio = MinioContainer(MINIO_IMAGE).start()
            self._cleanups.append(minio.stop)
            host, port = minio.get_container_host_ip(), minio.get_exposed_port(minio.port)
            return S3Server(
                f"http://{host}:{port}",
                minio.access_key,
                minio.secret_key,
                "us-east-1",
                "testcontainers",
            )
        store = self._stack().object_store
        s = store.settings
        return S3Server(
            store.endpoint_url, s.s3_access_key, s.s3_secret_key, s.s3_region, "local stack"
        )

    def close(self) -> None:
        while self._cleanups:
            with contextlib.suppress(Exception):
                self._cleanups.pop()()
