"""Compaction, vacuum and checkpoints on real tables (local path and the S3 server), with
sinks appending meanwhile, and the `compact`/`vacuum` commands with their exit codes."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)

from infra.local_stack.object_store import s3_filesystem
from sensorstream.cli import main
from sensorstream.errors import ConfigError, PipelineError
from sinks import maintenance
from sinks.maintenance import (
    checkpoint,
    compact,
    compaction_lease,
    vacuum,
)

pytestmark = pytest.mark.integration

ROWS = 5


@pytest.fixture(params=["local", "s3"])
def table(request, tmp_path, unique) -> tuple[str, dict[str, str] | None]:
    """(uri, storage_options) of a table that does not exist yet."""
    if request.param == "local":
        return str(tmp_path / "table"), None
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/maintenance/{unique}", s3.storage_options()


def rows(commit: int) -> pa.Table:
    ids = list(range(commit * ROWS, (commit + 1) * ROWS))
    return pa.table(
        {
            "seq": pa.array(ids, pa.int64()),
            "temperature": pa.array([20.0 + i / 10 for i in ids]),
            "event_date": pa.array(["2026-11-23"] * ROWS),
        }
    )


def append(target: str | DeltaTable, options, commit: int, hook: bool = True) -> None:
    """One sink-like commit: schema merge and a txn action per commit."""
    write_deltalake(
        target,
        rows(commit),
        mode="append",
        partition_by=["event_date"],
        schema_mode="merge",
        storage_options=options if isinstance(target, str) else None,
        commit_properties=CommitProperties(app_transactions=[Transaction("sink-test", commit)]),
        post_commithook_properties=PostCommitHookProperties(create_checkpoint=hook),
    )


def seqs(uri: str, options) -> list[int]:
    return sorted(DeltaTable(uri, storage_options=options).to_pyarrow_table()["seq"].to_pylist())


def test_compact_while_a_sink_appends(table):
    uri, options = table
    seeded, appended = 20, 30
    for commit in range(seeded):
        append(uri, options, commit)
    started = threading.Event()
    commit_times: list[float] = []
    errors: list[BaseException] = []

    def sink() -> None:
        try:
            for commit in range(seeded, seeded + appended):
                append(uri, options, commit)
                commit_times.append(time.monotonic())
                if commit == seeded + 2:
                    started.set()
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=sink)
    thread.start()
    started.wait(60)
    begin = time.monotonic()
    result = compact(uri, options)
    end = time.monotonic()
    thread.join(120)
    assert not errors

    during = sum(begin < t < end for t in commit_times)
    dt = DeltaTable(uri, storage_options=options)
    optimize = next(h for h in dt.history() if h["operation"] == "OPTIMIZE")
    print(
        f"\ncompact: {result.summary()}; {during} sink commits landed during it; OPTIMIZE read "
        f"version {optimize['readVersion']}, committed as {optimize['version']}"
    )
    assert during > 0  # the two really overlapped
    assert result.files_removed >= seeded
    assert result.version >= optimize["version"]  # the table's version after compacting
    assert seqs(uri, options) == list(range((seeded + appended) * ROWS))  # none lost, none twice
    assert len(dt.file_uris()) < seeded + appended
    assert dt.transaction_version("sink-test") == seeded + appended - 1


def test_concurrent_compactions_never_duplicate_rows(tmp_path):
    """delta-rs alone commits both OPTIMIZEs and doubles the rows; the lease lets one run."""
    uri = str(tmp_path / "table")
    for commit in range(60):
        append(uri, None, commit)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(compact(uri, None))
        except PipelineError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    print(f"\noutcomes: {outcomes}")
    assert seqs(uri, None) == list(range(60 * ROWS))
    assert len(DeltaTable(uri).file_uris()) == 1


def test_a_held_lease_refuses_and_an_expired_one_is_taken_over(tmp_path, monkeypatch):
    # The lease's clock stands still unless moved, so a slow machine cannot expire it early.
    now_ms = [int(time.time() * 1000)]
    monkeypatch.setattr("sinks.maintenance._now_ms", lambda: now_ms[0])
    uri = str(tmp_path / "table")
    for commit in range(3):
        append(uri, None, commit)
    crashed = compaction_lease(uri, None, lease_s=0.5)
    crashed.__enter__()  # and never exits, like a killed process
    with pytest.raises(PipelineError, match="another compaction"):
        compact(uri, None)
    now_ms[0] += 600  # past the lease
    assert compact(uri, None).files_removed == 3
    append(uri, None, 3)
    with compaction_lease(uri, None), pytest.raises(PipelineError, match="another compaction"):
        compact(uri, None)
    assert compact(uri, None).files_removed == 2  # released on exit
    assert seqs(uri, None) == list(range(4 * ROWS))
    crashed.__exit__(None, None, None)  # releases nothing: the lease is no longer its own


def test_vacuum_guards_short_retention_then_deletes_replaced_files(table):
    uri, options = table
    for commit in range(4):
        append(uri, options, commit)
    compact(uri, options)
    with pytest.raises(ConfigError, match="168"):
        vacuum(uri, options, retention_hours=1)
    assert vacuum(uri, options) == []  # the replaced files are minutes old, not a week
    listed = vacuum(uri, options, retention_hours=0, dry_run=True, allow_short_retention=True)
    assert len(listed) == 4
    assert data_files(uri, options) == 5
    deleted = vacuum(uri, options, retention_hours=0, allow_short_retention=True)
    assert len(deleted) == 4
    assert data_files(uri, options) == 1  # the compacted file only
    assert seqs(uri, options) == list(range(4 * ROWS))


def listing(uri: str, options, recursive: bool = False) -> list[str]:
    """Object names under `uri`, relative to it."""
    if options is None:
        fs, root = pafs.LocalFileSystem(), uri
    else:
        fs = s3_filesystem(
            options["AWS_ENDPOINT_URL"],
            options["AWS_ACCESS_KEY_ID"],
            options["AWS_SECRET_ACCESS_KEY"],
            options["AWS_REGION"],
        )
        root = uri.removeprefix("s3://")
    selector = pafs.FileSelector(root, recursive=recursive)
    return sorted(i.path[len(root) + 1 :] for i in fs.get_file_info(selector) if i.is_file)


def data_files(uri: str, options) -> int:
    names = listing(uri, options, recursive=True)
    return sum(n.endswith(".parquet") and not n.startswith("_delta_log/") for n in names)


def checkpoint_files(uri: str, options) -> list[str]:
    names = listing(f"{uri}/_delta_log", options)
    return [n for n in names if n.endswith(".checkpoint.parquet")]


def open_seconds(uri: str, options) -> float:
    start = time.perf_counter()
    DeltaTable(uri, storage_options=options).version()
    return time.perf_counter() - start


@pytest.mark.slow
def test_sink_writes_a_checkpoint_every_100_commits(table):
    """The sink sets delta.checkpointInterval when it creates a table and checkpoints at it
    (beside its commits), so a table opens fast after thousands of commits."""
    import pyarrow as pa

    from sinks.delta_writer import DeltaTableWriter
    from sinks.settings import TableSettings
    from sinks.tables import TableTarget

    uri, options = table
    writer = DeltaTableWriter(
        TableTarget("raw", None, uri, TableSettings()), options, checkpoint_interval=100
    )
    for commit in range(250):
        batch = pa.table(
            {
                "seq": pa.array([commit], pa.int64()),
                "_kafka_topic": pa.array(["t"], pa.string()),
                "_kafka_partition": pa.array([0], pa.int32()),
                "_kafka_offset": pa.array([commit], pa.int64()),
                "event_date": pa.array([date(2026, 11, 23)], pa.date32()),
            }
        )
        assert writer.write(batch, {("t", 0): commit}) == 1
    writer.close()
    assert checkpoint_files(uri, options) == [
        "00000000000000000099.checkpoint.parquet",
        "00000000000000000199.checkpoint.parquet",
    ]
    opened = DeltaTable(uri, storage_options=options)
    assert opened.version() == 249
    assert opened.to_pyarrow_table().num_rows == 250
    print(
        f"\nopening a 250-commit table with checkpoints: {open_seconds(uri, options) * 1000:.0f} ms"
    )


def test_checkpoint_writes_one_at_the_latest_version(tmp_path):
    uri = str(tmp_path / "table")
    for commit in range(5):
        append(uri, None, commit, hook=False)
    assert checkpoint(uri, None) == 4
    assert checkpoint_files(uri, None) == ["00000000000000000004.checkpoint.parquet"]


def test_a_path_without_a_table_is_a_config_error(tmp_path, s3, s3_bucket, unique):
    (tmp_path / "empty").mkdir()
    for uri, options in [
        (str(tmp_path / "empty"), None),
        (str(tmp_path / "missing"), None),
        (f"s3://{s3_bucket}/nothing-{unique}", s3.storage_options()),
    ]:
        with pytest.raises(ConfigError, match="not a Delta table") as raised:
            compact(uri, options)
        assert uri in str(raised.value)
    with pytest.raises(ConfigError, match="bucket does not exist"):
        vacuum(f"s3://no-such-bucket-{unique}/t", s3.storage_options())


def test_an_unreachable_store_fails_after_bounded_retries(monkeypatch):
    monkeypatch.setattr(maintenance, "ATTEMPTS", 2)
    options = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_REGION": "us-east-1",
    }
    start = time.monotonic()
    with pytest.raises(PipelineError, match="gave up after 2 attempts") as raised:
        checkpoint("s3://bucket/table", options)
    assert "\x1b[" not in str(raised.value)
    print(f"\nunreachable: gave up after {time.monotonic() - start:.1f} s: {raised.value}")


def write_config(tmp_path: Path, s3) -> Path:
    config = tmp_path / "sensorstream.yaml"
    config.write_text(
        f"aws_endpoint_url: {s3.endpoint_url}\n"
        f"aws_region: {s3.region}\n"
        f"aws_access_key_id: {s3.access_key}\n"
        f"aws_secret_access_key: {s3.secret_key}\n",
        encoding="utf-8",
    )
    return config


def test_compact_and_vacuum_commands(tmp_path, s3, s3_bucket, unique, capsys):
    uri = f"s3://{s3_bucket}/cli/{unique}"
    for commit in range(3):
        append(uri, s3.storage_options(), commit)
    config = str(write_config(tmp_path, s3))

    assert main(["compact", uri, "--config", config]) == 0
    assert "compacted 3 files into 1" in capsys.readouterr().out
    assert main(["vacuum", uri, "--config", config, "--retention-hours", "1"]) == 2
    assert "--allow-short-retention" in capsys.readouterr().err
    argv = ["vacuum", uri, "--config", config, "--retention-hours", "0", "--dry-run"]
    assert main([*argv, "--allow-short-retention"]) == 0
    out = capsys.readouterr().out
    assert out.count(".parquet") == 3 and "would delete 3 files" in out
    assert main(["vacuum", uri, "--config", config]) == 0
    assert "deleted 0 files" in capsys.readouterr().out
    assert main(["compact", str(tmp_path / "nowhere"), "--config", config]) == 2
    assert "not a Delta table" in capsys.readouterr().err


def test_compact_command_with_the_store_down(monkeypatch, capsys):
    monkeypatch.setattr(maintenance, "ATTEMPTS", 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert main(["compact", "s3://bucket/table"]) == 1
    assert "gave up after 2 attempts" in capsys.readouterr().err
