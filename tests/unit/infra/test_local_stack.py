"""The local stack's process handling and its failure messages, with real child processes."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from infra.local_stack.artifacts import require_java, require_maven
from infra.local_stack.errors import StackError
from infra.local_stack.process import ManagedProcess
from infra.local_stack.server import LocalServer
from infra.local_stack.settings import StackSettings
from infra.local_stack.stack import LocalStack
from tests.processes import alive, free_port


@pytest.fixture
def settings(tmp_path) -> StackSettings:
    ports = {
        name: free_port()
        for name in (
            "kafka_port",
            "kafka_controller_port",
            "registry_port",
            "registry_management_port",
            "s3_port",
        )
    }
    return StackSettings(
        dir=tmp_path / "stack", cache_dir=tmp_path / "cache", ready_timeout_s=5, **ports
    )


def test_started_process_is_found_again_and_stopped(tmp_path):
    proc = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")
    pid = proc.start(["sleep", "60"], cwd=tmp_path)
    # A fresh handle (as `stack status` in another process would have) finds it by pid file.
    again = ManagedProcess("sleeper", tmp_path / "run", tmp_path / "logs")
    assert again.record().pid == pid
    assert again.rss_mb() > 0
    assert again.stop() is True
    assert not alive(pid)
    assert not again.pid_file.exists()
    assert again.stop() is False  # idempotent


def test_recycled_pid_is_not_mistaken_for_ours(tmp_path):
    proc = ManagedProcess("ghost", tmp_path / "run", tmp_path / "logs")
    proc.pid_file.parent.mkdir(parents=True)
    # Our own pid is alive, but its start time differs from the one recorded.
    proc.pid_file.write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1, "command": []}))
    assert proc.record() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is False  # and above all: we did not signal ourselves


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    proc = ManagedProcess("stubborn", tmp_path / "run", tmp_path / "logs")
    pid = proc.start(["sh", "-c", "trap '' TERM; echo ready; sleep 60 & wait"], cwd=tmp_path)
    # SIGTERM before the trap is set would kill it outright and prove nothing: wait for it.
    deadline = time.monotonic() + 120
    while b"ready" not in proc.log_file.read_bytes():
        assert time.monotonic() < deadline, "the child never set its trap"
        time.sleep(0.05)
    proc.stop(timeout=0.5)
    assert not alive(pid)


def test_busy_port_is_reported_with_server_and_port(settings):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = LocalStack(settings.model_copy(update={"registry_port": port}))
        with pytest.raises(StackError) as error:
            stack.up()
    assert f"schema-registry cannot start: port {port}" in str(error.value)
    assert "in use by another process" in str(error.value)
    assert "SENSORSTREAM_STACK_REGISTRY_PORT" in str(error.value)


class CrashingServer(LocalServer):
    name = "crasher"

    @property
    def ports(self) -> list[int]:
        return []

    @property
    def port(self) -> int:
        return 0

    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        return ["sh", "-c", "sleep 0.3; echo 'FATAL: listener config is wrong'; exit 3"]

    def is_ready(self) -> bool:
        return False

    def exports(self) -> dict[str, str]:
        return {}


def test_server_dying_on_start_shows_its_log_tail(settings):
    stack = LocalStack(settings)
    stack.servers = [CrashingServer(settings)]
    with pytest.raises(StackError) as error:
        stack.up()
    message = str(error.value)
    assert "crasher exited during start" in message
    assert "FATAL: listener config is wrong" in message


def test_missing_java_and_maven_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"Java is not on PATH.*openjdk-17"):
        require_java()
    with pytest.raises(StackError, match=r"Maven is not on PATH.*apt-get install -y maven"):
        require_maven()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="is Java 11; Kafka 4 needs Java 17"):
        require_java()


def test_env_exports_cover_the_connection_settings(settings):
    exports = LocalStack(settings).exports()
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_REGISTRY_URL",
        "SENSORSTREAM_LAKE_URI",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    } <= exports.keys()
    assert exports["SCHEMA_REGISTRY_URL"].endswith("/apis/ccompat/v7")


def test_cluster_ids_never_look_like_an_option(monkeypatch):
    """A cluster id starting with "-" made the storage tool fail with "expected one argument"."""
    import uuid

    from infra.local_stack import kafka

    leading_dash = uuid.UUID(bytes=b"\xfb" + bytes(15))  # urlsafe base64 "-w..."
    ids = iter([leading_dash, uuid.UUID(int=7)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(ids))
    cluster_id = kafka._cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
