"""Chaos: kill -9 of producers, routers and sinks at random moments and a broker restart, while
sensors write on two nodes; afterwards every Delta table holds exactly the rows its routes select
from the SQLite sources (DESIGN section 5): `sensorstream audit --settled --sqlite` checks each
node's every row, as an operator would.

The broker is a dedicated one, on free ports in this test's own directory, so restarting it
disturbs no other test; the schema registry and S3 are the session's. The schedule is seeded:
the seed is printed, and `CHAOS_SEED=<seed>` replays the same kills at the same moments. The
larger setting (more nodes, more kills, longer) is `uv run python -m benchmarks.chaos`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from infra.local_stack.chaos import ChaosPlan, ChaosRun
from tests.processes import alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Sized for CI (2-4 minutes on two shared cores): 2 nodes, 2 routers, 2 sinks, a 60 s window
# with 10 kills and one broker restart, then the drain.
CI_PLAN = {"nodes": 2, "routers": 2, "sinks": 2, "rate": 100.0, "chaos_s": 60.0, "kills": 10}


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes that name `directory` (the stages' databases, the
    broker's config): what must not outlive the test."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not alive(int(proc.name)):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(cmdline)
    return found


def test_exactly_once_through_kill_9_and_a_broker_restart(
    dedicated_kafka, schema_registry, s3, s3_bucket, tmp_path, unique
):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"\nchaos seed {seed} (replay with CHAOS_SEED={seed})")
    plan = ChaosPlan(seed=seed, **CI_PLAN)
    work = tmp_path / "chaos"
    work.mkdir()
    run = ChaosRun(
        plan,
        dedicated_kafka,
        schema_registry.url,
        f"s3://{s3_bucket}/chaos-{unique}",
        s3.storage_options(),
        work,
    )
    result = run.run()
    print(result.report())

    assert processes_under(work) == []  # every stage stopped, killed ones included
    assert dedicated_kafka.restarts == plan.broker_restarts
    roles = {run.specs[kill.victim].role for kill in result.kills}
    assert roles == {"produce", "route", "sink"}, f"seed {seed}: not every stage was killed"
    assert result.drained, f"seed {seed}: the pipeline did not drain\n{result.report()}"
    # The proof: every row of every node once in raw or the dead letters, in each table its
    # routing version selects and no other, in the dead letters of each route refusing it;
    # no duplicate, stray row or row in flight anywhere in the lake.
    assert result.ok, f"seed {seed}:\n" + "\n".join(result.audit)
    assert set(result.audits) == {node.node_id for node in run.nodes}
    tables = set(next(iter(result.audits.values()))["tables"])
    assert {"raw", "schematized", "filtered", "emergency"} <= tables
    assert {f"regional/{node.region}" for node in run.nodes} <= tables
    for node, report in result.audits.items():
        [rows] = [t for t in report["edge_tallies"] if t["source_table"] == "sensor_readings"]
        assert rows["source_rows"] == result.written[node] > 0
        assert rows["in_raw"] + rows["dead_lettered"] == rows["source_rows"]
        assert rows["route_checked"] == rows["in_raw"]
