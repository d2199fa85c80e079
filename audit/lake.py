"""Reading the lake for the audit: which Delta tables it holds, and their provenance columns one
event-date partition at a time, so memory follows the largest partition, not the lake.

A source row's event time decides its partition in every table, so the copies of one row (a
duplicate) and its rows in the routed tables share a partition with its row in `raw`: the
audit compares tables partition by partition and never holds a whole table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

RAW = "raw"
DEAD_LETTERS = "dlq"
NODE, TABLE, ROWID = "_node_id", "_source_table", "_source_rowid"
KEY = [NODE, TABLE, ROWID]
KAFKA = ["_kafka_topic", "_kafka_partition", "_kafka_offset"]
ROUTING_VERSION = "_routing_version"
PARTITION = "event_date"
FILE_INDEX = "_file"
DEAD_LETTER_COLUMNS = ["stage", "error", "source", "headers", *KAFKA]


class LakeNotFound(Exception):
    """The lake URI names nothing: a usage error, not a finding."""


def filesystem(lake_uri: str, options: dict[str, str]) -> tuple[pafs.FileSystem, str]:
    """A filesystem for the lake and the lake's path on it (local path or s3://bucket/prefix)."""
    parts = urlsplit(lake_uri)
    if parts.scheme in ("s3", "s3a"):
        endpoint = options.get("AWS_ENDPOINT_URL")
        fs = pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"),
            region=options.get("AWS_REGION"),
            endpoint_override=urlsplit(endpoint).netloc if endpoint else None,
            scheme=urlsplit(endpoint).scheme if endpoint else "https",
        )
        return fs, f"{parts.netloc}{parts.path}".rstrip("/")
    if parts.scheme not in ("", "file"):
        raise ValueError(f"{lake_uri}: the audit reads local paths and s3:// lakes")
    return pafs.LocalFileSystem(), (parts.path if parts.scheme else lake_uri).rstrip("/")


def discover_tables(lake_uri: str, options: dict[str, str]) -> dict[str, str]:
    """Table name (`raw`, `regional/eu-west-1`, ...) -> URI of every Delta table in the lake,
    at `<lake>/<route>` or `<lake>/<route>/<region>` (DESIGN section 8)."""
    fs, root = filesystem(lake_uri, options)
    base = lake_uri.rstrip("/")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise LakeNotFound(lake_uri)
    tables: dict[str, str] = {}
    for first in _dirs(fs, root):
        if _is_delta(fs, first):
            name = first.rsplit("/", 1)[-1]
            tables[name] = f"{base}/{name}"
            continue
        for second in _dirs(fs, first):
            if _is_delta(fs, second):
                name = "/".join(second.rsplit("/", 2)[-2:])
                tables[name] = f"{base}/{name}"
    return dict(sorted(tables.items()))


def _dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    selector = pafs.FileSelector(path, allow_not_found=True)
    return [
        i.path.rstrip("/")
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.Directory and not i.base_name.startswith(("_", "."))
    ]


def _is_delta(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory


@dataclass
class LakeTable:
    """One Delta table, opened once: its snapshot stays the same for the whole audit."""

    name: str
    uri: str
    options: dict[str, str]

    def __post_init__(self) -> None:
        from deltalake import DeltaTable

        self.delta = DeltaTable(self.uri, storage_options=self.options or None)
        self.version = self.delta.version()
        self.dataset = self.delta.to_pyarrow_dataset()
        self.columns = set(self.dataset.schema.names)
        self.files: list[str] = []

    def partitions(self) -> list[object]:
        """The event dates the table has rows in (as the partition column's values)."""
        if PARTITION not in self.columns:
            return [None]
        values = {p.get(PARTITION) for p in self.delta.partitions()}
        return sorted(values, key=lambda v: (v is None, v))

    def read(
        self,
        columns: list[str],
        partition: object = None,
        keep: Callable[[pa.Table], pa.Table] | None = None,
    ) -> pa.Table:
        """`columns` (those the table has) of one partition (None: all), each row tagged with
        the index of its file in `self.files`, to name commit versions later.

        `keep` filters each file's rows as they are read, in memory: pushing a string filter
        down to the files fails on files whose strings are stored as string views.
        """
        present = [c for c in columns if c in self.columns]
        expression = None
        if partition is not None and PARTITION in self.columns:
            scalar = pa.scalar(partition).cast(self.dataset.schema.field(PARTITION).type)
            expression = ds.field(PARTITION) == scalar
        pieces = []
        for fragment in self.dataset.get_fragments(filter=expression):
            data = fragment.to_table(schema=self.dataset.schema, columns=present)
            if keep is not None:
                data = keep(data)
            if not data.num_rows:
                continue
            index = len(self.files)
            self.files.append(fragment.path)
            tag = pa.repeat(pa.scalar(index, pa.int32()), data.num_rows)
            pieces.append(data.append_column(FILE_INDEX, tag))
        if not pieces:
            schema = pa.schema([self.dataset.schema.field(c) for c in present])
            return schema.empty_table().append_column(FILE_INDEX, pa.array([], pa.int32()))
        return pa.concat_tables(pieces, promote_options="default")

    def commit_versions(self, file_indices: set[int]) -> dict[int, int | None]:
        """The table version whose commit added each file (None: only a checkpoint has it).

        Read from the commit files of the log, newest first, until every file is found; only
        for the few files that hold duplicates.
        """
        wanted = {i: self.files[i] for i in file_indices}
        found: dict[int, int | None] = dict.fromkeys(wanted)
        fs, root = filesystem(self.uri, self.options)
        for version in range(self.version, -1, -1):
            if all(v is not None for v in found.values()):
                break
            path = f"{root}/_delta_log/{version:020d}.json"
            try:
                with fs.open_input_stream(path) as stream:
                    lines = stream.read().decode().splitlines()
            except (FileNotFoundError, OSError):
                break  # older commits were cleaned up after a checkpoint
            added = set()
            for line in lines:
                action = json.loads(line) if line.strip() else {}
                if "add" in action:
                    added.add(action["add"]["path"])
            for index, path_in_table in wanted.items():
                if found[index] is None and any(path_in_table.endswith(a) for a in added):
                    found[index] = version
        return found


def iter_tables(tables: dict[str, str], options: dict[str, str]) -> Iterator[LakeTable]:
    for name, uri in tables.items():
        yield LakeTable(name, uri, options)
