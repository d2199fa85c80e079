"""Measurement values that look like real sensors, and the anomalies the pipeline must catch.

Values follow the physics loosely enough to be believable in a dashboard (a day/night
temperature cycle at the sensor's solar time, humidity falling as it warms, pressure drifting
slowly) and tightly enough to be reproducible: everything comes from one seeded stream and the
reading's timestamp, visited sensor by sensor in round-robin order.

Units are what the rows carry: temperature in degrees Celsius, humidity in percent, pressure
in bar (the unit of the legacy fleet's sensors, so the default routes and the demo hold the
same data the fleet sends), vibration in mm/s, voltage in volts. Pressure is modelled in hPa,
where weather reads naturally, and written in bar.

Anomalies come in episodes: spike, noise and missing_data touch one reading; trend and pattern
run over several consecutive readings of the same sensor, the way a failing bearing or a
flapping relay would. `anomaly_probability` is the expected fraction of anomalous rows, so the
chance of starting an episode is scaled down by the mean episode length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from producers.simulator.fleet import Sensor

MEASUREMENTS = ("temperature", "humidity", "pressure", "vibration", "voltage")
ANOMALY_TYPES = ("spike", "trend", "pattern", "noise", "missing_data")

_EPISODE_LENGTHS = {
    "spike": (1, 1),
    "trend": (5, 20),
    "pattern": (6, 18),
    "noise": (1, 1),
    "missing_data": (1, 1),
}
_MEAN_EPISODE_LENGTH = sum((lo + hi) / 2 for lo, hi in _EPISODE_LENGTHS.values()) / len(
    _EPISODE_LENGTHS
)

# Per measurement, in MEASUREMENTS order and the model's units (pressure: hPa; voltage: a
# fraction of the nominal supply): spike size, trend change per reading, pattern amplitude,
# noise sigma.
_SPIKE = ((35.0, 75.0), (30.0, 60.0), (30.0, 80.0), (40.0, 120.0), (0.3, 0.6))
_TREND_STEP = ((0.8, 2.5), (2.0, 4.0), (1.0, 3.0), (1.0, 4.0), (0.01, 0.03))
_PATTERN_AMPLITUDE = ((6.0, 10.0), (10.0, 20.0), (10.0, 20.0), (6.0, 15.0), (0.05, 0.15))
_NOISE_SIGMA = (8.0, 15.0, 20.0, 5.0, 0.08)
# Overheating and shaking go up; the others fail either way.
_UPWARD_ONLY = (True, False, False, True, False)
_DECIMALS = (2, 2, 5, 3, 2)  # pressure in bar: 0.01 hPa
_HUMIDITY, _PRESSURE, _VIBRATION, _VOLTAGE = (
    MEASUREMENTS.index(m) for m in ("humidity", "pressure", "vibration", "voltage")
)
HPA_PER_BAR = 1000.0


def episode_start_probability(anomaly_probability: float) -> float:
    """Chance that a normal reading starts an episode, so anomalous rows make up the fraction.

    With start chance q and mean episode length L the long-run anomalous fraction is
    qL / (1 - q + qL); this solves that for q.
    """
    p = anomaly_probability
    return p / (p + _MEAN_EPISODE_LENGTH * (1 - p))


@dataclass
class _Episode:
    kind: str
    field: int
    length: int
    magnitude: float
    half_period: int
    step: int = 0


@dataclass
class _SensorState:
    sensor: Sensor
    metadata: tuple[object, ...]
    pressure_drift: float = 0.0
    episode: _Episode | None = None


class ReadingModel:
    """Turns timestamps into rows, one sensor after the other."""

    def __init__(
        self, fleet: Sequence[Sensor], *, seed: int, region: str, anomaly_probability: float
    ) -> None:
        if not fleet:
            raise ValueError("a fleet needs at least one sensor")
        self._rng = random.Random(f"sensorstream-simulator:{seed}:{region}:values")
        self._states = [_SensorState(s, s.metadata_row()) for s in fleet]
        self._next = 0
        self._start_probability = episode_start_probability(anomaly_probability)

    def next_row(self, at: datetime) -> tuple[object, ...]:
        """The next sensor's reading taken at `at`, in `database.INSERT_COLUMNS` order."""
        state = self._states[self._next]
        self._next = (self._next + 1) % len(self._states)
        values: list[float | None] = list(self._normal_values(state, at))
        anomaly_type = self._apply_anomaly(state, values)
        if values[_PRESSURE] is not None:
            values[_PRESSURE] /= HPA_PER_BAR
        for i, value in enumerate(values):
            if value is not None:
                values[i] = round(value, _DECIMALS[i])
        flagged = 0 if anomaly_type is None else 1
        timestamp = at.astimezone(UTC).isoformat(timespec="microseconds")
        return (
            timestamp,
            state.sensor.sensor_id,
            *values,
            flagged,  # status_code: 1 while the sensor reports a fault
            flagged,  # anomaly_flag
            anomaly_type,
            *state.metadata,
        )

    def _normal_values(self, state: _SensorState, at: datetime) -> tuple[float, ...]:
        rng, sensor = self._rng, state.sensor
        solar_hour = (at.timestamp() / 3600 + sensor.longitude / 15) % 24
        day_cycle = math.sin(2 * math.pi * (solar_hour - 9) / 24)  # warmest mid-afternoon
        temperature = sensor.base_temperature + sensor.daily_swing * day_cycle + rng.gauss(0, 0.15)
        humidity = (
            sensor.base_humidity - 2.0 * (temperature - sensor.base_temperature) + rng.gauss(0, 0.8)
        )
        state.pressure_drift = min(8.0, max(-8.0, state.pressure_drift + rng.gauss(0, 0.05)))
        pressure = sensor.base_pressure + state.pressure_drift + rng.gauss(0, 0.1)
        vibration = sensor.model.base_vibration * rng.lognormvariate(0, 0.25)
        voltage = sensor.model.nominal_voltage * (1 + rng.gauss(0, 0.004))
        return temperature, min(100.0, max(0.0, humidity)), pressure, vibration, voltage

    def _apply_anomaly(self, state: _SensorState, values: list[float | None]) -> str | None:
        episode = state.episode
        if episode is None:
            if self._rng.random() >= self._start_probability:
                return None
            episode = state.episode = self._start_episode(state.sensor)
        rng, kind, field = self._rng, episode.kind, episode.field
        if kind == "missing_data":
            for i in rng.sample(range(len(MEASUREMENTS)), rng.randint(1, 3)):
                values[i] = None
        elif kind == "noise":
            nominal = state.sensor.model.nominal_voltage
            for i, sigma in enumerate(_NOISE_SIGMA):
                scale = nominal if i == _VOLTAGE else 1.0
                values[i] = _add(values[i], rng.gauss(0, sigma * scale))
        elif kind == "spike":
            values[field] = _add(values[field], episode.magnitude)
        elif kind == "trend":
            values[field] = _add(values[field], episode.magnitude * (episode.step + 1))
        else:  # pattern: a square wave, like a relay switching a load on and off
            high = (episode.step // episode.half_period) % 2 == 0
            values[field] = _add(values[field], episode.magnitude if high else -episode.magnitude)
        _keep_physical(values)
        episode.step += 1
        if episode.step >= episode.length:
            state.episode = None
        return kind

    def _start_episode(self, sensor: Sensor) -> _Episode:
        rng = self._rng
        kind = rng.choice(ANOMALY_TYPES)
        field = rng.randrange(len(MEASUREMENTS))
        sizes = {"spike": _SPIKE, "trend": _TREND_STEP, "pattern": _PATTERN_AMPLITUDE}
        magnitude = 0.0
        if kind in sizes:
            low, high = sizes[kind][field]
            sign = 1 if _UPWARD_ONLY[field] or rng.random() < 0.5 else -1
            scale = sensor.model.nominal_voltage if field == _VOLTAGE else 1.0
            magnitude = sign * rng.uniform(low, high) * scale
        return _Episode(
            kind=kind,
            field=field,
            length=rng.randint(*_EPISODE_LENGTHS[kind]),
            magnitude=magnitude,
            half_period=rng.randint(1, 3),
        )


def _add(value: float | None, delta: float) -> float | None:
    return None if value is None else value + delta


def _keep_physical(values: list[float | None]) -> None:
    """Faulty sensors read wrong, not impossible: no humidity above 100 %, no negative shaking."""
    humidity, vibration, voltage = values[_HUMIDITY], values[_VIBRATION], values[_VOLTAGE]
    if humidity is not None:
        values[_HUMIDITY] = min(100.0, max(0.0, humidity))
    if vibration is not None:
        values[_VIBRATION] = max(0.0, vibration)
    if voltage is not None:
        values[_VOLTAGE] = max(0.0, voltage)
