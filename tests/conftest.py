"""Session fixtures for real servers; see tests/servers.py for how each is found."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sensorstream.logs import silence_known_warnings
from sensorstream.settings import ConnectionSettings
from tests.servers import KafkaServer, S3Server, SchemaRegistryServer, ServerPool


def pytest_configure(config: pytest.Config) -> None:
    silence_known_warnings()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def kafka(server_pool: ServerPool) -> KafkaServer:
    return server_pool.kafka()


@pytest.fixture(scope="session")
def schema_registry(server_pool: ServerPool) -> SchemaRegistryServer:
    return server_pool.schema_registry()


@pytest.fixture(scope="session")
def s3(server_pool: ServerPool) -> S3Server:
    return server_pool.s3()


@pytest.fixture(scope="session")
def s3_bucket(s3: S3Server) -> str:
    """A bucket of this test session's own, so runs never see each other's tables."""
    from infra.local_stack.object_store import create_bucket

    name = f"sensorstream-test-{uuid.uuid4().hex[:10]}"
    create_bucket(s3.endpoint_url, s3.access_key, s3.secret_key, s3.region, name)
    return name


@pytest.fixture
def connection(
    kafka: KafkaServer, schema_registry: SchemaRegistryServer, s3: S3Server, tmp_path
) -> ConnectionSettings:
    """Connection settings pointing at the real servers, with a local lake per test."""
    return ConnectionSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        schema_registry_url=schema_registry.url,
        sensorstream_lake_uri=str(tmp_path / "lake"),
        aws_endpoint_url=s3.endpoint_url,
        aws_region=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )


@pytest.fixture
def unique() -> str:
    """A suffix that keeps topic, subject and table names of one test apart from another's."""
    return uuid.uuid4().hex[:12]
