"""Pacing: write the rows that are due, one short transaction per tick, until told to stop.

Pacing follows the monotonic clock (rows due = rate x elapsed), so a slow tick is caught up
on the next one instead of drifting; timestamps in the rows come from a separate clock, the
wall clock by default, so tests can pin them and get byte-identical rows for a seed.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from producers.simulator.database import ReadingsDatabase
from producers.simulator.fleet import build_fleet
from producers.simulator.readings import ReadingModel
from producers.simulator.settings import SimulatorSettings

log = logging.getLogger("sensorstream.simulator")

Clock = Callable[[], datetime]

# Bounds one transaction, so a reader or the tailer never waits long behind the writer,
# including when catching up or writing as fast as possible (--rate 0).
MAX_ROWS_PER_TRANSACTION = 1000


def wall_clock() -> datetime:
    return datetime.now(UTC)


class SteppingClock:
    """A clock for reproducible rows: `start`, then `start + step`, `start + 2 step`, ..."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=100)) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self._next = start
        self._step = step

    def __call__(self) -> datetime:
        now = self._next
        self._next += self._step
        return now


@dataclass(frozen=True)
class SimulatorResult:
    rows_written: int
    first_rowid: int | None
    last_rowid: int | None
    seconds: float
    seed: int
    db: Path

    def summary(self) -> str:
        rate = self.rows_written / self.seconds if self.seconds > 0 else 0.0
        rowids = f"rowids {self.first_rowid}-{self.last_rowid}" if self.rows_written else "no rows"
        return (
            f"simulate: wrote {self.rows_written} rows to {self.db} in {self.seconds:.2f} s "
            f"({rate:.0f} rows/s), {rowids}, seed {self.seed}"
        )


def run_simulator(
    settings: SimulatorSettings,
    *,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimulatorResult:
    """Append readings to `settings.db` until the count, the duration or `stop` ends the run.

    Whatever was committed before `stop` is set stays committed; the result says exactly
    which rowids this run wrote. Without a seed one is drawn and reported in the result.
    """
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    fleet = build_fleet(seed, settings.region, settings.sensors)
    model = ReadingModel(
        fleet,
        seed=seed,
        region=settings.region,
        anomaly_probability=settings.anomaly_probability,
    )
    clock = clock or wall_clock
    stop = stop or threading.Event()
    say = progress or log.info
    rate, count = settings.rate, settings.count
    first_rowid: int | None = None
    last_rowid: int | None = None
    written = 0

    with ReadingsDatabase.open(settings.db) as db:
        started = time.monotonic()
        deadline = started + settings.duration if settings.duration is not None else None
        reported_at, reported_rows = started, 0
        while True:
            now = time.monotonic()
            # Past the deadline the rows due up to it are still written, then the run ends.
            final = deadline is not None and now >= deadline
            if final and rate == 0:
                due = 0  # as fast as possible means: until the deadline, not a batch past it
            else:
                due = _rows_due(started, deadline if final else now, written, rate)
            if count is not None:
                due = min(due, count - written)
            if due > 0:
                first, last_rowid = db.append([model.next_row(clock()) for _ in range(due)])
                first_rowid = first if first_rowid is None else first_rowid
                written += due
            now = time.monotonic()
            if now - reported_at >= settings.progress_interval_s:
                say(
                    f"{written} rows written to {settings.db}, "
                    f"{(written - reported_rows) / (now - reported_at):.0f} rows/s"
                )
                reported_at, reported_rows = now, written
            if final or stop.is_set() or (count is not None and written >= count):
                break
            pause = _pause(started, now, written, rate, settings.tick_s, deadline)
            if pause > 0 and stop.wait(pause):
                break
        seconds = time.monotonic() - started
    return SimulatorResult(written, first_rowid, last_rowid, seconds, seed, settings.db)


def _rows_due(started: float, horizon: float, written: int, rate: float) -> int:
    """Rows to write now: those scheduled up to `horizon`, at most one transaction's worth."""
    if rate == 0:
        return MAX_ROWS_PER_TRANSACTION
    # The epsilon keeps float error from dropping the row due exactly at the horizon.
    scheduled = math.floor((horizon - started) * rate + 1e-9)
    return min(scheduled - written, MAX_ROWS_PER_TRANSACTION)


def _pause(
    started: float, now: float, written: int, rate: float, tick_s: float, deadline: float | None
) -> float:
    """How long to sleep: until the next row is due, but at least a tick, to batch rows."""
    if rate == 0:
        return 0.0
    next_due = started + (written + 1) / rate
    if next_due <= now:
        return 0.0  # behind schedule: catch up without sleeping
    wake = max(next_due, now + tick_s)
    if deadline is not None:
        wake = min(wake, deadline)
    return max(0.0, wake - now)
