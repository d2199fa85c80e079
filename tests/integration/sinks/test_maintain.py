"""`sensorstream maintain` on a lake in the S3 server, while a sink-like writer keeps appending:
the tables get compacted tier by tier, every row stays exactly once (`sensorstream audit`), two
maintainers never both compact the same files, and a maintainer killed while holding a table's
lease holds up the next one only until the lease expires.

File sizes are scaled down (kilobytes, not megabytes) through the settings, so the tiers are
reached in seconds; the logic is the shipped one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from sinks.maintenance import COMPACTION_APP_ID
from tests.processes import sensorstream_cli

pytestmark = pytest.mark.integration

ROWS = 200
TODAY = date.today()
DEADLINE_S = 300.0
# Scaled-down tiers: a commit of ROWS rows is about 3 KB of Parquet; merged, about 1.6 KB per
# commit.
SMALL_SETTINGS = {
    "SENSORSTREAM_MAINTAIN_INTERVAL_S": "0.5",
    "SENSORSTREAM_MAINTAIN_OPEN_TIER_BYTES": "[16000, 64000]",
    "SENSORSTREAM_MAINTAIN_MAX_FILES_PER_TIER": "1",
    "SENSORSTREAM_MAINTAIN_CLOSED_FILE_BYTES": "4000000",
    "SENSORSTREAM_MAINTAIN_CLOSED_MIN_FILE_BYTES": "100000",
    "SENSORSTREAM_MAINTAIN_METRICS_PORT": "0",
}


@pytest.fixture
def lake(s3, s3_bucket, unique) -> tuple[str, dict[str, str]]:
    return f"s3://{s3_bucket}/maintain/{unique}", s3.storage_options()


def _env(lake: str, options: dict[str, str], **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SENSORSTREAM_", "AWS_")) or k == "SENSORSTREAM_STACK_DIR"
    }
    return {
        **env,
        **options,
        **SMALL_SETTINGS,
        "SENSORSTREAM_LAKE_URI": lake,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def readings(commit: int, day: date = TODAY) -> pa.Table:
    """Rows as the sink writes them, with the provenance columns the audit reads."""
    ids = list(range(commit * ROWS, (commit + 1) * ROWS))
    return pa.table(
        {
            "_node_id": ["node-1"] * ROWS,
            "_source_table": ["readings"] * ROWS,
            "_source_rowid": pa.array(ids, pa.int64()),
            "sensor_id": [f"s-{i % 7}" for i in ids],
            "temperature": [20.0 + (i % 100) / 10 for i in ids],
            "event_date": pa.array([day] * ROWS),
            "_ingested_at": pa.array([datetime.now(UTC)] * ROWS, pa.timestamp("us", "UTC")),
        }
    )


def append(uri: str, options: dict[str, str], commit: int, day: date = TODAY) -> None:
    """One sink commit: its own txn app id, so it never conflicts with the compaction lease."""
    write_deltalake(
        uri,
        readings(commit, day),
        mode="append",
        partition_by=["event_date"],
        storage_options=options,
        commit_properties=CommitProperties(app_transactions=[Transaction("sink-test", commit)]),
    )


class Appender:
    """A sink stand-in on a thread: a commit every few tens of milliseconds until stopped."""

    def __init__(self, uri: str, options: dict[str, str], first: int = 0) -> None:
        self.uri, self.options = uri, options
        self.next = first
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                append(self.uri, self.options, self.next)
                self.next += 1
                self._stop.wait(0.05)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Appender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self.errors, self.errors


class Maintainer:
    """`sensorstream maintain` as a real process, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sensorstream", "maintain", *args],
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(120)
        finally:
            self._file.close()
        return code


@pytest.fixture
def maintainers(tmp_path) -> Iterator[Callable[..., Maintainer]]:
    started: list[Maintainer] = []

    def start(env: dict[str, str], *args: str) -> Maintainer:
        m = Maintainer(env, tmp_path / f"maintain-{len(started)}.log", *args)
        started.append(m)
        return m

    yield start
    for m in started:
        if m.process.poll() is None:
            m.process.kill()
            m.process.wait(30)


def wait_for(condition: Callable[[], bool], what: str, *processes: Maintainer) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if condition():
            return
        for p in processes:
            if p.process.poll() is not None:
                pytest.fail(f"maintain exited {p.process.returncode} before {what}:\n{p.text()}")
        time.sleep(0.5)
    logs = "\n".join(p.text()[-3000:] for p in processes)
    pytest.fail(f"not within {DEADLINE_S:.0f} s: {what}\n{logs}")


def optimizes(uri: str, options: dict[str, str]) -> list[dict]:
    return [
        h
        for h in DeltaTable(uri, storage_options=options).history()
        if h["operation"] == "OPTIMIZE"
    ]


def file_sizes(uri: str, options: dict[str, str]) -> dict[str, list[int]]:
    """Partition (event date) -> sizes of its active files."""
    actions = pa.table(DeltaTable(uri, storage_options=options).get_add_actions(flatten=True))
    sizes: dict[str, list[int]] = {}
    for row in actions.to_pylist():
        sizes.setdefault(str(row["partition.event_date"]), []).append(row["size_bytes"])
    return sizes


def newest_file_age_s(uri: str, options: dict[str, str]) -> float:
    """Seconds since the table's newest active file was written (by the writer's clock)."""
    actions = pa.table(DeltaTable(uri, storage_options=options).get_add_actions(flatten=True))
    newest_ms = max(int(t) for t in actions["modification_time"].cast(pa.int64()).to_pylist())
    return time.time() - newest_ms / 1000


def assert_exact(lake: str, uri: str, options: dict[str, str], commits: int) -> None:
    """Every appended row once: none lost (the rowids), none twice (the audit's check)."""
    rowids = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=["_source_rowid"])[
        "_source_rowid"
    ]
    assert sorted(rowids.to_pylist()) == list(range(commits * ROWS))
    audit = sensorstream_cli(
        {**_env(lake, options)}, "audit", "--lake", lake, "--no-checkpoints", "--json"
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["exact"] is True


def removed_twice(uri: str, options: dict[str, str]) -> list[str]:
    """Files that two commits both removed: two compactions of the same files."""
    from sensorstream.lake import filesystem

    fs, root = filesystem(uri, options)
    seen: dict[str, int] = {}
    for version in range(DeltaTable(uri, storage_options=options).version() + 1):
        with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as log:
            for line in log.read().decode().splitlines():
                action = json.loads(line) if line.strip() else {}
                if "remove" in action:
                    seen[action["remove"]["path"]] = seen.get(action["remove"]["path"], 0) + 1
    return [path for path, times in seen.items() if times > 1]


def tiers(uri: str, options: dict[str, str]) -> set[str]:
    """The tiers of the table's OPTIMIZE commits so far, told apart by their target size (the
    closed tier's depends on the data)."""
    by_size = {16000: "open1", 64000: "open2"}
    sizes = (int(h["operationParameters"]["targetSize"]) for h in optimizes(uri, options))
    return {by_size.get(size, "closed") for size in sizes}


def test_compacts_while_a_sink_appends_and_every_row_stays_once(lake, maintainers):
    """Both open tiers while appends go on; once the writer has stopped and the window has
    passed, the closed tier merges the day into one file (its data is under
    closed_min_file_bytes). Every row stays once throughout.

    The open tiers alone may leave the day in one file when the writer stops, so the closed
    tier is shown by a second maintainer after one more small commit: the day then has a small
    file beside the open tiers' output whatever they did, which only the closed tier merges."""
    root, options = lake
    uri = f"{root}/raw"
    append(uri, options, 0)
    service = maintainers(_env(root, options, SENSORSTREAM_MAINTAIN_WINDOW_S="3600"))
    with Appender(uri, options, first=1) as sink:
        wait_for(
            lambda: {"open1", "open2"} <= tiers(uri, options),
            "compactions of both open tiers while the sink appends",
            service,
        )
        assert sink.next > 1
    assert service.stop() == 0
    assert "closed" not in tiers(uri, options)
    append(uri, options, sink.next)
    commits = sink.next + 1
    assert len(file_sizes(uri, options)[TODAY.isoformat()]) > 1
    # Started once the day is closed, so its first pass is the closed tier's, not an open
    # tier's (which may merge the day into one file too, when it happens to fit one bin).
    wait_for(lambda: newest_file_age_s(uri, options) > 3.0, "the day's files older than 2 s")
    closer = maintainers(_env(root, options, SENSORSTREAM_MAINTAIN_WINDOW_S="2"))
    wait_for(
        lambda: len(file_sizes(uri, options)[TODAY.isoformat()]) == 1,
        "the closed partition merged into one file",
        closer,
    )
    assert "closed" in tiers(uri, options)
    assert closer.stop() == 0
    assert_exact(root, uri, options, commits)
    assert removed_twice(uri, options) == []


def test_closed_partition_files_reach_the_minimum_size(lake):
    """A day with more data than closed_file_bytes: it splits into files of up to about that
    size, every one at least closed_min_file_bytes, none left small. `--once` compacts until
    the targets are met, then exits 0. (The day's 60 commits merge into about 36 KB of
    Parquet: the bounds are set well below that.)"""
    root, options = lake
    uri = f"{root}/raw"
    commits = 60
    for commit in range(commits):
        append(uri, options, commit, day=date(2026, 11, 23))
    env = _env(
        root,
        options,
        SENSORSTREAM_MAINTAIN_OPEN_TIER_BYTES="[2000, 8000]",
        SENSORSTREAM_MAINTAIN_CLOSED_MIN_FILE_BYTES="6000",
        SENSORSTREAM_MAINTAIN_CLOSED_FILE_BYTES="16000",
    )
    # The day is closed once its newest file is older than the window: `--once` started sooner
    # would rightly find only open-tier work (none, for files of this size) and exit.
    wait_for(lambda: newest_file_age_s(uri, options) > 2.0, "the day's files older than 1 s")
    done = sensorstream_cli(env, "maintain", "--once", "--window-s", "1", timeout=DEADLINE_S)
    assert done.returncode == 0, done.stdout + done.stderr
    sizes = file_sizes(uri, options)["2026-11-23"]
    assert len(sizes) > 1 and min(sizes) >= 6000, sizes
    assert_exact(root, uri, options, commits)


def test_two_maintainers_never_both_compact_the_same_files(lake, maintainers):
    """Two services on one lake: each table's lease lets one compact at a time; the other
    leaves the table for its next pass. No file is removed twice, no row doubles."""
    root, options = lake
    uri = f"{root}/raw"
    append(uri, options, 0)
    env = _env(root, options, SENSORSTREAM_MAINTAIN_INTERVAL_S="0.2")
    first, second = maintainers(env), maintainers(env)
    with Appender(uri, options, first=1) as sink:
        wait_for(
            lambda: (
                "left for the next pass" in first.text() + second.text()
                and len(optimizes(uri, options)) >= 6
            ),
            "the two maintainers contending for the lease",
            first,
            second,
        )
    assert first.stop() == 0 and second.stop() == 0
    assert "compacted" in first.text() + second.text()
    assert removed_twice(uri, options) == []
    assert_exact(root, uri, options, sink.next)


def test_a_killed_maintainer_holds_the_lease_until_it_expires(lake, maintainers):
    """kill -9 right after claiming a table's lease: the next maintainer leaves the table alone
    while the lease runs, then compacts it."""
    root, options = lake
    uri = f"{root}/raw"
    commits = 12
    for commit in range(commits):
        append(uri, options, commit)
    lease_s = "20"
    doomed = maintainers(
        _env(
            root,
            options,
            SENSORSTREAM_MAINTAIN_LEASE_S=lease_s,
            SENSORSTREAM_FAILPOINTS="maintenance.lease_claimed=1",
        )
    )
    assert doomed.process.wait(DEADLINE_S) == -signal.SIGKILL
    table = DeltaTable(uri, storage_options=options)
    assert table.transaction_version(COMPACTION_APP_ID) % 2 == 1  # claimed, never released
    assert optimizes(uri, options) == []
    claimed_at = time.time()
    successor = maintainers(_env(root, options, SENSORSTREAM_MAINTAIN_LEASE_S=lease_s))
    wait_for(lambda: len(optimizes(uri, options)) > 0, "the successor compacting", successor)
    assert "left for the next pass" in successor.text()
    assert time.time() - claimed_at >= float(lease_s) - 5
    assert successor.stop() == 0
    assert_exact(root, uri, options, commits)


def test_unknown_maintain_setting_exits_2(tmp_path):
    config = tmp_path / "sensorstream.yaml"
    config.write_text("maintain:\n  interval_s: 5\n  window: 60\n")
    done = sensorstream_cli({**os.environ}, "maintain", "--once", "--config", str(config))
    assert done.returncode == 2
    assert "line 3" in done.stderr and "window" in done.stderr


def test_a_missing_bucket_exits_2(s3, maintainers):
    env = _env("s3://no-such-bucket-sensorstream/lake", s3.storage_options())
    done = sensorstream_cli(env, "maintain", timeout=DEADLINE_S)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the bucket no-such-bucket-sensorstream does not exist" in done.stderr
