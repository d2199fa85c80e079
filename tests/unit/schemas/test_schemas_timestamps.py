"""Event-time parsing: ISO-8601, epoch s/ms/us, and the values that must be rejected."""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.timestamps import (
    MAX_FUTURE,
    MIN_TIMESTAMP,
    BadTimestamp,
    to_epoch_micros,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def utc_micros(*fields: int, micro: int = 0) -> int:
    """Expected values computed independently of the code under test (calendar.timegm)."""
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000 + micro


BASE = utc_micros(2024, 5, 1, 12, 34, 56)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:34:56Z", BASE),
        ("2024-05-01T12:34:56", BASE),  # no offset = UTC
        ("2024-05-01 12:34:56", BASE),  # space instead of T
        ("2024-05-01T12:34:56+00:00", BASE),
        ("2024-05-01T14:34:56+02:00", BASE),
        ("2024-05-01T07:04:56-05:30", BASE),
        ("2024-05-01T12:34:56.789012Z", BASE + 789_012),
        ("2024-05-01T12:34:56.5", BASE + 500_000),
        ("2024-05-01T12:34:56.123456789Z", BASE + 123_456),  # nanoseconds truncated
        ("2024-05-01T12:34:56.999999999Z", BASE + 999_999),  # truncated, not rounded up
        ("2024-05-01t12:34:56z", BASE),  # RFC 3339 lower case
        ("  2024-05-01T12:34:56Z\n", BASE),
        ("20240501T123456Z", BASE),  # ISO basic format
        ("2024-05-01", utc_micros(2024, 5, 1, 0, 0, 0)),  # date only = midnight UTC
        (b"2024-05-01T12:34:56Z", BASE),  # from a text_factory=bytes connection
    ],
)
def test_iso_8601(text: str | bytes, expected: int) -> None:
    assert to_epoch_micros(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_714_566_896, BASE),  # epoch seconds
        (1_714_566_896.5, BASE + 500_000),
        (1_714_566_896.123456, BASE + 123_456),  # rounded: the float is ...455.99...
        (1_714_566_896_789, BASE + 789_000),  # epoch milliseconds
        (1_714_566_896_789.5, BASE + 789_500),
        (1_714_566_896_789_012, BASE + 789_012),  # epoch microseconds
        ("1714566896", BASE),
        ("1714566896.25", BASE + 250_000),
        ("1714566896789", BASE + 789_000),
        ("+1714566896", BASE),
        ("1.714566896e9", BASE),
        (b"1714566896789", BASE + 789_000),
    ],
)
def test_epoch_numbers(value: int | float | str | bytes, expected: int) -> None:
    assert to_epoch_micros(value, now=NOW) == expected


def test_unit_cut_offs_are_by_magnitude() -> None:
    # 99_999_999_999 is still seconds (year 5138: absurd), 1e11 is already milliseconds (1973).
    with pytest.raises(BadTimestamp, match=r"read as epoch seconds is 5138-.*after now"):
        to_epoch_micros(99_999_999_999, now=NOW)
    with pytest.raises(BadTimestamp, match=r"read as epoch milliseconds is 1973-.*before 2000"):
        to_epoch_micros(100_000_000_000, now=NOW)
    with pytest.raises(BadTimestamp, match=r"read as epoch microseconds is 1973-"):
        to_epoch_micros(100_000_000_000_000, now=NOW)
    with pytest.raises(BadTimestamp, match=r"nanoseconds are not accepted"):
        to_epoch_micros(1_714_566_896_789_012_345, now=NOW)


def test_bounds_are_inclusive_constants() -> None:
    first = calendar.timegm(MIN_TIMESTAMP.timetuple()) * 1_000_000
    assert to_epoch_micros("2000-01-01T00:00:00Z", now=NOW) == first
    with pytest.raises(BadTimestamp, match=r"before 2000-01-01T00:00:00Z"):
        to_epoch_micros("1999-12-31T23:59:59.999999Z", now=NOW)

    latest = NOW + MAX_FUTURE
    assert to_epoch_micros(latest.isoformat(), now=NOW) == to_epoch_micros(latest, now=NOW)
    with pytest.raises(BadTimestamp, match=r"more than 24 hours after now"):
        to_epoch_micros((latest + timedelta(microseconds=1)).isoformat(), now=NOW)


def test_naive_now_is_utc_and_default_now_is_the_clock() -> None:
    naive_now = datetime(2024, 6, 1, 12, 0, 0)
    assert to_epoch_micros("2024-06-02T12:00:00Z", now=naive_now) > 0
    assert to_epoch_micros(datetime.now(UTC) - timedelta(minutes=1)) > 0
    with pytest.raises(BadTimestamp, match="after now"):
        to_epoch_micros(datetime.now(UTC) + timedelta(days=2))


def test_aware_and_naive_datetimes() -> None:
    assert to_epoch_micros(datetime(2024, 5, 1, 12, 34, 56), now=NOW) == BASE
    plus_two = timezone(timedelta(hours=2))
    assert to_epoch_micros(datetime(2024, 5, 1, 14, 34, 56, tzinfo=plus_two), now=NOW) == BASE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("garbage", r"'garbage' is neither ISO-8601 nor an epoch number"),
        ("", r"'' is neither ISO-8601"),
        ("   ", r"neither ISO-8601"),
        ("2024-13-01T00:00:00Z", r"neither ISO-8601"),
        ("2024-05-01T25:00:00", r"neither ISO-8601"),
        ("2024-05-01x12:34:56", r"separated by 'T' or a space"),
        ("1_714_566_896", r"neither ISO-8601"),
        ("١٧١٤٥٦٦٨٩٦", r"neither ISO-8601"),  # Arabic-Indic digits: int() would take them
        ("nan", r"not a finite number"),
        ("inf", r"not a finite number"),
        (math.nan, r"nan is not a finite number"),
        (math.inf, r"inf is not a finite number"),
        (-math.inf, r"-inf is not a finite number"),
        (True, r"True is a boolean"),
        (False, r"False is a boolean"),
        (None, r"timestamp is NULL"),
        ([2024], r"unsupported type list"),
        (b"\xff\xfe", r"is not ASCII text"),
        (12, r"12 read as epoch seconds is 1970-01-01T00:00:12Z, before 2000"),
        (-1_714_566_896, r"before 2000"),
        ("1999-12-31T23:59:59Z", r"is 1999-12-31T23:59:59Z, before 2000-01-01"),
        ("2999-01-01T00:00:00Z", r"is 2999-01-01T00:00:00Z, more than 24 hours after now"),
        ("1714566896" * 3, r"too large for seconds, milliseconds or microseconds"),
    ],
)
def test_rejections_say_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(BadTimestamp, match=message):
        to_epoch_micros(value, now=NOW)


def test_bad_timestamp_is_a_value_error_with_ascii_message() -> None:
    with pytest.raises(ValueError) as caught:
        to_epoch_micros("heute \u2603 12:00", now=NOW)
    assert str(caught.value).isascii()
    assert "\\u2603" in str(caught.value)
