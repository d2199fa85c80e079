"""The default routing file against the readings our users' fleets really send.

The `schematized` ranges are physical plausibility: a reading outside them is a broken sensor
or a broken pipeline. A range in the wrong unit instead dead-letters every reading of a healthy
fleet. These tests route many readings of our simulator (default configuration, anomalies
included: faulty sensors read wrong, not impossible) and the envelope of the legacy fleet's
sensors through the default routes, and expect no schematized dead letter.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers.simulator import MEASUREMENTS, SimulatorSettings, SteppingClock, run_simulator
from stream_apps.routing.config import CompiledRouting
from tests.unit.stream_apps.test_routing_compiled import reading, routing  # noqa: F401 (fixture)

# The legacy fleet's sensors, in their own units (the uploader's simulator, default
# configuration): normal values are drawn around the mean and clamped to [low, high]; its
# anomalies scale a value by up to 1.5 either way (trend), by 1 +- 0.2 (pattern) or add 10-15 %
# noise, and spike within [low, high].
LEGACY_SENSORS = {  # measurement: (mean, low, high, unit)
    "temperature": (61.0, 50.0, 80.0, "degrees Celsius"),
    "humidity": (3.0, 0.0, 100.0, "percent relative humidity"),
    "pressure": (12.0, 10.0, 15.0, "bar"),
    "voltage": (12.0, 11.5, 12.5, "volts"),
    "vibration": (1.5, 0.0, 3.0, "g"),
}
LEGACY_ANOMALY_FACTOR = 1.5


def legacy_envelope() -> list[tuple[str, float]]:
    values = []
    for field, (mean, low, high, _) in LEGACY_SENSORS.items():
        realistic_high = min(high, mean * 1.7)  # humidity near 3 % never nears 100 %
        values += [(field, mean), (field, low), (field, realistic_high)]
        values += [(field, low / LEGACY_ANOMALY_FACTOR), (field, realistic_high * 1.5)]
    return values


@pytest.mark.parametrize(("field", "value"), legacy_envelope(), ids=lambda v: str(v))
def test_legacy_fleet_readings_pass_the_default_schematized_route(
    routing: CompiledRouting,  # noqa: F811
    field: str,
    value: float,
) -> None:
    means = {f: mean for f, (mean, *_) in LEGACY_SENSORS.items()}
    result = routing.route(reading(**{**means, field: value}))
    assert [f.reason for f in result.dead_letters] == []
    assert "schematized" in {output.route for output in result.outputs}


def simulated_rows(db: Path, *, seed: int, region: str, count: int) -> list[dict[str, Any]]:
    """`count` rows of the simulator's default configuration over two simulated days."""
    start = datetime(2026, 6, 21, tzinfo=UTC) if seed % 2 else datetime(2026, 12, 21, tzinfo=UTC)
    step = timedelta(days=2) / count
    settings = SimulatorSettings(db=db, count=count, rate=0, seed=seed, region=region)
    run_simulator(settings, clock=SteppingClock(start, step), progress=lambda _: None)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM sensor_readings")]
    finally:
        conn.close()


def rule_of(reason: str) -> str:
    """'schematized: ranges.pressure' of 'schematized: ranges.pressure: 1013.2 is outside ...'."""
    return ":".join(reason.split(":")[:2])


def record_of(row: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in row.items() if k != "id"}
    values["timestamp"] = datetime.fromisoformat(values["timestamp"])
    return reading(**values)


@pytest.mark.parametrize("region", ["us-east-1", "eu-north-1", "ap-southeast-1", "site-x"])
def test_simulated_readings_pass_the_default_schematized_route(
    routing: CompiledRouting,  # noqa: F811
    tmp_path: Path,
    region: str,
) -> None:
    failures: Counter[str] = Counter()
    anomalies = 0
    for seed in range(3):
        rows = simulated_rows(tmp_path / f"{seed}.db", seed=seed, region=region, count=3000)
        for row in rows:
            anomalies += row["anomaly_flag"]
            for letter in routing.route(record_of(row)).dead_letters:
                failures[rule_of(letter.reason)] += 1
    assert anomalies > 100  # the anomalous readings were there, and passed too
    assert not failures, f"simulated readings dead-lettered by the default routes: {failures}"


def test_simulated_anomalies_stay_physical(routing: CompiledRouting, tmp_path: Path) -> None:  # noqa: F811
    """Every reading anomalous: spikes, trends, patterns and noise on every measurement."""
    db = tmp_path / "anomalies.db"
    start = datetime(2026, 6, 21, tzinfo=UTC)
    settings = SimulatorSettings(db=db, count=6000, rate=0, seed=7, anomaly_probability=1.0)
    run_simulator(settings, clock=SteppingClock(start, timedelta(seconds=20)))
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(row) for row in conn.execute("SELECT * FROM sensor_readings")]
    conn.close()
    failures = Counter(
        rule_of(letter.reason)
        for row in rows
        for letter in routing.route(record_of(row)).dead_letters
    )
    assert {row["anomaly_type"] for row in rows} >= {"spike", "trend", "pattern", "noise"}
    assert all(any(row[m] is not None for m in MEASUREMENTS) for row in rows)
    assert not failures, f"anomalous readings outside the physical ranges: {failures}"
