"""The exactly-once proof of every integration test that moves rows into the lake:
`sensorstream audit --settled`, as its own process, over the test's lake and topics.

A test that moved rows calls `assert_exactly_once` once its pipeline is done; a test may still
check what the audit does not (column values, ordering), but never its own count of rowids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.local_stack.audit_cli import findings, run_audit, unproven
from sensorstream.settings import ConnectionSettings


def fleet_env(connection: ConnectionSettings, unique: str) -> dict[str, str]:
    """The connection, and the router's and sink's groups and topics of a pipeline test on
    topics `t.<unique>.*` (tests.integration.stream_apps.test_router / test_sink settings)."""
    prefix = f"t.{unique}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": connection.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": connection.schema_registry_url,
        "SENSORSTREAM_LAKE_URI": connection.lake_uri,
        "SENSORSTREAM_ROUTER_CONSUMER_GROUP": f"g-{unique}",
        "SENSORSTREAM_SINK_CONSUMER_GROUP": f"sink-{unique}",
        "SENSORSTREAM_SINK_TOPIC_PREFIX": prefix,
        "SENSORSTREAM_SINK_DEAD_LETTER_TOPIC": f"{prefix}dlq",
        "SENSORSTREAM_SINK_TOPICS": json.dumps(
            [
                *(f"{prefix}{route}" for route in ("raw", "schematized", "filtered", "emergency")),
                f"^t\\.{unique}\\.regional\\..+",
                f"{prefix}dlq",
            ]
        ),
    }
    for key in ("aws_endpoint_url", "aws_region", "aws_access_key_id", "aws_secret_access_key"):
        value = getattr(connection, key, None)
        if value:
            env[key.upper()] = str(value)
    return env


def fleet_flags(unique: str) -> list[str]:
    return [
        "--checkpoint-topic",
        f"t.{unique}.ckpt",
        "--control-topic",
        f"t.{unique}.control",
        "--input-topic",
        f"t.{unique}.in",
        "--topic-prefix",
        f"t.{unique}.",
    ]


def assert_exactly_once(
    env: dict[str, str],
    flags: list[str],
    nodes: dict[str, Path] | None = None,
    *,
    settled: bool = True,
) -> list[dict[str, Any]]:
    """`sensorstream audit` finds the lake exact (with `settled`: nothing in flight or unsent).

    With `nodes` (node id -> its SQLite database) every row of each database is checked too:
    in raw once or dead-lettered once, in each routed table exactly when its routing version
    selects it, in the dead letters once for each route that refuses it; and each row's
    routes were checked (a routing version the audit cannot read would leave them unchecked).
    """
    wanted = [*flags, *(["--settled"] if settled else [])]
    runs = [(None, None)] if not nodes else list(nodes.items())
    reports = []
    for node_id, db in runs:
        report = run_audit(env, *wanted, sqlite=db, node_id=node_id)
        problems = unproven(report) if settled else findings(report)
        assert report["exit_code"] == 0 and not problems, (
            f"sensorstream audit {node_id or ''}:\n" + "\n".join(problems)
        )
        reports.append(report)
    return reports
