"""Delta log size and table open time after many commits: does a table that commits every
second for days open (and take commits) as fast as a fresh one, and how big is its `_delta_log`?

    uv run python -m benchmarks.delta_log [--commits 20000] [--retention-s 3600] [--lock FILE]

Results go to benchmarks/results/delta_log.json unless --out says otherwise.

Three tables, built in the same run, each holding the same rows in the same number of files:

- old, the baseline: a table as the earlier release created it (checkpoint interval 100, no
  retention: Delta's default of 30 days) with `--commits` one-row commits, a commit a second:
  the first `--real-commits` (300) through the sink's writer, the rest copies of the last of
  those (each adding a file of its own and moving the txn version to its offset) with a
  checkpoint written by delta-rs at every 100th version, and every log object's time set to
  when a commit a second would have written it. Real commits would take too long here: on
  the loaded 2-core machine the sink's writer made 6 commits a second on a local path (an
  hour per table), and against the S3 server a commit took longer the longer the log grew.
- new: a copy of the old table given the product's log settings by the sink's own code
  (`sinks.table_log.adopt`), with the retention scaled to the run (`--retention-s`, 1 hour of
  the 5.5 simulated hours), then cleaned by delta-rs as the post-commit hook does right after
  a checkpoint (the hook itself, under real commits on S3:
  tests/integration/sinks/test_delta_log.py).
- fresh: one commit adding the new table's files, then a checkpoint: the same data, no history.

Each table's `_delta_log` is uploaded object by object to the S3 server (opening reads no data
file). Then, holding `--lock FILE` (the build runs outside it): open time = `DeltaTable(uri)` +
the latest snapshot's file list (`get_add_actions`) + one txn version lookup, on the local path
and on S3, `--reps` rounds over the tables in turn, median; and `--s3-commits` sink commits
appended to each table on S3, one to each in turn, median. Also `_delta_log` object count and
bytes. Judged: open time new / fresh (target at most 1.5) beside old / fresh, `_delta_log`
bytes new / old. The load average is recorded at the start and while measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks import harness

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "delta_log.json"
TOPIC = "bench.raw"
OLD_RETENTION_HOURS = 30 * 24.0
"""What a table of the earlier release had: no retention set, i.e. Delta's default."""
TARGET_OPEN_RATIO = 1.5


def _one_row(offset: int):
    import pyarrow as pa

    return pa.table(
        {
            "sensor_id": pa.array([f"sensor-{offset % 20:02d}"], pa.string()),
            "value": pa.array([float(offset)], pa.float64()),
            "_kafka_topic": pa.array([TOPIC], pa.string()),
            "_kafka_partition": pa.array([0], pa.int32()),
            "_kafka_offset": pa.array([offset], pa.int64()),
            "event_date": pa.array([date(2026, 11, 23)], pa.date32()),
        }
    )


def _writer(uri: str, options: dict[str, str] | None, retention_hours: float, adopt: bool = True):
    from sinks.delta_writer import DeltaTableWriter
    from sinks.settings import TableSettings
    from sinks.tables import TableTarget

    return DeltaTableWriter(
        TableTarget("raw", None, uri, TableSettings()),
        options,
        checkpoint_interval=100,
        log_retention_hours=retention_hours,
        adopt_log_properties=adopt,
    )


def _earlier_release_writer(uri: str, options: dict[str, str] | None):
    """The sink's writer as it commits, without giving the table the log settings it lacks
    (the earlier release did not), so a table keeps the settings it has."""
    return _writer(uri, options, OLD_RETENTION_HOURS, adopt=False)


def _real_commits(uri: str, commits: int) -> dict[str, Any]:
    """`commits` one-row commits through the sink's writer to a table as the earlier release
    created it (checkpoint interval only: Delta's default retention of 30 days); commit times."""
    from deltalake import write_deltalake

    write_deltalake(
        uri,
        _one_row(-1).slice(0, 0),
        partition_by=["event_date"],
        configuration={"delta.checkpointInterval": "100"},
    )
    writer = _earlier_release_writer(uri, None)
    seconds = []
    for offset in range(commits):
        begun = time.perf_counter()
        writer.write(_one_row(offset), {(TOPIC, 0): offset})
        seconds.append(time.perf_counter() - begun)
    return {"commits": commits, "median_commit_ms": 1000 * statistics.median(seconds)}


def _commit_file(log: Path, version: int) -> Path:
    return log / f"{version:020d}.json"


def _clone_commits(table: Path, first: int, last: int) -> None:
    """Commits `first`..`last` as copies of commit `first - 1` (a real sink commit): each adds
    a file of its own (a hard link to that commit's file) and moves the txn version to its
    offset, with a checkpoint by delta-rs wherever (v + 1) % 100 == 0, as the hook would."""
    from deltalake import DeltaTable

    log = table / "_delta_log"
    actions = [json.loads(line) for line in _commit_file(log, first - 1).read_text().splitlines()]
    template_path = next(a["add"]["path"] for a in actions if "add" in a)
    for version in range(first, last + 1):
        offset = version - 1  # version 0 created the table; version v carries offset v - 1
        lines = []
        for action in actions:
            action = json.loads(json.dumps(action))
            if "add" in action:
                add = action["add"]
                add["path"] = template_path.replace(".snappy.parquet", f"-{version}.snappy.parquet")
                os.link(table / template_path, table / add["path"])
                stats = json.loads(add["stats"])
                for bound in ("minValues", "maxValues"):
                    stats[bound]["_kafka_offset"] = offset
                add["stats"] = json.dumps(stats)
            if "txn" in action:
                action["txn"]["version"] = offset
            lines.append(json.dumps(action, separators=(",", ":")))
        _commit_file(log, version).write_text("\n".join(lines) + "\n")
        if (version + 1) % 100 == 0:
            DeltaTable(str(table), version=version).create_checkpoint()


def _age(log: Path, last: int, every_s: float) -> None:
    """Object times as if version v was committed (last - v) * every_s seconds ago."""
    now = time.time()
    for path in log.iterdir():
        if path.name[:20].isdigit():
            when = now - (last - int(path.name[:20])) * every_s
            os.utime(path, (when, when))


def _build(lake: Path, commits: int, real: int, retention_s: float) -> dict[str, Any]:
    """The old table (real sink commits, then cloned ones, a commit a second), and the new
    table: a copy of it given the product's settings and cleaned by delta-rs after a
    checkpoint, on that timeline, just as the post-commit hook of the commit landing on the
    next checkpoint version would (the hook itself: tests/integration/sinks/test_delta_log.py)."""
    from deltalake import DeltaTable

    from sinks.table_log import adopt, log_properties

    old, new = lake / "old", lake / "new"
    started = time.perf_counter()
    real_result = _real_commits(str(old), real)
    _clone_commits(old, real + 1, commits)
    _age(old / "_delta_log", commits, 1.0)
    built_s = time.perf_counter() - started
    shutil.copytree(old, new, copy_function=os.link)  # hard links keep the object times
    table = DeltaTable(str(new))
    adopt(table, log_properties(100, retention_s / 3600))
    table.cleanup_metadata()
    return {"real_commits": real_result, "build_seconds": built_s}


def _fresh_from(source: Path, fresh: Path) -> None:
    """A table holding `source`'s files (hard links) in one commit, then checkpointed."""
    import pyarrow as pa
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    table = DeltaTable(str(source))
    adds = pa.table(table.get_add_actions(flatten=True))
    fresh.mkdir(parents=True)
    actions = []
    for path, size, mtime, records, day in zip(
        adds["path"].to_pylist(),
        adds["size_bytes"].to_pylist(),
        adds["modification_time"].to_pylist(),
        adds["num_records"].to_pylist(),
        adds["partition.event_date"].to_pylist(),
        strict=True,
    ):
        (fresh / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / path, fresh / path)
        stats = json.dumps({"numRecords": records})
        actions.append(AddAction(path, size, {"event_date": day.isoformat()}, mtime, True, stats))
    created = DeltaTable.create(
        str(fresh),
        table.schema(),
        partition_by=["event_date"],
        configuration=table.metadata().configuration,
    )
    created.create_write_transaction(
        actions, mode="append", schema=table.schema(), partition_by=["event_date"]
    )
    DeltaTable(str(fresh)).create_checkpoint()


def _open_seconds(uri: str, options: dict[str, str] | None) -> tuple[float, int, int | None]:
    from deltalake import DeltaTable

    from sinks.tables import app_id

    started = time.perf_counter()
    table = DeltaTable(uri, storage_options=options)
    files = table.get_add_actions().num_rows
    txn = table.transaction_version(app_id(TOPIC, 0))
    return time.perf_counter() - started, files, txn


def _log_size(fs, root: str) -> dict[str, int]:
    import pyarrow.fs as pafs

    infos = [i for i in fs.get_file_info(pafs.FileSelector(root)) if i.is_file]
    names = [i.base_name for i in infos]
    return {
        "objects": len(infos),
        "bytes": sum(i.size for i in infos),
        "commit_files": sum(n.endswith(".json") for n in names),
        "checkpoints": sum(n.endswith(".checkpoint.parquet") for n in names),
    }


def _s3_lake() -> tuple[dict[str, str], str]:
    """The local stack's S3 storage options and a prefix of this run's own in its bucket."""
    from infra.local_stack.stack import LocalStack
    from sensorstream.settings import ConnectionSettings

    stack = LocalStack()
    connection = ConnectionSettings(**{k.lower(): v for k, v in stack.exports().items()})
    return (
        connection.storage_options(),
        f"{stack.settings.s3_bucket}/bench-delta-log/{uuid.uuid4().hex[:8]}",
    )


def _s3_commits(
    tables: dict[str, tuple[str, dict[str, str] | None]], first: int, commits: int
) -> dict[str, float]:
    """Sink commits appended to each uploaded table on S3, one to each in turn (so the
    machine's load falls on all alike): median milliseconds per commit. Does a long log slow
    the sink's own commits?"""
    writers = {name: _earlier_release_writer(*table) for name, table in tables.items()}
    seconds: dict[str, list[float]] = {name: [] for name in writers}
    for offset in range(first, first + commits):
        for name, writer in writers.items():
            begun = time.perf_counter()
            writer.write(_one_row(offset), {(TOPIC, 0): offset})
            seconds[name].append(time.perf_counter() - begun)
    return {name: 1000 * statistics.median(values[1:]) for name, values in seconds.items()}


@contextlib.contextmanager
def _holding(lock: Path | None):
    """The shared benchmark lock, for the phases that measure (the build only commits)."""
    if lock is None:
        yield
        return
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delta_log")
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument(
        "--real-commits", type=int, default=300, help="of them through the sink's writer"
    )
    parser.add_argument("--retention-s", type=float, default=3600.0)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument(
        "--s3-commits", type=int, default=20, help="sink commits to each table on S3 (0: none)"
    )
    parser.add_argument(
        "--lock", type=Path, help="hold an flock on this file while measuring (not building)"
    )
    parser.add_argument("--no-s3", action="store_true", help="measure the local path only")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import pyarrow.fs as pafs

    from sinks.landing import s3_filesystem

    started = time.perf_counter()
    load_before = os.getloadavg()
    lake = Path(tempfile.mkdtemp(prefix="delta-log-"))
    try:
        print(f"[delta-log] building {args.commits:,} commits", file=sys.stderr)
        build = _build(lake, args.commits, args.real_commits, args.retention_s)
        _fresh_from(lake / "new", lake / "fresh")
        names = ("fresh", "new", "old")
        local = pafs.LocalFileSystem()
        places: dict[str, dict[str, tuple[str, dict[str, str] | None]]] = {
            "local": {n: (str(lake / n), None) for n in names}
        }
        sizes = {n: _log_size(local, str(lake / n / "_delta_log")) for n in names}
        s3_commits = None
        if not args.no_s3:
            options, prefix = _s3_lake()
            s3 = s3_filesystem(options)
            for n in names:  # the log only: opening a table reads no data file
                pafs.copy_files(
                    str(lake / n / "_delta_log"),
                    f"{prefix}/{n}/_delta_log",
                    source_filesystem=local,
                    destination_filesystem=s3,
                )
            places["s3"] = {n: (f"s3://{prefix}/{n}", options) for n in names}

        opens: dict[str, dict[str, list[float]]] = {p: {n: [] for n in names} for p in places}
        checks: dict[str, dict[str, Any]] = {}
        with _holding(args.lock):
            load_measured = os.getloadavg()
            for _ in range(args.reps):
                for place, tables in places.items():
                    for n in names:
                        seconds, files, txn = _open_seconds(*tables[n])
                        opens[place][n].append(seconds)
                        checks[f"{place}/{n}"] = {"files": files, "txn_version": txn}
            if not args.no_s3 and args.s3_commits:
                print(f"[delta-log] {args.s3_commits} commits each to S3", file=sys.stderr)
                s3_commits = _s3_commits(places["s3"], args.commits, args.s3_commits)
            load_measured_after = os.getloadavg()
        wrong = {
            k: v
            for k, v in checks.items()
            if v["files"] != args.commits
            or v["txn_version"] != (None if k.endswith("fresh") else args.commits - 1)
        }
        if wrong:
            raise RuntimeError(f"tables do not hold what was committed: {wrong}")
        if not args.no_s3:
            s3.delete_dir(prefix)
    finally:
        shutil.rmtree(lake, ignore_errors=True)

    medians = {p: {n: statistics.median(v) for n, v in t.items()} for p, t in opens.items()}
    ratios: dict[str, float] = {}
    for place, m in medians.items():
        ratios[f"{place}_open_new_vs_fresh"] = m["new"] / m["fresh"]
        ratios[f"{place}_open_old_vs_fresh"] = m["old"] / m["fresh"]
        ratios[f"{place}_open_new_vs_old"] = m["new"] / m["old"]
    if s3_commits is not None:
        ratios["s3_commit_new_vs_fresh"] = s3_commits["new"] / s3_commits["fresh"]
        ratios["s3_commit_old_vs_fresh"] = s3_commits["old"] / s3_commits["fresh"]
    ratios["log_bytes_new_vs_old"] = sizes["new"]["bytes"] / sizes["old"]["bytes"]
    ratios["log_objects_new_vs_old"] = sizes["new"]["objects"] / sizes["old"]["objects"]
    results = {
        "benchmark": "delta_log",
        "machine": harness.machine_info(),
        "load_average": {
            "before_build": load_before,
            "measuring_start": load_measured,
            "measuring_end": load_measured_after,
        },
        "lock": str(args.lock) if args.lock else None,
        "params": {
            "commits": args.commits,
            "rows_per_commit": 1,
            "checkpoint_interval": 100,
            "new_retention_s": args.retention_s,
            "old_retention_hours": OLD_RETENTION_HOURS,
            "reps": args.reps,
        },
        "build": build,
        "s3_commits": s3_commits,
        "log": sizes,
        "open_seconds_median": medians,
        "open_seconds_all": opens,
        "tables": checks,
        "ratios": ratios,
        "targets": {
            place: {
                "target": f"open new / fresh <= {TARGET_OPEN_RATIO}",
                "met": ratios[f"{place}_open_new_vs_fresh"] <= TARGET_OPEN_RATIO,
            }
            for place in medians
        },
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    for n in names:
        size = sizes[n]
        opened = ", ".join(f"{p} {1000 * medians[p][n]:.0f} ms" for p in medians)
        print(
            f"{n:<6} _delta_log {size['objects']:>6,} objects {size['bytes'] / 1e6:8.1f} MB "
            f"({size['commit_files']:,} commits, {size['checkpoints']} checkpoints); "
            f"open {opened}"
        )
    print(", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if s3_commits is not None:
        print("sink commits to S3, median ms:", json.dumps(s3_commits))
    print(f"load average while measuring {load_measured} -> {load_measured_after}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
