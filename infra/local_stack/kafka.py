"""Apache Kafka, single-node KRaft (broker and controller in one JVM), from Maven Central jars.

Maven resolves `kafka_2.13` and its runtime dependencies; the release tarball's slf4j->log4j2
binding is not among them, so it is added, or the broker would run without a single log line.
Internal topics are sized for one node, or transactions and consumer groups never start.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

from infra.local_stack.artifacts import maven_classpath, require_java
from infra.local_stack.errors import StackError
from infra.local_stack.server import LocalServer, accepts_connections

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.5"  # the log4j-core version kafka_2.13 4.4.0 depends on

_LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaServer(LocalServer):
    name = "kafka"
    overrides: dict[str, str] = {}
    """Broker properties set after the stack's own (the last of a key wins)."""

    @property
    def ports(self) -> list[int]:
        return [self.settings.kafka_port, self.settings.kafka_controller_port]

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.settings.host}:{self.settings.kafka_port}"

    def version(self) -> str:
        return KAFKA_VERSION

    def _config_dir(self) -> Path:
        return self.settings.dir.resolve() / "config"

    def _server_properties(self) -> str:
        s = self.settings
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={s.host}:{s.kafka_controller_port}",
                f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},"
                f"CONTROLLER://{s.host}:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=8",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                *(f"{key}={value}" for key, value in self.overrides.items()),
                "",
            ]
        )

    def _java(self, main_class: str, *args: str, heap: str = "-Xmx512m") -> list[str]:
        lib = maven_classpath(
            self.settings.cache_dir,
            f"kafka-{KAFKA_VERSION}",
            [
                f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
                f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
            ],
        )
        return [
            require_java(),
            heap,
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._config_dir() / 'kafka-log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main_class,
            *args,
        ]

    def prepare(self) -> None:
        config = self._config_dir()
        config.mkdir(parents=True, exist_ok=True)
        (config / "kafka-log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        properties = config / "kafka.properties"
        properties.write_text(self._server_properties())
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _cluster_id()
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(properties),
            "--standalone",
            heap="-Xmx256m",
        )
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(
                f"formatting Kafka storage in {self.data_dir} failed:\n"
                + "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self._config_dir() / "kafka.properties"))

    def is_ready(self) -> bool:
        if not accepts_connections(self.settings.host, self.settings.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("sensorstream.stack.kafka-probe")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": quiet})
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception:
            return False
        return bool(metadata.brokers)

    def exports(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}


def _cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own `Uuid.randomUuid()`, never one that starts
    with "-": the storage tool's argument parser would read it as an option (1 run in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id
