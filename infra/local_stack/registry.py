"""A Confluent-compatible schema registry: Apicurio Registry, in-memory storage, served under
its `/apis/ccompat/v7` API.

3.0.9 is pinned because it is the newest release that runs on Java 17 (3.3.x is compiled for
Java 21). Global compatibility is set to BACKWARD, Confluent's default (Apicurio's is NONE).
Storage is in memory: schema ids do not survive a restart of the registry, which is fine for a
development stack whose Kafka topics are created by the same session.
"""

from __future__ import annotations

import httpx

from infra.local_stack.artifacts import maven_artifact, require_java, unpacked
from infra.local_stack.server import LocalServer, accepts_connections

APICURIO_VERSION = "3.0.9"


class SchemaRegistryServer(LocalServer):
    name = "schema-registry"

    @property
    def ports(self) -> list[int]:
        return [self.settings.registry_port, self.settings.registry_management_port]

    @property
    def port(self) -> int:
        return self.settings.registry_port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.registry_port}/apis/ccompat/v7"

    def version(self) -> str:
        return f"apicurio {APICURIO_VERSION}"

    def _dist(self):
        archive = maven_artifact(
            self.settings.cache_dir,
            f"apicurio-{APICURIO_VERSION}-download",
            f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all",
        )
        return unpacked(archive, self.settings.cache_dir / f"apicurio-{APICURIO_VERSION}")

    def prepare(self) -> None:
        require_java()
        self._dist()

    def command(self) -> list[str]:
        s = self.settings
        runner = self._dist() / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
        return [
            require_java(),
            # C1 only, a small serial heap: half the start time and 30% less memory for a
            # registry that serves a few hundred schemas.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xms32m",
            "-Xmx192m",
            f"-Dquarkus.http.host={s.host}",
            f"-Dquarkus.http.port={s.registry_port}",
            # The management interface otherwise binds 0.0.0.0:9000, the S3 server's port.
            f"-Dquarkus.management.host={s.host}",
            f"-Dquarkus.management.port={s.registry_management_port}",
            "-Dapicurio.rules.global.compatibility=BACKWARD",
            "-jar",
            str(runner),
        ]

    def is_ready(self) -> bool:
        if not accepts_connections(self.settings.host, self.settings.registry_port):
            return False
        try:
            return httpx.get(f"{self.url}/subjects", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def exports(self) -> dict[str, str]:
        return {"SCHEMA_REGISTRY_URL": self.url}
