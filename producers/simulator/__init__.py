"""The sensor simulator: fills edge SQLite databases with realistic readings for demos and tests.

Other components use `run_simulator` (e.g. to feed the tailer in tests) and
`create_readings_table` (to create the DESIGN section 4 table without writing rows).
"""

from producers.simulator.database import (
    INSERT_COLUMNS,
    READINGS_COLUMNS,
    create_readings_table,
)
from producers.simulator.fleet import Sensor, build_fleet
from producers.simulator.readings import ANOMALY_TYPES, MEASUREMENTS
from producers.simulator.runner import (
    SimulatorResult,
    SteppingClock,
    run_simulator,
)
from producers.simulator.settings import SimulatorSettings

__all__ = [
    "ANOMALY_TYPES",
    "INSERT_COLUMNS",
    "MEASUREMENTS",
    "READINGS_COLUMNS",
    "Sensor",
    "SimulatorResult",
    "SimulatorSettings",
    "SteppingClock",
    "build_fleet",
    "create_readings_table",
    "run_simulator",
]
