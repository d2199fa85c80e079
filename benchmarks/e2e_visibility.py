"""The separate reader of the latency benchmark: when each row becomes visible in its Delta table.

    python -m benchmarks.e2e_visibility --lake s3://bucket/prefix/lake --tables raw,emergency,...
        --out visibility.parquet [--poll 0.2]

It runs as its own process (as a Databricks reader would) and follows every table the way a
streaming Delta reader does: it waits for the next commit file, `_delta_log/<version>.json`,
and reads only the files that commit adds, never the whole table. A row is visible from the
moment its commit file can be read; that moment (the reader's wall clock when the GET returned)
is recorded with the row's identity (`_node_id`, `_source_rowid`) and its event time
(`timestamp`, which the simulator stamps when it writes the row), plus the commit's own
`commitInfo.timestamp` (the writer's clock) for comparison.

One GET of the next commit file per table per poll: deltalake 1.6's Python API has no call for
"the actions of version N" (`DeltaTable` loads a whole snapshot; `get_add_actions` lists every
file of it), so the log is read as the protocol defines it, with pyarrow's S3 client built from
the same storage options as the sink's (`sinks.landing.s3_filesystem`). Each table is followed
on a thread of its own, so a large file being read for one table does not delay noticing a
commit in another. SIGTERM ends the run: what was seen is written to `--out` (Parquet) and the
process exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROW_COLUMNS = ["_node_id", "_source_rowid", "timestamp"]
DLQ_TABLE = "dlq"  # dead letters have no reading columns: counted, not timed


class TableFollower:
    """Follows one Delta table commit by commit and collects when each row became visible."""

    def __init__(self, fs: Any, root: str, table: str) -> None:
        self.fs = fs
        self.root = root  # bucket/prefix/lake/<table>, as pyarrow's S3 filesystem names it
        self.table = table
        self.version = 0  # the next version to look for
        self.rows = 0
        self.errors: list[str] = []
        self.columns: dict[str, list[Any]] = {
            "node_id": [],
            "rowid": [],
            "event_us": [],
            "visible_us": [],
            "commit_ms": [],
            "version": [],
        }

    def _commit(self, version: int) -> bytes | None:
        try:
            with self.fs.open_input_stream(f"{self.root}/_delta_log/{version:020d}.json") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def poll(self) -> int:
        """Read every commit that appeared since the last call; the commits read."""
        read = 0
        while (data := self._commit(self.version)) is not None:
            visible = time.time()
            self._take(data, visible)
            self.version += 1
            read += 1
        return read

    def _take(self, data: bytes, visible: float) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        adds, commit_ms = [], None
        for line in data.splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                adds.append(unquote(action["add"]["path"]))
            elif "commitInfo" in action:
                commit_ms = action["commitInfo"].get("timestamp")
        for path in adds:
            location = f"{self.root}/{path}"
            if self.table == DLQ_TABLE:
                with self.fs.open_input_file(location) as f:
                    self.rows += pq.ParquetFile(f).metadata.num_rows
                continue
            rows = pq.read_table(location, filesystem=self.fs, columns=ROW_COLUMNS)
            n = rows.num_rows
            self.rows += n
            event = pc.cast(rows["timestamp"], "int64")  # microseconds since the epoch, UTC
            c = self.columns
            c["node_id"] += rows["_node_id"].to_pylist()
            c["rowid"] += rows["_source_rowid"].to_pylist()
            c["event_us"] += event.to_pylist()
            c["visible_us"] += [int(visible * 1e6)] * n
            c["commit_ms"] += [commit_ms] * n
            c["version"] += [self.version] * n

    def run(self, stop: threading.Event, poll_s: float) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # an S3 hiccup: say so, try again at the next poll
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            stop.wait(poll_s)

    def table_rows(self) -> Any:
        import pyarrow as pa

        c = self.columns
        return pa.table(
            {
                "table": pa.array([self.table] * len(c["rowid"]), pa.string()),
                "node_id": pa.array(c["node_id"], pa.string()),
                "rowid": pa.array(c["rowid"], pa.int64()),
                "event_us": pa.array(c["event_us"], pa.int64()),
                "visible_us": pa.array(c["visible_us"], pa.int64()),
                "commit_ms": pa.array(c["commit_ms"], pa.int64()),
                "version": pa.array(c["version"], pa.int64()),
            }
        )


def _root(lake: str, table: str) -> str:
    parsed = urlparse(lake)
    if parsed.scheme != "s3":
        raise SystemExit(f"--lake {lake!r}: the reader follows tables on S3 (s3://bucket/prefix)")
    return f"{parsed.netloc}{parsed.path.rstrip('/')}/{table}"


def _storage_options() -> dict[str, str]:
    keys = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return {k: os.environ[k] for k in (*keys, "AWS_SESSION_TOKEN") if os.environ.get(k)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_visibility")
    parser.add_argument("--lake", required=True)
    parser.add_argument("--tables", required=True, help="comma-separated, e.g. raw,regional/x")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between polls")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sinks.landing import s3_filesystem

    fs = s3_filesystem(_storage_options())
    followers = [TableFollower(fs, _root(args.lake, t), t) for t in args.tables.split(",")]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [
        threading.Thread(target=f.run, args=(stop, args.poll), name=f.table, daemon=True)
        for f in followers
    ]
    for thread in threads:
        thread.start()
    print("visibility reader: following " + ", ".join(f.table for f in followers), flush=True)
    while not stop.wait(10.0):
        print(
            "visibility reader: "
            + ", ".join(f"{f.table} v{f.version} {f.rows:,} rows" for f in followers),
            flush=True,
        )
    for thread in threads:
        thread.join(30)
    rows = pa.concat_tables([f.table_rows() for f in followers])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, args.out)
    summary = {
        f.table: {"versions": f.version, "rows": f.rows, "errors": f.errors[:5]} for f in followers
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"visibility reader: wrote {rows.num_rows:,} rows to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
