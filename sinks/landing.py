"""The optional Auto Loader landing area: append-only Parquet files with deterministic names.

Auto Loader must never read the Delta tables' data files (failed writes and compaction leave
files there that are not part of the table, DESIGN section 8). Teams that want it get
`<lake>/landing/<route>/event_date=<date>/<topic>+<partition>+<startOffset>.parquet` instead:

* The name is derived from the records alone, so a batch written again after a crash or a retry
  overwrites the same objects with the same bytes, and Auto Loader ingests each record once.
* Every file appears whole: a single PUT on S3, a temp file renamed into place on a local path
  (the temp name starts with a dot, which Spark and Auto Loader skip).
* A batch is cut into runs of consecutive records (in offset order) with the same event_date,
  one file per run, written in offset order. A batch in time order gives one file per date; a
  batch whose dates interleave (late data) gives more files, but the landed records then always
  form a prefix of the partition's offsets, so `last_landed_offset` is an exact resume point: a
  sink that crashed mid-batch neither skips nor repeats a record.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

OFFSET_DIGITS = 20  # 2**63 has 19 digits
NULL_DATE = "__HIVE_DEFAULT_PARTITION__"  # how Spark names the partition of a null value


def _option(options: dict[str, str], key: str) -> str | None:
    """object_store accepts upper- and lower-case keys; so does this."""
    return options.get(key) or options.get(key.lower())


def s3_filesystem(storage_options: dict[str, str] | None) -> pafs.S3FileSystem:
    """The pyarrow twin of the object_store client deltalake builds from the same options."""
    options = storage_options or {}
    kwargs: dict = {}
    endpoint = _option(options, "AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if _option(options, "AWS_REGION"):
        kwargs["region"] = _option(options, "AWS_REGION")
    if _option(options, "AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = _option(options, "AWS_ACCESS_KEY_ID")
        kwargs["secret_key"] = _option(options, "AWS_SECRET_ACCESS_KEY")
        kwargs["session_token"] = _option(options, "AWS_SESSION_TOKEN")
    return pafs.S3FileSystem(connect_timeout=5, request_timeout=30, **kwargs)


def _utc_microseconds(table: pa.Table) -> pa.Table:
    """Timestamps as microseconds in UTC: Databricks rejects nanoseconds, and event time in
    this pipeline is UTC (a naive timestamp is one without its zone attached)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = pc.cast(column, pa.timestamp("us", tz=field.type.tz or "UTC"), safe=False)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _runs(dates: list) -> list[tuple[int, int]]:
    """(start, stop) row ranges of consecutive equal values."""
    runs, start = [], 0
    for i in range(1, len(dates) + 1):
        if i == len(dates) or dates[i] != dates[start]:
            runs.append((start, i))
            start = i
    return runs


class LandingWriter:
    """Writes a sink's batches to `<lake_uri>/landing/` on a local path or on S3."""

    def __init__(self, lake_uri: str, storage_options: dict[str, str] | None = None) -> None:
        parsed = urlparse(lake_uri)
        if parsed.scheme in ("s3", "s3a"):
            self._fs: pafs.FileSystem = s3_filesystem(storage_options)
            self._root = f"{parsed.netloc}{parsed.path}".rstrip("/") + "/landing"
            self._uri_prefix = "s3://"
        elif parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme == "file" else lake_uri)
            self._fs = pafs.LocalFileSystem()
            self._root = str(path.resolve() / "landing")
            self._uri_prefix = ""
        else:
            raise ValueError(f"{lake_uri}: the landing area supports local paths and s3:// only")

    @property
    def _local(self) -> bool:
        return isinstance(self._fs, pafs.LocalFileSystem)

    def write(self, route: str, topic: str, partition: int, table: pa.Table) -> list[str]:
        """Land the records of one topic-partition; returns the files written, in offset order.

        `table` holds the sink's columns, including `_kafka_offset` and `event_date`; the date
        goes into the directory name (Hive style) rather than into the file.
        """
        if table.num_rows == 0:
            return []
        if "_kafka_partition" in table.column_names:
            partitions = set(table.column("_kafka_partition").unique().to_pylist())
            if partitions != {partition}:
                raise ValueError(f"landing {topic}+{partition}: batch holds {partitions}")
        data = _utc_microseconds(table.take(pc.sort_indices(table.column("_kafka_offset"))))
        dates = data.column("event_date").to_pylist()
        offsets = data.column("_kafka_offset")
        body = data.drop_columns(["event_date"])
        written = []
        for start, stop in _runs(dates):
            date = NULL_DATE if dates[start] is None else str(dates[start])
            name = f"{topic}+{partition}+{offsets[start].as_py():0{OFFSET_DIGITS}d}.parquet"
            path = f"{self._root}/{route}/event_date={date}/{name}"
            self._put(path, body.slice(start, stop - start))
            written.append(self._uri_prefix + path)
        return written

    def _put(self, path: str, table: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(
            table,
            buffer,
            compression="snappy",
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
            use_deprecated_int96_timestamps=False,
        )
        data = buffer.getvalue()
        if not self._local:
            with self._fs.open_output_stream(path) as out:  # one PUT: all or nothing
                out.write(data)
            return
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)

    def last_landed_offset(self, route: str, topic: str, partition: int) -> int | None:
        """The highest `_kafka_offset` landed for `topic`/`partition` on `route`, or None.

        Files hold disjoint offset ranges landed in order, so the file with the highest start
        offset holds the highest offset; only its Parquet footer is read.
        """
        prefix = f"{topic}+{partition}+"
        selector = pafs.FileSelector(f"{self._root}/{route}", recursive=True, allow_not_found=True)
        latest: tuple[int, str] | None = None
        for info in self._fs.get_file_info(selector):
            name = info.base_name
            if not (info.is_file and name.startswith(prefix) and name.endswith(".parquet")):
                continue
            start = name[len(prefix) : -len(".parquet")]
            if start.isdigit() and (latest is None or int(start) > latest[0]):
                latest = (int(start), info.path)
        if latest is None:
            return None
        return _max_offset(self._fs, latest[1])


def _max_offset(fs: pafs.FileSystem, path: str) -> int:
    """Max of `_kafka_offset` from the footer's statistics (the column itself if they lack)."""
    with fs.open_input_file(path) as source:
        metadata = pq.read_metadata(source)
    maxima = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            column = group.column(j)
            if column.path_in_schema != "_kafka_offset":
                continue
            if column.statistics is None or not column.statistics.has_min_max:
                with fs.open_input_file(path) as source:
                    values = pq.read_table(source, columns=["_kafka_offset"]).column(0)
                return pc.max(values).as_py()
            maxima.append(column.statistics.max)
    return max(maxima)
