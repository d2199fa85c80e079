"""The sensor simulator: the edge database it writes is what the tailer and the lake rely on."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producers.simulator import (
    ANOMALY_TYPES,
    MEASUREMENTS,
    SimulatorSettings,
    SteppingClock,
    build_fleet,
    create_readings_table,
    run_simulator,
)
from producers.simulator.fleet import SAFE_ID
from sensorstream.cli import main
from sensorstream.errors import ConfigError
from sensorstream.settings import load_settings

START = datetime(2026, 11, 23, 4, 10, tzinfo=UTC)

# DESIGN section 4, column by column: (name, declared type, NOT NULL, default, primary key).
DESIGN_COLUMNS = [
    ("id", "INTEGER", 0, None, 1),
    ("timestamp", "TEXT", 1, None, 0),
    ("sensor_id", "TEXT", 1, None, 0),
    ("temperature", "REAL", 0, None, 0),
    ("humidity", "REAL", 0, None, 0),
    ("pressure", "REAL", 0, None, 0),
    ("vibration", "REAL", 0, None, 0),
    ("voltage", "REAL", 0, None, 0),
    ("status_code", "INTEGER", 0, None, 0),
    ("anomaly_flag", "INTEGER", 0, "0", 0),
    ("anomaly_type", "TEXT", 0, None, 0),
    ("firmware_version", "TEXT", 0, None, 0),
    ("model", "TEXT", 0, None, 0),
    ("manufacturer", "TEXT", 0, None, 0),
    ("location", "TEXT", 0, None, 0),
    ("latitude", "REAL", 0, None, 0),
    ("longitude", "REAL", 0, None, 0),
    ("original_timezone", "TEXT", 0, None, 0),
    ("serial_number", "TEXT", 0, None, 0),
    ("manufacture_date", "TEXT", 0, None, 0),
    ("deployment_type", "TEXT", 0, None, 0),
    ("installation_date", "TEXT", 0, None, 0),
    ("height_meters", "REAL", 0, None, 0),
    ("orientation_degrees", "REAL", 0, None, 0),
    ("instance_id", "TEXT", 0, None, 0),
    ("sensor_type", "TEXT", 0, None, 0),
]


def settings(db: Path, **values: object) -> SimulatorSettings:
    values = {"seed": 7, "rate": 0, **values}
    return load_settings(SimulatorSettings, overrides={"db": db, **values})


def rows(db: Path, columns: str = "*") -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(f"SELECT {columns} FROM sensor_readings ORDER BY id").fetchall()
    finally:
        conn.close()


def test_table_matches_design_section_4(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=1))
    conn = sqlite3.connect(db)
    info = conn.execute("PRAGMA table_info(sensor_readings)").fetchall()
    assert [
        (name, type_, notnull, default, pk) for _, name, type_, notnull, default, pk in info
    ] == (DESIGN_COLUMNS)
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'sensor_readings'").fetchone()
    assert "AUTOINCREMENT" in ddl.upper()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_create_readings_table_keeps_an_existing_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "edge.db")
    create_readings_table(conn)
    conn.execute("INSERT INTO sensor_readings (timestamp, sensor_id) VALUES ('t', 's')")
    conn.commit()
    create_readings_table(conn)
    assert conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0] == 1
    conn.close()


def test_same_seed_and_start_give_identical_rows(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> list[tuple]:
        db = tmp_path / name
        run_simulator(
            settings(db, count=500, seed=seed, anomaly_probability=0.2),
            clock=SteppingClock(START, timedelta(milliseconds=50)),
        )
        return [tuple(row)[1:] for row in rows(db)]

    first, again, other = run("a.db", 11), run("b.db", 11), run("c.db", 12)
    assert first == again
    assert len(first) == 500
    assert {row[1] for row in first} != {row[1] for row in other}
    assert [row[2:7] for row in first] != [row[2:7] for row in other]


def test_timestamps_are_iso_utc_with_microseconds(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    step = timedelta(microseconds=1_234_567)
    run_simulator(settings(db, count=3), clock=SteppingClock(START, step))
    stamps = [row["timestamp"] for row in rows(db)]
    assert stamps == [(START + i * step).isoformat(timespec="microseconds") for i in range(3)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", s) for s in stamps)


def test_count_writes_exactly_that_many_rows(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    result = run_simulator(settings(db, count=2345))  # more than one transaction's worth
    ids = [row["id"] for row in rows(db, "id")]
    assert result.rows_written == len(ids) == 2345
    assert (result.first_rowid, result.last_rowid) == (ids[0], ids[-1])


def test_no_anomalies_at_probability_zero_and_values_are_plausible(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=2000, sensors=20, anomaly_probability=0.0))
    readings = rows(db)
    assert {(r["anomaly_flag"], r["status_code"], r["anomaly_type"]) for r in readings} == {
        (0, 0, None)
    }
    for r in readings:
        assert all(r[field] is not None for field in MEASUREMENTS)
        assert -10 < r["temperature"] < 45
        assert 0 <= r["humidity"] <= 100
        assert 0.95 < r["pressure"] < 1.05  # bar, the unit of the legacy fleet's sensors
        assert 0 <= r["vibration"] < 15
        nominal = 230.0 if r["voltage"] > 100 else 12.0
        assert abs(r["voltage"] - nominal) < 0.05 * nominal


def test_every_row_is_anomalous_at_probability_one(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=3000, anomaly_probability=1.0))
    readings = rows(db)
    assert {(r["anomaly_flag"], r["status_code"]) for r in readings} == {(1, 1)}
    assert {r["anomaly_type"] for r in readings} == set(ANOMALY_TYPES)


def test_trend_and_pattern_persist_over_consecutive_readings(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=3000, anomaly_probability=1.0))
    longest: dict[str, int] = defaultdict(int)
    runs: dict[str, tuple[str | None, int]] = {}
    for r in rows(db):
        kind, length = runs.get(r["sensor_id"], (None, 0))
        length = length + 1 if kind == r["anomaly_type"] else 1
        runs[r["sensor_id"]] = (r["anomaly_type"], length)
        longest[r["anomaly_type"]] = max(longest[r["anomaly_type"]], length)
    assert longest["trend"] >= 5
    assert longest["pattern"] >= 5


def test_anomalous_fraction_follows_the_probability(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=20_000, sensors=10, anomaly_probability=0.2))
    flags = [r["anomaly_flag"] for r in rows(db, "anomaly_flag")]
    assert 0.15 < sum(flags) / len(flags) < 0.25


def test_missing_data_leaves_measurements_null(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=3000, anomaly_probability=1.0))
    nulls_by_type: dict[str, list[int]] = defaultdict(list)
    for r in rows(db):
        nulls_by_type[r["anomaly_type"]].append(sum(r[f] is None for f in MEASUREMENTS))
    assert nulls_by_type["missing_data"]
    assert all(1 <= n < len(MEASUREMENTS) for n in nulls_by_type["missing_data"])
    others = [n for kind, ns in nulls_by_type.items() if kind != "missing_data" for n in ns]
    assert others and not any(others)


def test_existing_rows_are_never_deleted(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=50, seed=1))
    before = [tuple(r) for r in rows(db)]
    result = run_simulator(settings(db, count=50, seed=2))
    after = [tuple(r) for r in rows(db)]
    assert after[:50] == before
    assert len(after) == 100
    assert result.first_rowid == before[-1][0] + 1
    assert [r[0] for r in after] == sorted({r[0] for r in after})


def test_rowids_are_not_reused_after_rows_were_removed(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    run_simulator(settings(db, count=10))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM sensor_readings WHERE id > 5")
    conn.close()
    result = run_simulator(settings(db, count=1))
    assert result.first_rowid == 11


def test_a_table_with_extra_columns_is_appended_to(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db)
    create_readings_table(conn)
    conn.execute("ALTER TABLE sensor_readings ADD COLUMN site_note TEXT DEFAULT 'legacy'")
    conn.close()
    run_simulator(settings(db, count=20))
    assert [r["site_note"] for r in rows(db)] == ["legacy"] * 20


def test_a_table_missing_columns_is_reported_not_altered(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE sensor_readings (id INTEGER PRIMARY KEY, timestamp TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match=r"edge\.db.*sensor_id"):
        run_simulator(settings(db, count=1))


def test_a_read_only_reader_reads_while_the_simulator_writes(tmp_path: Path) -> None:
    """While the simulator writes, the reader's busy timeout is 0: a lock the writer held
    against readers would raise "database is locked" at once, however slow or fast the
    machine, instead of showing as a slow read.

    Only while it writes: opening a WAL database with no other connection runs a recovery
    under an exclusive lock, which a reader meets as "locked" for an instant, so the reader
    waits out the writer's start (the first rows visible) before it counts."""
    db = tmp_path / "edge.db"
    conn = sqlite3.connect(db)
    create_readings_table(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    stop = threading.Event()
    writer, results = run_in_thread(settings(db, rate=0), stop)
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0)

    def count() -> int:
        return reader.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]

    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not seen or seen[-1] == 0:  # the writer's start
            assert time.monotonic() < deadline, "the simulator wrote nothing in 120 s"
            with contextlib.suppress(sqlite3.OperationalError):
                seen.append(count())
            stop.wait(0.01)
        while len(set(seen)) <= 4 and time.monotonic() < deadline:  # it writes: no lock
            seen.append(count())
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join(timeout=120)
        reader.close()
    assert results, "the writer did not finish"
    assert seen == sorted(seen)
    assert len(set(seen)) > 4, "the reader should see the table grow while it is written"
    assert seen[-1] <= results[0].rows_written


def run_in_thread(
    config: SimulatorSettings, stop: threading.Event, **kwargs
) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(
        target=lambda: results.append(run_simulator(config, stop=stop, **kwargs))
    )
    thread.start()
    return thread, results


def test_a_stop_request_ends_the_run_with_everything_committed(tmp_path: Path) -> None:
    """Neither a count nor a duration: only the stop request can end this run. It is sent
    once rows are in the database, whatever the machine's speed."""
    db = tmp_path / "edge.db"
    stop = threading.Event()
    writer, results = run_in_thread(settings(db, rate=500), stop)
    try:
        deadline = time.monotonic() + 120
        while _count(db) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(timeout=120)
    assert not writer.is_alive(), "the run did not end on the stop request"
    (result,) = results
    assert 0 < result.rows_written == len(rows(db, "id"))
    assert (result.first_rowid, result.last_rowid) == (1, result.rows_written)


class PacedClock:
    """The wall clock, noting the monotonic time at which each row was taken."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    def __call__(self) -> datetime:
        self.taken.append(time.monotonic())
        return datetime.now(UTC)


def test_duration_paces_rows_at_the_rate(tmp_path: Path) -> None:
    """Pacing means no row before it is due: row k of a run at `rate` rows/s is taken at
    least k / rate seconds after the start. A loaded machine makes rows late, never early,
    so this holds on any machine; a burst (every row at once) breaks it."""
    db = tmp_path / "edge.db"
    lines: list[str] = []
    clock = PacedClock()
    began = time.monotonic()
    result = run_simulator(
        settings(db, rate=200, duration=1.0, progress_interval_s=0.3),
        clock=clock,
        progress=lines.append,
    )
    assert result.rows_written == 200 == len(rows(db, "id")) == len(clock.taken)
    early = [k for k, at in enumerate(clock.taken, start=1) if at < began + k / 200 - 1e-6]
    assert early == [], f"rows written before they were due: {early[:10]}"
    assert result.seconds >= 1.0
    # A progress line at most every 0.3 s (the last one at the end of the run at the latest).
    assert 1 <= len(lines) <= result.seconds / 0.3
    assert all("rows written" in line and "rows/s" in line for line in lines)


class NeverWaits(threading.Event):
    """A stop event that fails the test if the run ever sleeps on it."""

    def wait(self, timeout: float | None = None) -> bool:
        raise AssertionError(f"the run paused for {timeout} s")


def test_rate_zero_writes_without_pausing(tmp_path: Path) -> None:
    """Rate 0 means as fast as the database takes rows: the run never sleeps between
    transactions (how many rows per second that makes is the machine's business, measured
    in benchmarks, not here)."""
    result = run_simulator(settings(tmp_path / "edge.db", count=20_000, rate=0), stop=NeverWaits())
    assert result.rows_written == 20_000


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "Factory_7", "unknown-zone-9"])
def test_sensor_ids_are_safe_distinct_and_stable(region: str) -> None:
    fleet = build_fleet(3, region, 200)
    ids = [s.sensor_id for s in fleet]
    assert all(SAFE_ID.match(i) and i.startswith(f"{region}-") for i in ids)
    assert len(set(ids)) == 200
    assert [s.sensor_id for s in build_fleet(3, region, 5)] == ids[:5]
    assert build_fleet(3, region, 5) == fleet[:5]


@pytest.mark.parametrize("region", ["eu/west", "../etc", "has space", "tab\there", ""])
def test_unsafe_regions_are_rejected(tmp_path: Path, region: str) -> None:
    with pytest.raises(ConfigError, match="region"):
        settings(tmp_path / "edge.db", region=region)


def test_sensors_stand_near_their_region() -> None:
    dublin = build_fleet(1, "eu-west-1", 20)
    assert all(abs(s.latitude - 53.35) < 0.3 and abs(s.longitude + 6.26) < 0.3 for s in dublin)
    assert {s.original_timezone for s in dublin} == {"Europe/Dublin"}


def test_a_missing_directory_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "no-such-dir" / "edge.db"
    with pytest.raises(ConfigError, match=r"no-such-dir/edge\.db.*does not exist"):
        run_simulator(settings(db, count=1))


def test_a_file_that_is_not_sqlite_is_a_config_error_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are not the rows you are looking for\n" * 100)
    before = db.read_bytes()
    with pytest.raises(ConfigError, match=r"notes\.db.*not a database"):
        run_simulator(settings(db, count=1))
    assert db.read_bytes() == before


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        run_simulator(settings(tmp_path, count=1))


def test_cli_writes_the_rows_and_prints_a_summary(tmp_path: Path, capsys) -> None:
    db = tmp_path / "edge.db"
    assert main(["simulate", "--db", str(db), "--count", "100", "--seed", "1"]) == 0
    assert len(rows(db, "id")) == 100
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "100 rows" in out[0] and str(db) in out[0]


def test_cli_count_and_duration_together_exit_2(tmp_path: Path, capsys) -> None:
    argv = ["simulate", "--db", str(tmp_path / "x.db"), "--count", "5", "--duration", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "--count" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_count_from_the_environment_and_duration_flag_exit_2(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SENSORSTREAM_SIMULATOR_COUNT", "5")
    assert main(["simulate", "--db", str(tmp_path / "x.db"), "--duration", "1"]) == 2
    assert "count" in capsys.readouterr().err


def test_cli_bad_value_in_config_file_exit_2_naming_file_and_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("simulator:\n  count: 3\n  anomaly_probability: 1.5\n")
    assert main(["simulate", "--db", str(tmp_path / "x.db"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "line 3" in err and "anomaly_probability" in err


def test_cli_unopenable_db_exit_2(tmp_path: Path, capsys) -> None:
    db = tmp_path / "missing" / "edge.db"
    assert main(["simulate", "--db", str(db), "--count", "1"]) == 2
    assert str(db) in capsys.readouterr().err


def test_flag_beats_environment_beats_yaml(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("simulator:\n  sensors: 2\n  count: 60\n  rate: 0\n")

    def distinct_sensors(name: str, *flags: str) -> int:
        db = tmp_path / name
        argv = ["simulate", "--db", str(db), "--config", str(config), "--seed", "4", *flags]
        assert main(argv) == 0
        return len({r["sensor_id"] for r in rows(db, "sensor_id")})

    assert distinct_sensors("yaml.db") == 2
    monkeypatch.setenv("SENSORSTREAM_SIMULATOR_SENSORS", "3")
    assert distinct_sensors("env.db") == 3
    assert distinct_sensors("flag.db", "--sensors", "4") == 4


def test_db_path_can_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "from-env.db"
    monkeypatch.setenv("SENSORSTREAM_SIMULATOR_DB", str(db))
    assert main(["simulate", "--count", "7", "--rate", "0"]) == 0
    assert len(rows(db, "id")) == 7


def test_sigterm_stops_the_command_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "simulate", "--db", str(db), "--rate", "200"],
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Rows in the database: it runs, with its SIGTERM handler in place (a loaded machine
        # may take long to start Python; a signal before that would prove nothing).
        deadline = time.monotonic() + 120
        while not (db.exists() and _count(db) > 0):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the simulator wrote nothing in 120 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    written = _count(db)
    assert written > 0 and f"wrote {written} rows" in out


def _count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # created but the table is not there yet
