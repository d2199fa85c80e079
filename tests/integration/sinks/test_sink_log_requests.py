"""A sink commit lists no more of the table's `_delta_log` than the commits since its last one.

Left to delta-rs, every commit listed the whole `_delta_log` to look for expired files: with a
commit every few seconds and days of log kept, hundreds of LIST requests per commit, growing
with the log. The writer now cleans the log only after a checkpoint, where files become
deletable; tests/integration/sinks/test_delta_log.py shows the log still stays bounded.

On the S3 server, through a proxy that counts each request the writer makes."""

from __future__ import annotations

import pytest

from benchmarks.s3_requests import S3RequestCounter
from tests.integration.sinks.test_delta_log import INTERVAL, batch, log_files, writer

pytestmark = pytest.mark.integration


@pytest.fixture
def counted(s3, s3_bucket, unique):
    """A table URI and storage options whose requests go through a counting proxy."""
    with S3RequestCounter(s3.endpoint_url) as counter:
        options = {**s3.storage_options(), "AWS_ENDPOINT_URL": counter.url}
        yield f"s3://{s3_bucket}/log-requests/{unique}", options, counter


def test_commits_between_checkpoints_never_list_the_whole_log(counted, s3):
    uri, options, counter = counted
    sink = writer(uri, options, retention_hours=0)
    for offset in range(0, 3 * 3, 3):  # created, opened, written
        assert sink.write(batch(0, offset), {("sensors.raw", 0): offset + 2}) == 3
    sink.settle()
    before = counter.counts()

    commits = 2 * INTERVAL
    for i in range(commits):
        offset = 9 + 3 * i
        assert sink.write(batch(0, offset), {("sensors.raw", 0): offset + 2}) == 3
    sink.close()  # its checkpoints and their cleanups, made beside the commits, counted too

    made = counter.counts() - before
    full_listings = made["LIST all"]
    checkpoints = commits // INTERVAL
    assert full_listings <= checkpoints, dict(made)  # once per checkpoint, for its cleanup
    # and the log is still cleaned at each checkpoint (retention 0: nothing older survives)
    versions, checkpointed = log_files(uri, s3.storage_options())
    assert checkpointed and min(versions) >= checkpointed[-1], (versions, checkpointed)
