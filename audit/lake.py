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

import pyarrow as pa
import pyarrow.dataset as ds

from sensorstream.lake import LakeNotFound, discover_tables, filesystem

RAW = "raw"
DEAD_LETTERS = "dlq"
NODE, TABLE, ROWID = "_node_id", "_source_table", "_source_rowid"
KEY = [NODE, TABLE, ROWID]
KAFKA = ["_kafka_topic", "_kafka_partition", "_kafka_offset"]
ROUTING_VERSION = "_routing_version"
PARTITION = "event_date"
FILE_INDEX = "_file"
DEAD_LETTER_COLUMNS = ["stage", "error", "source", "headers", *KAFKA]

__all__ = ["LakeNotFound", "LakeTable", "discover_tables", "filesystem", "iter_tables"]


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
