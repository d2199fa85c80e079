"""`sensorstream produce` as its own process, the way an edge node runs it, and what it produced.

The producer runs apart from the test's SQLite writer on purpose: SQLite shares locks and WAL
state between connections of one process, so a writer in the producer's process would hide
exactly the behaviour edge nodes depend on (which files a stopped writer leaves behind).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import KafkaException

from schemas.timestamps import to_epoch_micros
from sensorstream.errors import PipelineError
from tests.kafka_helpers import AvroDecoder, read_topic

REPO = Path(__file__).resolve().parents[1]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@contextmanager
def running_producer(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """The producer, its stdout and stderr in `log`; stopped (SIGTERM, then SIGKILL) after."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sensorstream", "produce", *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Until `condition` holds; a topic the producer is still creating counts as not yet."""
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.5)


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except (KafkaException, PipelineError):  # PipelineError: the topic is not there yet
        return False


RowKey = tuple[int, int]  # (rowid, event time in epoch microseconds): a row of one database


def source_rows(db: Path) -> set[RowKey]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {
            (rowid, to_epoch_micros(ts))
            for rowid, ts in conn.execute("SELECT id, timestamp FROM sensor_readings")
        }
    finally:
        conn.close()


def produced_rows(bootstrap: str, registry_url: str, topic: str) -> Counter[RowKey]:
    """How often each source row is in the topic, as a read_committed consumer sees it."""
    decoder = AvroDecoder(registry_url)
    produced: Counter[RowKey] = Counter()
    for message in read_topic(bootstrap, topic):
        _, record = decoder.decode(message.value())
        micros = (record["timestamp"] - EPOCH) // timedelta(microseconds=1)
        produced[(record["_source_rowid"], micros)] += 1
    return produced


def assert_each_once(produced: Counter[RowKey], rows: set[RowKey]) -> None:
    duplicated = sorted(key for key, n in produced.items() if n > 1)
    assert not duplicated, f"rows produced more than once: {duplicated[:10]}"
    missing = sorted(rows - set(produced))
    assert not missing, f"{len(missing)} rows never produced, e.g. {missing[:10]}"
    unexpected = sorted(set(produced) - rows)
    assert not unexpected, f"records of no source row: {unexpected[:10]}"


def wait_streamed(
    producer: subprocess.Popen,
    log: Path,
    bootstrap: str,
    registry_url: str,
    topic: str,
    rows: set[RowKey],
    what: str,
) -> None:
    """Until every one of `rows` is in `topic`. A producer that stops first fails the test at
    once, showing its log, rather than after the whole deadline."""
    wait_for(
        lambda: (
            producer.poll() is not None
            or set(produced_rows(bootstrap, registry_url, topic)) >= rows
        ),
        what,
    )
    assert producer.poll() is None, log.read_text()
