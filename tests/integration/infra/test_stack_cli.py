"""`sensorstream stack up|status|env|down` for real: three healthy servers, then none left."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.processes import alive, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stack_lifecycle_through_the_cli(tmp_path):
    ports = {
        "KAFKA_PORT": free_port(),
        "KAFKA_CONTROLLER_PORT": free_port(),
        "REGISTRY_PORT": free_port(),
        "REGISTRY_MANAGEMENT_PORT": free_port(),
        "S3_PORT": free_port(),
    }
    env = {
        **os.environ,
        "SENSORSTREAM_STACK_DIR": str(tmp_path / "stack"),
        **{f"SENSORSTREAM_STACK_{k}": str(v) for k, v in ports.items()},
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sensorstream", "stack", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def pids() -> dict[str, int]:
        run = tmp_path / "stack" / "run"
        return {p.stem: json.loads(p.read_text())["pid"] for p in run.glob("*.pid")}

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        first = pids()
        assert set(first) == {"kafka", "schema-registry", "s3"}

        status = cli("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        servers = {s["name"]: s for s in json.loads(status.stdout)}
        assert {name: s["state"] for name, s in servers.items()} == {
            "kafka": "ready",
            "schema-registry": "ready",
            "s3": "ready",
        }
        assert servers["kafka"]["port"] == ports["KAFKA_PORT"]
        assert {name: s["pid"] for name, s in servers.items()} == first
        assert all(s["rss_mb"] > 0 for s in servers.values())
        assert "stopped" not in cli("status").stdout  # the human table too

        again = cli("up")  # idempotent: the same processes, nothing restarted
        assert again.returncode == 0, again.stderr
        assert pids() == first

        exports = cli("env").stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{ports['KAFKA_PORT']}" in exports
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{ports['S3_PORT']}" in exports
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in first.values())
    after = cli("status")
    assert after.returncode == 3
    assert after.stdout.count("stopped") == 3
    assert "nothing running" in cli("down").stderr
