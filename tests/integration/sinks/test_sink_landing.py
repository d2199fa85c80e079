"""The Auto Loader landing area on a local path and on the S3 server: deterministic names, whole
files only, replays that rewrite the same objects, and an exact resume offset."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sinks.landing import LandingWriter, s3_filesystem

pytestmark = pytest.mark.integration

TOPIC = "sensors.emergency"
DAY1, DAY2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24)


@dataclass
class Lake:
    uri: str
    storage_options: dict[str, str] | None
    fs: pafs.FileSystem
    root: str  # the landing area's path inside `fs`

    def files(self) -> list[str]:
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector) if i.is_file)

    def read(self, path: str) -> bytes:
        with self.fs.open_input_file(path) as f:
            return f.read()


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path, unique) -> Lake:
    if request.param == "local":
        root = tmp_path / "lake"
        return Lake(str(root), None, pafs.LocalFileSystem(), str(root / "landing"))
    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("s3_bucket")
    options = s3.storage_options()
    return Lake(
        f"s3://{bucket}/landing-{unique}",
        options,
        s3_filesystem(options),
        f"{bucket}/landing-{unique}/landing",
    )


def batch(first: int, dates: list[dt.date], partition: int = 3) -> pa.Table:
    """Sink rows for offsets first.. with nanosecond UTC timestamps, as Arrow hands them over."""
    n = len(dates)
    offsets = list(range(first, first + n))
    event_time = [
        dt.datetime.combine(d, dt.time(12), dt.UTC) + dt.timedelta(seconds=o)
        for d, o in zip(dates, offsets, strict=True)
    ]
    return pa.table(
        {
            "sensor_id": pa.array([f"s-{o % 4}" for o in offsets]),
            "temperature": pa.array([20.0 + o / 10 for o in offsets]),
            "event_time": pa.array(event_time, pa.timestamp("ns", tz="UTC")),
            "_ingested_at": pa.array(event_time, pa.timestamp("ns", tz="UTC")),
            "_kafka_topic": pa.array([TOPIC] * n),
            "_kafka_partition": pa.array([partition] * n, pa.int32()),
            "_kafka_offset": pa.array(offsets, pa.int64()),
            "_route": pa.array(["emergency"] * n),
            "event_date": pa.array(dates, pa.date32()),
        }
    )


def landed(lake: Lake) -> pa.Table:
    dataset = ds.dataset(lake.root, filesystem=lake.fs, format="parquet", partitioning="hive")
    return dataset.to_table()


def test_file_names_and_no_temp_files(lake):
    writer = LandingWriter(lake.uri, lake.storage_options)
    written = writer.write("emergency", TOPIC, 3, batch(5, [DAY1] * 10))
    name = f"event_date=2026-11-23/{TOPIC}+3+00000000000000000005.parquet"
    prefix = "" if lake.storage_options is None else "s3://"
    assert written == [f"{prefix}{lake.root}/emergency/{name}"]
    assert lake.files() == [f"{lake.root}/emergency/{name}"]  # nothing else, no temp file


def test_replay_rewrites_the_same_objects(lake):
    writer = LandingWriter(lake.uri, lake.storage_options)
    rows = batch(40, [DAY1] * 6 + [DAY2] * 4)
    first = writer.write("emergency", TOPIC, 3, rows)
    contents = {path: lake.read(path) for path in lake.files()}
    again = LandingWriter(lake.uri, lake.storage_options).write("emergency", TOPIC, 3, rows)
    assert again == first
    assert {path: lake.read(path) for path in lake.files()} == contents
    table = landed(lake)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(40, 50))


def test_a_batch_spanning_two_dates_lands_two_files(lake):
    writer = LandingWriter(lake.uri, lake.storage_options)
    written = writer.write("emergency", TOPIC, 3, batch(100, [DAY1] * 6 + [DAY2] * 4))
    assert [w.rsplit("/", 2)[1:] for w in written] == [
        ["event_date=2026-11-23", f"{TOPIC}+3+00000000000000000100.parquet"],
        ["event_date=2026-11-24", f"{TOPIC}+3+00000000000000000106.parquet"],
    ]
    table = landed(lake).sort_by("_kafka_offset")
    assert table.column("_kafka_offset").to_pylist() == list(range(100, 110))
    assert [str(d) for d in table.column("event_date").to_pylist()] == [str(DAY1)] * 6 + [
        str(DAY2)
    ] * 4


def test_interleaved_dates_land_as_offset_runs(lake):
    """Late data mixed into a batch: one file per run, so landed files stay an offset prefix."""
    writer = LandingWriter(lake.uri, lake.storage_options)
    written = writer.write("emergency", TOPIC, 3, batch(0, [DAY2, DAY2, DAY1, DAY2]))
    assert [w.rsplit("/", 1)[1].split("+")[2] for w in written] == [
        "00000000000000000000.parquet",
        "00000000000000000002.parquet",
        "00000000000000000003.parquet",
    ]


def test_last_landed_offset(lake):
    writer = LandingWriter(lake.uri, lake.storage_options)
    assert writer.last_landed_offset("emergency", TOPIC, 3) is None
    writer.write("emergency", TOPIC, 3, batch(0, [DAY1] * 5))
    writer.write("emergency", TOPIC, 3, batch(5, [DAY1] * 3 + [DAY2] * 3))
    writer.write("emergency", TOPIC, 4, batch(500, [DAY1] * 2, partition=4))
    writer.write("emergency", f"{TOPIC}-eu", 3, batch(900, [DAY2] * 2))
    assert writer.last_landed_offset("emergency", TOPIC, 3) == 10
    assert writer.last_landed_offset("emergency", TOPIC, 4) == 501
    assert writer.last_landed_offset("emergency", TOPIC, 5) is None
    assert writer.last_landed_offset("regional", TOPIC, 3) is None


def test_parquet_timestamps_are_utc_microseconds(lake):
    writer = LandingWriter(lake.uri, lake.storage_options)
    (path,) = writer.write("emergency", TOPIC, 3, batch(7, [DAY1] * 3))
    with lake.fs.open_input_file(path.removeprefix("s3://")) as f:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
        physical = {c.name: c for c in parquet.schema}
        for name in ("event_time", "_ingested_at"):
            assert schema.field(name).type == pa.timestamp("us", tz="UTC")
            column = physical[name]
            assert column.physical_type == "INT64"  # not INT96
            logical = json.loads(column.logical_type.to_json())
            assert logical["isAdjustedToUTC"] is True
            assert logical["timeUnit"] == "microseconds"
        assert "event_date" not in schema.names  # it is in the directory name
        assert schema.field("_kafka_offset").type == pa.int64()
