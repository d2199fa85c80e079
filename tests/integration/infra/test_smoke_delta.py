"""deltalake writes, appends and reads back tables on a local path and on the S3 server,
and carries the txn actions the sink's exactly-once protocol depends on."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

pytestmark = pytest.mark.integration


def readings(first: int, count: int) -> pa.Table:
    ids = list(range(first, first + count))
    return pa.table(
        {
            "sensor_id": pa.array([f"s-{i % 3}" for i in ids]),
            "seq": pa.array(ids, pa.int64()),
            "temperature": pa.array([20.0 + i / 10 for i in ids]),
            "event_date": pa.array(["2026-11-23"] * count),
        }
    )


def write_append_read(uri: str, storage_options: dict[str, str] | None) -> None:
    write_deltalake(
        uri,
        readings(0, 5),
        partition_by=["event_date"],
        storage_options=storage_options,
        commit_properties=CommitProperties(app_transactions=[Transaction("sink-test", 4)]),
    )
    write_deltalake(
        uri,
        readings(5, 3),
        mode="append",
        storage_options=storage_options,
        commit_properties=CommitProperties(app_transactions=[Transaction("sink-test", 7)]),
    )
    table = DeltaTable(uri, storage_options=storage_options)
    assert table.version() == 1
    assert table.metadata().partition_columns == ["event_date"]
    assert table.transaction_version("sink-test") == 7
    assert table.transaction_version("another-app") is None
    data = table.to_pyarrow_table().sort_by("seq")
    assert data.column("seq").to_pylist() == list(range(8))
    assert data.column("sensor_id").to_pylist()[:3] == ["s-0", "s-1", "s-2"]


def test_delta_on_local_path(tmp_path):
    write_append_read(str(tmp_path / "table"), None)


def test_delta_on_s3_server(s3, s3_bucket, unique):
    write_append_read(f"s3://{s3_bucket}/smoke/{unique}", s3.storage_options())
