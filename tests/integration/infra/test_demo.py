"""`sensorstream demo` for real: three regions through the whole pipeline, exactly once.

The demo brings up the local stack itself (a running one is reused) and runs on the real
topics and consumer groups, as `make demo` does; it is run as a subprocess, like a user would,
so its exit code and its os._exit at the end are what is tested. About a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local_stack.demo import REGIONS, ROUTES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


def demo_processes() -> list[str]:
    """Command lines of live processes the demo starts: by their database paths (simulate,
    produce) or their instance ids (route, sink)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes() if "sensorstream" in cmdline else b""
        except OSError:
            continue
        if "sensorstream" not in cmdline:
            continue
        if "/.stack/demo/" in cmdline or b"_INSTANCE_ID=demo-" in environ:
            found.append(cmdline)
    return found


# The servers come from the session's pool first: when the pool starts the local stack it
# also stops it at the end of the run. Were the demo (which leaves the stack up on purpose)
# to start it, the pool would find it running and leave it running after the tests.
@pytest.mark.usefixtures("kafka", "schema_registry", "s3")
def test_demo_runs_three_regions_through_the_pipeline_exactly_once():
    result = subprocess.run(
        [sys.executable, "-m", "sensorstream", "demo", "--duration", "15"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,  # the demo waits as long as its pipeline makes progress
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]

    summary = out[out.index("sensorstream demo: summary") :]
    header = next(line for line in summary.splitlines() if "Delta table" in line)
    assert header.split()[2:5] == list(REGIONS)
    for route in ROUTES:
        assert f"s3://sensorstream/lake/{route}" in summary
    assert "s3://sensorstream/lake/regional/{region}" in summary
    assert "s3://sensorstream/lake/dlq" in summary
    labels = {*ROUTES, "regional", "SQLite"}
    rows = {
        parts[0]: parts[1:5]  # per region, then the total
        for parts in (line.split() for line in summary.splitlines())
        if parts and parts[0] in labels
    }
    assert set(rows) == labels
    written = rows["SQLite"]
    assert int(written[-1].replace(",", "")) > 0
    assert rows["raw"] == written  # every region's rows, all of them
    assert rows["regional"] == written  # and each in its own region's table
    assert "exactly once      OK" in summary
    assert "audit             EXACT (`sensorstream audit`: every table of the lake)" in summary
    assert "latency           p50" in summary
    assert "uv run python -c" in summary  # the example query
    assert demo_processes() == []  # nothing it started outlives it

    # Each long-running process served its metrics on a port of its own, and said where.
    endpoints = re.search(r"Prometheus metrics at \S+: (.*)", out).group(1).split(", ")
    served = dict(endpoint.split(" :") for endpoint in endpoints)
    producers = {f"produce-{region}" for region in REGIONS}
    assert set(served) == {"router", "sink", "maintain", *producers}
    assert len(set(served.values())) == len(served)
