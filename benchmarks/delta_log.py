"""Delta log size and table open time after many commits: does a table that commits every
second for days open (and take commits) as fast as a fresh one, and how big is its `_delta_log`?

    uv run python -m benchmarks.delta_log [--commits 20000] [--retention-s 3600] [--lock FILE]

Results go to benchmarks/results/delta_log.json unless --out says otherwise.

Three tables, built in the same run, each holding the same rows in the same number of files:

- old, the baseline: a table as the earlier release created it (checkpoint interval 100, no
  retention: Delta's default of 30 days) with `--commits` one-row commits, a commit a second:
  the first `--real-commits` (300) through the earlier release's writer, the rest copies of
  the last of those (each adding a file of its own and moving the txn version to its offset)
  with a checkpoint written by delta-rs wherever the table's own `delta.checkpointInterval`
  puts one, and every log object's time set to when a commit a second would have written it.
  Real commits would take too long here: on the loaded 2-core machine the sink's writer made
  6 commits a second on a local path (an hour per table), and against the S3 server a commit
  took longer the longer the log grew.
- new: a table the product created and committed to for as long: created with the product's
  log settings (`sinks.table_log`: its checkpoint interval, the retention scaled to the run by
  `--retention-s`, 1 hour of the 5.5 simulated hours), the real commits through the sink's
  writer at the product's settings, the rest copied as above (so checkpoints at the product's
  interval), then cleaned by delta-rs as the writer does right after a checkpoint (the
  writer's cleanup itself, under real commits on S3: tests/integration/sinks/test_delta_log.py).
  (`adopt` gives an earlier table only the properties it lacks: one with interval 100 keeps it.)
- fresh: one commit adding the new table's files (the same add actions, stats included),
  then a checkpoint: the same data, no history.

Each table's `_delta_log` is uploaded object by object to the S3 server (opening reads no data
file). Then, holding `--lock FILE` (the build runs outside it): open time = `DeltaTable(uri)` +
the latest snapshot's file list (`get_add_actions`) + one txn version lookup, on the local path
and on S3, `--reps` rounds over the tables in turn, median, at two points: as built (20,000
commits: 1 commit after the new table's last checkpoint, the best case), and the worst case,
interval - 1 commits after it (the old and new tables take the commits that get there, and
the fresh table is made again of the same files). On S3, one more open of each table through a
proxy counting its requests by kind and the server's time answering them. Then `--s3-commits`
sink commits appended to each table on S3, one to each in turn, median. Also `_delta_log`
object count and bytes. Judged at the worst case: open time new / fresh (target at most 1.5)
beside old / fresh, `_delta_log` bytes new / old. The load average is recorded at the start
and while measuring.
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
OLD_CHECKPOINT_INTERVAL = 100
"""What a table of the earlier release had: delta-rs's default checkpoint interval."""
OLD_RETENTION_HOURS = 30 * 24.0
"""What a table of the earlier release had: no retention set, i.e. Delta's default."""
TARGET_OPEN_RATIO = 1.5
DELTA_DEFAULT_CHECKPOINT_INTERVAL = 100
"""delta-rs checkpoints a table that sets no `delta.checkpointInterval` every 100 commits."""


def checkpoint_due(version: int, interval: int) -> bool:
    """Whether the commit of `version` writes a checkpoint (delta-rs's post-commit hook)."""
    return (version + 1) % interval == 0


def commits_after_checkpoint(version: int, interval: int) -> int:
    """Commits an open of the table at `version` replays after its last checkpoint."""
    return (version + 1) % interval


def commits_to_worst_case(version: int, interval: int) -> int:
    """Commits to append to a table at `version` for an open to replay the most commits after
    its last checkpoint there is (`interval` - 1), without landing on a checkpoint."""
    return interval - 1 - commits_after_checkpoint(version, interval)


def table_checkpoint_interval(configuration: dict[str, str | None]) -> int:
    """The interval delta-rs checkpoints a table with this `configuration` at."""
    from sinks.table_log import CHECKPOINT_INTERVAL

    return int(configuration.get(CHECKPOINT_INTERVAL) or DELTA_DEFAULT_CHECKPOINT_INTERVAL)


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


def _target(uri: str):
    from sinks.settings import TableSettings
    from sinks.tables import TableTarget

    return TableTarget("raw", None, uri, TableSettings())


def _earlier_release_writer(uri: str, options: dict[str, str] | None):
    """The sink's writer as it commits, without giving the table the log settings it lacks
    (the earlier release did not), so a table keeps the settings it has."""
    from sinks.delta_writer import DeltaTableWriter

    return DeltaTableWriter(
        _target(uri),
        options,
        checkpoint_interval=OLD_CHECKPOINT_INTERVAL,
        log_retention_hours=OLD_RETENTION_HOURS,
        adopt_log_properties=False,
    )


def _product_writer(uri: str, options: dict[str, str] | None, retention_hours: float):
    """The sink's writer at the product's own log settings (`sinks.table_log` defaults, which
    the sink's settings default to), the retention scaled to the run."""
    from sinks.delta_writer import DeltaTableWriter
    from sinks.table_log import DEFAULT_CHECKPOINT_INTERVAL, LOG_CLEANUP_COMMITS

    return DeltaTableWriter(
        _target(uri),
        options,
        checkpoint_interval=DEFAULT_CHECKPOINT_INTERVAL,
        log_retention_hours=retention_hours,
        log_cleanup_every=LOG_CLEANUP_COMMITS,
    )


def _real_commits(uri: str, commits: int, configuration: dict[str, str], writer) -> dict[str, Any]:
    """A table created empty with `configuration` (version 0), then `commits` one-row commits
    through `writer` (version v carries offset v - 1); commit times."""
    from deltalake import write_deltalake

    write_deltalake(
        uri, _one_row(-1).slice(0, 0), partition_by=["event_date"], configuration=configuration
    )
    seconds = []
    for offset in range(commits):
        begun = time.perf_counter()
        _sink_batch(writer, offset)
        seconds.append(time.perf_counter() - begun)
    writer.close()  # the checkpoint it owes, written beside the commits, before copies follow
    return {"commits": commits, "median_commit_ms": 1000 * statistics.median(seconds)}


def _sink_batch(writer, offset: int) -> None:
    """One one-row batch as the sink lands it: the schema checked against the table as the
    writer last saw it (which the commit then goes on, `DeltaTableWriter.misfits`), then
    written."""
    row = _one_row(offset)
    if writer.misfits(row.schema):
        raise RuntimeError(f"the table does not take the benchmark's rows: {writer.target.uri}")
    writer.write(row, {(TOPIC, 0): offset})


def _commit_file(log: Path, version: int) -> Path:
    return log / f"{version:020d}.json"


def _interval_of(table: Path) -> int:
    from deltalake import DeltaTable

    return table_checkpoint_interval(DeltaTable(str(table)).metadata().configuration)


def _clone_commits(table: Path, first: int, last: int) -> list[dict[str, Any]]:
    """Commits `first`..`last` as copies of commit `first - 1` (a real sink commit): each adds
    a file of its own (a hard link to that commit's file) and moves the txn version to its
    offset, with a checkpoint by delta-rs wherever the table's own `delta.checkpointInterval`
    puts one (`checkpoint_due`), as the hook would. Returns the add actions written."""
    from deltalake import DeltaTable

    interval = _interval_of(table)
    log = table / "_delta_log"
    actions = [json.loads(line) for line in _commit_file(log, first - 1).read_text().splitlines()]
    template_path = next(a["add"]["path"] for a in actions if "add" in a)
    adds = []
    for version in range(first, last + 1):
        offset = version - 1  # version 0 created the table; version v carries offset v - 1
        lines = []
        for action in actions:
            action = json.loads(json.dumps(action))
            if "add" in action:
                add = action["add"]
                add["path"] = _clone_path(template_path, version)
                os.link(table / template_path, table / add["path"])
                stats = json.loads(add["stats"])
                for bound in ("minValues", "maxValues"):
                    stats[bound]["_kafka_offset"] = offset
                add["stats"] = json.dumps(stats)
                adds.append(add)
            if "txn" in action:
                action["txn"]["version"] = offset
            lines.append(json.dumps(action, separators=(",", ":")))
        _commit_file(log, version).write_text("\n".join(lines) + "\n")
        if checkpoint_due(version, interval):
            DeltaTable(str(table), version=version).create_checkpoint()
    return adds


def _clone_path(template_path: str, version: int) -> str:
    return template_path.replace(".snappy.parquet", f"-{version}.snappy.parquet")


def _adds(log: Path, first: int, last: int) -> list[dict[str, Any]]:
    """The add actions of commits `first`..`last`, as written."""
    adds = []
    for version in range(first, last + 1):
        for line in _commit_file(log, version).read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                adds.append(action["add"])
    return adds


def _age(log: Path, last: int, every_s: float) -> None:
    """Object times as if version v was committed (last - v) * every_s seconds ago."""
    now = time.time()
    for path in log.iterdir():
        if path.name[:20].isdigit():
            when = now - (last - int(path.name[:20])) * every_s
            os.utime(path, (when, when))


def _build(lake: Path, commits: int, real: int, retention_s: float) -> dict[str, Any]:
    """The old table (the earlier release's writer and settings) and the new one (a table the
    product created and committed to: its checkpoint interval from the start, the retention
    scaled to the run): real sink commits, then cloned ones, a commit a second. The new table
    is then cleaned by delta-rs after a checkpoint, on that timeline, just as the writer's
    cleanup at the checkpoint of the last commits would (that cleanup itself, under real
    commits on S3: tests/integration/sinks/test_delta_log.py). Returns also the new table's
    add actions (for the fresh table), read before the cleanup deletes their commits."""
    from deltalake import DeltaTable

    from sinks.table_log import CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_INTERVAL, log_properties

    old, new = lake / "old", lake / "new"
    retention_h = retention_s / 3600
    result: dict[str, Any] = {}
    for table, configuration, writer in (
        (
            old,
            {CHECKPOINT_INTERVAL: str(OLD_CHECKPOINT_INTERVAL)},
            _earlier_release_writer(str(old), None),
        ),
        (
            new,
            log_properties(DEFAULT_CHECKPOINT_INTERVAL, retention_h),
            _product_writer(str(new), None, retention_h),
        ),
    ):
        started = time.perf_counter()
        real_result = _real_commits(str(table), real, configuration, writer)
        _clone_commits(table, real + 1, commits)
        _age(table / "_delta_log", commits, 1.0)
        result[table.name] = {
            "real_commits": real_result,
            "checkpoint_interval": _interval_of(table),
            "build_seconds": time.perf_counter() - started,
        }
    adds = _adds(new / "_delta_log", 1, commits)
    DeltaTable(str(new)).cleanup_metadata()
    return {"tables": result, "new_adds": adds}


def _fresh(source: Path, fresh: Path, adds: list[dict[str, Any]]) -> None:
    """A table holding `adds` (the files of `source`, hard-linked, with their stats as
    written) in one commit, with `source`'s schema and settings, then checkpointed."""
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    table = DeltaTable(str(source))
    fresh.mkdir(parents=True)
    actions = []
    for add in adds:
        (fresh / add["path"]).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / add["path"], fresh / add["path"])
        actions.append(
            AddAction(
                add["path"],
                add["size"],
                add["partitionValues"],
                add["modificationTime"],
                True,
                add["stats"],
            )
        )
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
    tables: dict[str, tuple[str, dict[str, str] | None]],
    first: int,
    commits: int,
    retention_hours: float,
) -> dict[str, float]:
    """Sink commits appended to each uploaded table on S3, one to each in turn (so the
    machine's load falls on all alike): median milliseconds per commit. Does a long log slow
    the sink's own commits? The old table takes the earlier release's writer, the others
    (the product's settings) the product's."""
    writers = {
        name: _earlier_release_writer(*table)
        if name == "old"
        else _product_writer(*table, retention_hours)
        for name, table in tables.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in writers}
    for offset in range(first, first + commits):
        for name, writer in writers.items():
            begun = time.perf_counter()
            _sink_batch(writer, offset)
            seconds[name].append(time.perf_counter() - begun)
    for writer in writers.values():
        writer.close()
    return {name: 1000 * statistics.median(values[1:]) for name, values in seconds.items()}


def _requests_per_open(
    tables: dict[str, tuple[str, dict[str, str] | None]],
) -> dict[str, dict[str, Any]]:
    """One more open of each S3 table, through a proxy counting its requests by kind and the
    seconds the S3 server took to answer them: what an open's time on S3 is made of."""
    from benchmarks.s3_requests import S3RequestCounter

    found: dict[str, dict[str, Any]] = {}
    endpoint = next(iter(tables.values()))[1]["AWS_ENDPOINT_URL"]  # type: ignore[index]
    with S3RequestCounter(endpoint) as counter:
        for name, (uri, options) in tables.items():
            counts, seconds = counter.counts(), counter.seconds()
            opened, _, _ = _open_seconds(uri, {**(options or {}), "AWS_ENDPOINT_URL": counter.url})
            made = counter.counts() - counts
            waited = counter.seconds() - seconds
            found[name] = {
                "open_ms_through_proxy": round(1000 * opened, 1),
                "requests": dict(sorted(made.items())),
                "server_ms": {k: round(1000 * v, 1) for k, v in sorted(waited.items())},
            }
    return found


def _upload_log(local_log: Path, s3, s3_log: str, only_new: bool = False) -> None:
    """Copy a table's `_delta_log` to the S3 server (the log only: opening reads no data
    file); `only_new`: just the objects it does not hold yet, and `_last_checkpoint`."""
    import pyarrow.fs as pafs

    local = pafs.LocalFileSystem()
    if not only_new:
        pafs.copy_files(str(local_log), s3_log, source_filesystem=local, destination_filesystem=s3)
        return
    held = {i.base_name for i in s3.get_file_info(pafs.FileSelector(s3_log)) if i.is_file}
    for path in sorted(local_log.iterdir()):
        if path.name not in held or path.name == "_last_checkpoint":
            pafs.copy_files(
                str(path),
                f"{s3_log}/{path.name}",
                source_filesystem=local,
                destination_filesystem=s3,
            )


def _measure(
    places: dict[str, dict[str, tuple[str, dict[str, str] | None]]], reps: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, Any]]]:
    """`reps` rounds of opening every table at every place in turn: the seconds of each open,
    and what each table held (files, txn version)."""
    opens: dict[str, dict[str, list[float]]] = {p: {n: [] for n in t} for p, t in places.items()}
    checks: dict[str, dict[str, Any]] = {}
    for _ in range(reps):
        for place, tables in places.items():
            for name, table in tables.items():
                seconds, files, txn = _open_seconds(*table)
                opens[place][name].append(seconds)
                checks[f"{place}/{name}"] = {"files": files, "txn_version": txn}
    return opens, checks


def _position(
    label: str,
    version: int,
    intervals: dict[str, int],
    places: dict[str, dict[str, tuple[str, dict[str, str] | None]]],
    reps: int,
    sizes: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Open times of the tables at `version` (the fresh one holding the same files), their
    ratios to the fresh table's, and (on S3) the requests of one open."""
    print(f"[delta-log] opening at version {version:,} ({label})", file=sys.stderr)
    opens, checks = _measure(places, reps)
    wrong = {
        k: v
        for k, v in checks.items()
        if v["files"] != version
        or v["txn_version"] != (None if k.endswith("fresh") else version - 1)
    }
    if wrong:
        raise RuntimeError(f"tables do not hold what was committed: {wrong}")
    medians = {p: {n: statistics.median(v) for n, v in t.items()} for p, t in opens.items()}
    ratios: dict[str, float] = {}
    for place, m in medians.items():
        ratios[f"{place}_open_new_vs_fresh"] = m["new"] / m["fresh"]
        ratios[f"{place}_open_old_vs_fresh"] = m["old"] / m["fresh"]
        ratios[f"{place}_open_new_vs_old"] = m["new"] / m["old"]
    return {
        "version": version,
        "files": version,
        "commits_after_checkpoint": {
            name: commits_after_checkpoint(version, interval) if name != "fresh" else 0
            for name, interval in intervals.items()
        },
        "log": sizes,
        "open_seconds_median": medians,
        "open_seconds_all": opens,
        "ratios": ratios,
        "s3_requests_per_open": _requests_per_open(places["s3"]) if "s3" in places else None,
        "load_average_after": os.getloadavg(),
    }


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
    names = ("fresh", "new", "old")
    local = pafs.LocalFileSystem()
    positions: dict[str, dict[str, Any]] = {}
    try:
        print(f"[delta-log] building {args.commits:,} commits", file=sys.stderr)
        build = _build(lake, args.commits, args.real_commits, args.retention_s)
        adds = build.pop("new_adds")
        intervals = {n: build["tables"][n]["checkpoint_interval"] for n in ("new", "old")}
        intervals["fresh"] = intervals["new"]
        _fresh(lake / "new", lake / "fresh", adds)
        places: dict[str, dict[str, tuple[str, dict[str, str] | None]]] = {
            "local": {n: (str(lake / n), None) for n in names}
        }
        s3 = prefix = None
        if not args.no_s3:
            options, prefix = _s3_lake()
            s3 = s3_filesystem(options)
            for n in names:
                _upload_log(lake / n / "_delta_log", s3, f"{prefix}/{n}/_delta_log")
            places["s3"] = {n: (f"s3://{prefix}/{n}", options) for n in names}
        extra = commits_to_worst_case(args.commits, intervals["new"])
        s3_commits = None
        with _holding(args.lock):
            load_measured = os.getloadavg()
            sizes = {n: _log_size(local, str(lake / n / "_delta_log")) for n in names}
            positions["end_of_build"] = _position(
                "as built", args.commits, intervals, places, args.reps, sizes
            )
            if extra:
                # The worst case for the new table: as many commits after its last checkpoint
                # as its interval allows, and a fresh table of the same files.
                last = args.commits + extra
                added = {}
                for n in ("old", "new"):
                    added[n] = _clone_commits(lake / n, args.commits + 1, last)
                    if s3 is not None:
                        _upload_log(lake / n / "_delta_log", s3, f"{prefix}/{n}/_delta_log", True)
                _fresh(lake / "new", lake / "fresh-worst", adds + added["new"])
                places["local"]["fresh"] = (str(lake / "fresh-worst"), None)
                if s3 is not None:
                    _upload_log(lake / "fresh-worst" / "_delta_log", s3, f"{prefix}/fw/_delta_log")
                    places["s3"]["fresh"] = (f"s3://{prefix}/fw", places["s3"]["fresh"][1])
                sizes = {
                    n: _log_size(local, str(Path(places["local"][n][0]) / "_delta_log"))
                    for n in names
                }
                positions["worst_case"] = _position(
                    "the new table's worst case", last, intervals, places, args.reps, sizes
                )
            if not args.no_s3 and args.s3_commits:
                print(f"[delta-log] {args.s3_commits} commits each to S3", file=sys.stderr)
                s3_commits = _s3_commits(
                    places["s3"],
                    args.commits + extra,
                    args.s3_commits,
                    args.retention_s / 3600,
                )
            load_measured_after = os.getloadavg()
        if s3 is not None:
            s3.delete_dir(prefix)
    finally:
        shutil.rmtree(lake, ignore_errors=True)

    judged = positions.get("worst_case") or positions["end_of_build"]
    ratios = dict(judged["ratios"])
    if s3_commits is not None:
        ratios["s3_commit_new_vs_fresh"] = s3_commits["new"] / s3_commits["fresh"]
        ratios["s3_commit_old_vs_fresh"] = s3_commits["old"] / s3_commits["fresh"]
    built = positions["end_of_build"]["log"]
    ratios["log_bytes_new_vs_old"] = built["new"]["bytes"] / built["old"]["bytes"]
    ratios["log_objects_new_vs_old"] = built["new"]["objects"] / built["old"]["objects"]
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
            "checkpoint_interval": intervals,
            "new_retention_s": args.retention_s,
            "old_retention_hours": OLD_RETENTION_HOURS,
            "reps": args.reps,
            "worst_case_commits_appended": extra,
        },
        "build": build,
        "s3_commits": s3_commits,
        "positions": positions,
        "judged_at": "worst_case" if "worst_case" in positions else "end_of_build",
        "ratios": ratios,
        "targets": {
            place: {
                "target": f"open new / fresh <= {TARGET_OPEN_RATIO}",
                "met": ratios[f"{place}_open_new_vs_fresh"] <= TARGET_OPEN_RATIO,
            }
            for place in judged["open_seconds_median"]
        },
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, results)
    for label, position in positions.items():
        after = position["commits_after_checkpoint"]
        print(f"{label}: version {position['version']:,}, commits after checkpoint {after}")
        medians = position["open_seconds_median"]
        for n in names:
            size = position["log"][n]
            opened = ", ".join(f"{p} {1000 * medians[p][n]:.0f} ms" for p in medians)
            print(
                f"  {n:<6} _delta_log {size['objects']:>6,} objects "
                f"{size['bytes'] / 1e6:8.1f} MB ({size['commit_files']:,} commits, "
                f"{size['checkpoints']} checkpoints); open {opened}"
            )
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in position["ratios"].items()))
        if position["s3_requests_per_open"]:
            for n, found in position["s3_requests_per_open"].items():
                print(f"  s3 open of {n}: {json.dumps(found)}")
    print(", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if s3_commits is not None:
        print("sink commits to S3, median ms:", json.dumps(s3_commits))
    print(f"load average while measuring {load_measured} -> {load_measured_after}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
