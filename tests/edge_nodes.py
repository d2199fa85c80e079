"""Producer settings of the edge nodes tests run, each on topics of the test's own.

Two namings are in use: producer tests name their topics after what they hold
(`t.readings.<unique>`), pipeline tests after the pipeline (`t.<unique>.in`), so the routing
file, the sink and the audit find them under one prefix.
"""

from __future__ import annotations

from pathlib import Path

from producers.settings import ProducerSettings


def node_settings(sqlite: Path, unique: str, **overrides) -> ProducerSettings:
    """One node (`node-<unique>` in eu-west-1 unless overridden) on the producer tests' topics."""
    return ProducerSettings(
        **{
            "sqlite": sqlite,
            "node_id": f"node-{unique}",
            "region": "eu-west-1",
            "topic": f"t.readings.{unique}",
            "dead_letter_topic": f"t.dlq.{unique}",
            "checkpoint_topic": f"t.ckpt.{unique}",
            **overrides,
        }
    )


def fleet_node_settings(
    sqlite: Path, node: str, region: str, unique: str, **overrides
) -> ProducerSettings:
    """One node of a fleet feeding the pipeline's input `t.<unique>.in`, draining once."""
    return ProducerSettings(
        sqlite=sqlite,
        node_id=node,
        region=region,
        topic=f"t.{unique}.in",
        dead_letter_topic=f"t.{unique}.dlq",
        checkpoint_topic=f"t.{unique}.ckpt",
        **{"once": True, **overrides},
    )
