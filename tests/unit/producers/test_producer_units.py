"""The producer's small parts, without servers: checkpoint format, fingerprints, log throttling,
backoff, status lines and dead-letter rendering."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

import sensorstream.backoff as backoff_module
import sensorstream.logs as logs_module
from producers import status as status_module
from producers.checkpoint import CHECKPOINT_FORMAT, Checkpoint, checkpoint_key, row_fingerprint
from producers.status import TailerStatus
from schemas.dead_letter import (
    HEADER_ERROR,
    HEADER_FAILED_AT,
    HEADER_STAGE,
    MAX_ERROR_BYTES,
    TRUNCATED_HEAD_CHARS,
    DeadLetter,
    row_as_json,
)
from sensorstream.backoff import Backoff
from sensorstream.logs import ThrottleFilter


class FakeClock:
    """Stands in for the `time` module of the code under test: monotonic() only moves on
    advance()."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def strict_json(data: bytes):
    """json.loads that refuses NaN/Infinity tokens, as non-Python JSON readers do."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(data, parse_constant=refuse)


# -- checkpoint ----------------------------------------------------------------------------


def make_checkpoint(**changes) -> Checkpoint:
    checkpoint = Checkpoint(
        node_id="edge-7",
        table="sensor_readings",
        db="/data/edge.db",
        rowid=41_234,
        row_fingerprint=row_fingerprint(41_234, b"2024-05-01T00:00:00Z"),
        schema_id=17,
        rows_total=99_000,
        committed_at=1_717_000_000.25,
    )
    return replace(checkpoint, **changes)


def test_checkpoint_round_trips_through_bytes() -> None:
    checkpoint = make_checkpoint()
    data = checkpoint.to_bytes()
    assert json.loads(data)["format"] == CHECKPOINT_FORMAT
    assert Checkpoint.from_bytes(data) == checkpoint


def test_initial_checkpoint_round_trips_with_its_nulls() -> None:
    initial = Checkpoint.initial("edge-7", "sensor_readings", "/data/edge.db")
    assert (initial.rowid, initial.row_fingerprint, initial.schema_id) == (0, None, None)
    assert Checkpoint.from_bytes(initial.to_bytes()) == initial


@pytest.mark.parametrize("fmt", [CHECKPOINT_FORMAT + 1, 0, "1", None])
def test_checkpoint_of_an_unknown_format_is_rejected(fmt) -> None:
    raw = json.loads(make_checkpoint().to_bytes())
    raw["format"] = fmt
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        Checkpoint.from_bytes(json.dumps(raw).encode())


def test_checkpoint_without_a_format_is_rejected() -> None:
    raw = json.loads(make_checkpoint().to_bytes())
    del raw["format"]
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        Checkpoint.from_bytes(json.dumps(raw).encode())


def test_checkpoint_key_is_node_and_table() -> None:
    assert checkpoint_key("edge-7", "sensor_readings") == b"edge-7/sensor_readings"


# -- row fingerprint -----------------------------------------------------------------------


def test_row_fingerprint_is_stable() -> None:
    first = row_fingerprint(7, b"2024-05-01T00:00:00Z")
    assert first == row_fingerprint(7, b"2024-05-01T00:00:00Z")
    assert len(first) == 24 and int(first, 16) >= 0  # 12-byte blake2b as hex
    # Stable across processes and versions: a plain digest of the repr, no per-process salt
    # (a changed value would make every running node's checkpoint look recreated).
    assert row_fingerprint(1, b"a") == "62b52c13d270817525f9260b"


@pytest.mark.parametrize(
    ("rowid", "event_time"),
    [
        (8, b"2024-05-01T00:00:00Z"),  # another rowid
        (7, b"2024-05-01T00:00:01Z"),  # another event time
        (7, b"2024-05-01T00:00:00.000001Z"),  # a microsecond apart
        (7, "2024-05-01T00:00:00Z"),  # text as str, not bytes
        (7, 1714521600),  # the same instant as an epoch number
        (7, None),
    ],
)
def test_row_fingerprint_is_sensitive_to_rowid_and_event_time(rowid, event_time) -> None:
    assert row_fingerprint(7, b"2024-05-01T00:00:00Z") != row_fingerprint(rowid, event_time)


# -- ThrottleFilter ------------------------------------------------------------------------


def log_record(message: str, *args, name: str = "sensorstream.kafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)


def test_throttle_filter_passes_each_message_once_per_interval(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(logs_module, "time", clock)
    throttle = ThrottleFilter(interval_s=60)
    connect = "Connect to ipv4#127.0.0.1:%d failed: Connection refused (after %dms)"

    assert throttle.filter(log_record(connect, 9092, 0))
    # Same message, other digits: the same shape, held back within the interval.
    for i in range(5):
        clock.advance(10)
        assert not throttle.filter(log_record(connect, 9093 + i, i))
    # A different message is not held back by the first one.
    assert throttle.filter(log_record("Broker: Not coordinator"))
    # Another logger's identical text is its own stream.
    assert throttle.filter(log_record(connect, 9092, 0, name="other"))

    clock.advance(10)  # 60 s after the first line passed
    record = log_record(connect, 9092, 3)
    assert throttle.filter(record)
    assert record.getMessage() == (
        "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 3ms) "
        "(5 similar messages held back)"
    )
    # The count starts again after it was reported.
    clock.advance(1)
    assert not throttle.filter(log_record(connect, 1, 1))
    clock.advance(60)
    record = log_record(connect, 1, 1)
    assert throttle.filter(record)
    assert record.getMessage().endswith("(1 similar messages held back)")
    clock.advance(61)
    record = log_record(connect, 1, 1)
    assert throttle.filter(record)
    assert "held back" not in record.getMessage()


def test_throttle_filter_on_a_logger_counts_what_it_held(monkeypatch, caplog) -> None:
    clock = FakeClock()
    monkeypatch.setattr(logs_module, "time", clock)
    logger = logging.getLogger("tests.throttled")
    throttle = ThrottleFilter(interval_s=30)
    logger.addFilter(throttle)
    try:
        with caplog.at_level(logging.INFO, logger="tests.throttled"):
            for attempt in range(100):  # one retry per 0.5 s for 50 s
                logger.error("connect failed (attempt %d)", attempt)
                clock.advance(0.5)
    finally:
        logger.removeFilter(throttle)
    messages = [r.getMessage() for r in caplog.records if r.name == "tests.throttled"]
    assert messages == [
        "connect failed (attempt 0)",
        "connect failed (attempt 60) (59 similar messages held back)",
    ]


# -- Backoff -------------------------------------------------------------------------------


def test_backoff_grows_caps_and_resets(monkeypatch) -> None:
    monkeypatch.setattr(backoff_module, "random", SimpleNamespace(uniform=lambda a, b: b))
    backoff = Backoff(initial_s=0.5, max_s=5.0, factor=2.0)
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.attempts == 7
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_between_half_and_the_full_delay() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for base in bases:
        delay = backoff.next_delay()
        assert base * 0.5 <= delay <= base
    # Many nodes backing off together do not retry in lock-step.
    delays = {Backoff(initial_s=1.0).next_delay() for _ in range(20)}
    assert len(delays) > 1


def test_backoff_many_attempts_do_not_overflow(monkeypatch) -> None:
    monkeypatch.setattr(backoff_module, "random", SimpleNamespace(uniform=lambda a, b: b))
    backoff = Backoff(initial_s=0.5, max_s=30.0)
    backoff.attempts = 10_000  # hours offline
    assert backoff.next_delay() == 30.0


def test_backoff_wait_returns_at_once_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    backoff = Backoff(initial_s=600.0, max_s=600.0)
    started = time.monotonic()
    assert backoff.wait(stop) is True
    assert time.monotonic() - started < 300  # not the 600 s backoff, on any machine
    assert Backoff(initial_s=0.01, max_s=0.01).wait(threading.Event()) is False


# -- TailerStatus --------------------------------------------------------------------------


def status_lines(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "sensorstream.producer"]
    caplog.clear()
    return lines


def test_tailer_status_logs_going_offline_once_then_once_per_interval(monkeypatch, caplog) -> None:
    clock = FakeClock()
    monkeypatch.setattr(status_module, "time", clock)
    status = TailerStatus(interval_s=30)
    caplog.set_level(logging.INFO, logger="sensorstream.producer")

    status.offline("Connection refused")
    lines = status_lines(caplog)
    assert len(lines) == 1
    assert "unreachable (Connection refused)" in lines[0]

    # 29 s of retries every half second: no line per retry.
    for _ in range(58):
        clock.advance(0.5)
        status.offline("Connection refused")
        status.maybe_log(backlog=120)
    assert status_lines(caplog) == []

    clock.advance(1)
    status.offline("Broker transport failure")
    status.maybe_log(backlog=150)
    assert status_lines(caplog) == [
        "offline for 0m30s (Broker transport failure); 60 retries; backlog 150 rows in SQLite"
    ]
    status.maybe_log(backlog=150)
    assert status_lines(caplog) == []

    clock.advance(3600 - 30)
    status.maybe_log(backlog=9000)
    assert status_lines(caplog) == [
        "offline for 1h00m00s (Broker transport failure); 60 retries; backlog 9000 rows in SQLite"
    ]

    clock.advance(5)
    status.online()
    lines = status_lines(caplog)
    assert lines == ["reconnected after 1h00m05s offline (60 retries); catching up"]
    status.online()  # still online: nothing to say
    assert status_lines(caplog) == []
    assert (status.offline_since, status.retries) == (None, 0)

    # A new outage is a new state change, logged once again.
    status.offline("Connection refused")
    status.offline("Connection refused")
    assert len(status_lines(caplog)) == 1


def test_tailer_status_reports_progress_once_per_interval(monkeypatch, caplog) -> None:
    clock = FakeClock()
    monkeypatch.setattr(status_module, "time", clock)
    status = TailerStatus(interval_s=10)
    caplog.set_level(logging.INFO, logger="sensorstream.producer")

    for chunk in range(1, 10):  # nine commits of 500 rows, one per second
        clock.advance(1)
        status.committed(500, dead_letters=1 if chunk == 3 else 0, last_rowid=chunk * 500)
        status.maybe_log(backlog=100)
    assert status_lines(caplog) == []

    clock.advance(1)
    status.committed(500, 0, 5000)
    status.maybe_log(backlog=0)
    assert status_lines(caplog) == [
        "streaming: 5000 rows in 10s (500 rows/s), 1 to the dead-letter topic, "
        "last rowid 5000, backlog 0 rows"
    ]
    # Counts start again for the next interval.
    clock.advance(10)
    status.maybe_log(backlog=0)
    assert status_lines(caplog) == [
        "streaming: 0 rows in 10s (0 rows/s), 0 to the dead-letter topic, "
        "last rowid 5000, backlog 0 rows"
    ]


# -- dead letters --------------------------------------------------------------------------


def test_row_as_json_survives_invalid_utf8_nan_and_infinities() -> None:
    columns = ["id", "sensor_id", "location", "temperature", "humidity", "pressure", "n", "raw"]
    row = (
        3,
        b"s-1",
        b"caf\xc3\xa9 \xff\xfe",
        float("nan"),
        float("inf"),
        float("-inf"),
        None,
        b"\x00\x01\x80",
    )
    value = strict_json(row_as_json(columns, row))
    assert value == {
        "id": 3,
        "sensor_id": "s-1",
        "location": {"base64": base64.b64encode(b"caf\xc3\xa9 \xff\xfe").decode()},
        "temperature": "NaN",
        "humidity": "inf",
        "pressure": "-inf",
        "n": None,
        "raw": {"base64": "AAGA"},
    }
    assert base64.b64decode(value["location"]["base64"]) == b"caf\xc3\xa9 \xff\xfe"


def test_row_as_json_keeps_valid_text_and_numbers_exactly() -> None:
    row = (9, b"caf\xc3\xa9", "already str", 2**62, 0.1, -0.0)
    value = strict_json(row_as_json(["a", "b", "c", "d", "e", "f"], row))
    assert value == {"a": 9, "b": "café", "c": "already str", "d": 2**62, "e": 0.1, "f": -0.0}


def test_row_as_json_truncates_the_largest_values_of_an_oversized_row() -> None:
    columns = ["id", "sensor_id", "location", "blob", "note"]
    row = (5, b"s-1", b"x" * 50_000, b"\xff" * 20_000, b"short")
    data = row_as_json(columns, row, max_bytes=4096)
    assert len(data) <= 4096
    value = strict_json(data)
    assert value["id"] == 5 and value["sensor_id"] == "s-1" and value["note"] == "short"
    assert value["location"] == {
        "truncated": True,
        "bytes": 50_000,
        "head": "x" * TRUNCATED_HEAD_CHARS,
    }
    assert value["blob"] == {
        "truncated": True,
        "bytes": 20_000,
        "head_base64": base64.b64encode(b"\xff" * TRUNCATED_HEAD_CHARS).decode(),
    }
    # Under the limit nothing is truncated.
    assert strict_json(row_as_json(columns, row))["location"] == "x" * 50_000


def test_row_as_json_of_a_row_too_wide_even_truncated_still_fits() -> None:
    columns = [f"c{i}" for i in range(500)]
    row = tuple(b"v" * 100 for _ in columns)
    full = row_as_json(columns, row)
    data = row_as_json(columns, row, max_bytes=1024)
    assert strict_json(data) == {"truncated": True, "bytes": len(full)}


def test_row_as_json_truncates_no_more_than_needed() -> None:
    columns = ["a", "b", "c"]
    row = (b"a" * 3000, b"b" * 2000, b"c" * 1000)
    limit = len(row_as_json(columns, (b"a" * 10, b"b" * 2000, b"c" * 1000))) + 400
    value = strict_json(row_as_json(columns, row, max_bytes=limit))
    assert value["a"]["truncated"] is True
    assert (value["b"], value["c"]) == ("b" * 2000, "c" * 1000)


def test_dead_letter_headers_name_stage_error_and_source() -> None:
    letter = DeadLetter(
        stage="producer",
        error="temperature: text b'hot' in a numeric column (field is double)",
        source={"db": "/data/edge.db", "table": "sensor_readings", "rowid": 42, "node_id": "n1"},
        value=b"{}",
    )
    assert letter.headers("2026-01-01T00:00:00+00:00") == [
        (HEADER_STAGE, b"producer"),
        (HEADER_ERROR, b"temperature: text b'hot' in a numeric column (field is double)"),
        (HEADER_FAILED_AT, b"2026-01-01T00:00:00+00:00"),
        ("dlq.source.db", b"/data/edge.db"),
        ("dlq.source.table", b"sensor_readings"),
        ("dlq.source.rowid", b"42"),
        ("dlq.source.node_id", b"n1"),
    ]


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_dead_letter_headers_clip_long_errors_to_valid_utf8(char: str) -> None:
    error = "location: " + char * 5000
    letter = DeadLetter(stage="producer", error=error, source={}, value=b"")
    header = dict(letter.headers("now"))[HEADER_ERROR]
    assert len(header) <= MAX_ERROR_BYTES
    assert len(header) > MAX_ERROR_BYTES - 8  # clipped, not emptied
    assert header.endswith(b"...")
    text = header.decode("utf-8")  # a cut never splits a character
    assert text.startswith("location: " + char * 10)
    assert set(text[len("location: ") : -3]) == {char}


def test_dead_letter_headers_keep_short_errors_whole() -> None:
    error = "e" * MAX_ERROR_BYTES
    letter = DeadLetter(stage="producer", error=error, source={}, value=b"")
    assert dict(letter.headers("now"))[HEADER_ERROR] == error.encode()
