"""The sustained-load benchmark's own code, CI-sized: a short run at a modest rate.

Behaviour only, never speed (the figures are the benchmark's job): every row the three simulated
nodes wrote is in each Delta table its routes select, exactly once; the router's and the sink's
lag drains to nothing once the simulators stop; no process exits during the run; the result
file is written and holds the time series and the summary. The broker is the run's own
(dedicated, on free ports); the schema registry and S3 are the session's.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.harness import write_results
from benchmarks.sustained import report, run_sustained
from sensorstream.settings import ConnectionSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 150.0  # rows/s over three nodes
SECONDS = 45.0


def test_sustained_run_lands_every_row_once_and_drains(
    schema_registry, s3, s3_bucket, tmp_path, unique
):
    connection = ConnectionSettings(
        schema_registry_url=schema_registry.url,
        sensorstream_lake_uri=f"s3://{s3_bucket}/sustained-{unique}/lake",
        aws_endpoint_url=s3.endpoint_url,
        aws_region=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )
    results = run_sustained(
        RATE, SECONDS, sample_s=3.0, warmup_s=10.0, check=True, connection=connection
    )
    out = tmp_path / "sustained.json"
    write_results(out, results)
    print(report(results))

    assert results["error"] is None
    assert results["alive_throughout"] is True
    assert results["stages_not_stopped_cleanly"] == []

    drain = results["drain"]
    assert drain["drained"] is True
    final = drain["final"]
    assert final["producer_lag"] == 0
    assert final["written"] == results["rows_written"] > 0

    # `sensorstream audit --settled --sqlite` per node: every row in raw once or dead-lettered,
    # in every routed table exactly when its routes select it, nothing left in flight.
    checks = results["verification"]
    assert len(checks) == 3
    assert sum(c["source_rows"] for c in checks) == results["rows_written"]
    wrong = [f"{c['node_id']}: {line}" for c in checks for line in c["findings"]]
    assert not wrong, "\n".join(wrong)
    assert all(c["ok"] for c in checks)

    saved = json.loads(out.read_text())
    assert len(saved["samples"]) >= 5
    assert saved["summary"]["processes"].keys() >= {
        "produce-eu-west-1",
        "produce-us-east-1",
        "produce-ap-south-1",
        "router",
        "sink",
        "kafka",
    }
    for process in saved["summary"]["processes"].values():
        assert process["rss_mb_first_minute"] > 0
