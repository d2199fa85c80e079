"""Event timestamps from SQLite values to Avro `timestamp-micros` (UTC microseconds since 1970).

Edge tables store time in whatever form their writer chose: ISO-8601 text, epoch seconds or
epoch milliseconds (DESIGN section 4). This runs once per row, so the common ISO case is one
`datetime.fromisoformat` call and integer arithmetic: no regex, no float rounding.

Decisions, each chosen so that a value is either read exactly one way or rejected:
- ISO-8601 via `datetime.fromisoformat` (Python 3.11+: 'Z', offsets, a space instead of 'T',
  basic format, date only = midnight; also RFC 3339's lower-case 't' and 'z'). No offset means
  UTC. Extended dates must use 'T' or a space as the separator. More than 6 fractional digits
  (nanoseconds) are TRUNCATED to microseconds, as fromisoformat itself does: the lake is
  microsecond precision (DESIGN section 8), and rejecting would send every row of a writer
  that prints nanoseconds to the DLQ.
- Numbers (int, float, or text made of them) are epoch values whose unit follows from their
  magnitude: |v| < 1e11 seconds, < 1e14 milliseconds, < 1e17 microseconds, larger rejected.
  The cut-offs are 1e11 s = year 5138, 1e11 ms = 1973, 1e14 ms = 5138, 1e14 us = 1973,
  so within the accepted window [2000-01-01, now + 1 day] no value fits two units: accepting
  microseconds is safe. Nanoseconds (>= 1e17) are rejected rather than guessed.
  A string of digits is always an epoch number, never an ISO basic-format date.
- Floats are ROUNDED to the nearest microsecond: a binary float cannot hold most decimal
  microseconds exactly (1700000000.123456 * 1e6 is ...455.99...), so truncating would be wrong.
- Rejected with BadTimestamp: NULL, bools, NaN/inf, unparseable text, non-ASCII bytes, and
  absurd times: before MIN_TIMESTAMP or more than MAX_FUTURE after `now`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
"""The earliest event time accepted; anything before is a clock that was never set."""
MAX_FUTURE = timedelta(days=1)
"""How far past `now` an event time may be; more is a clock running ahead."""

MILLIS_FROM = 100_000_000_000  # 1e11: |epoch value| at and above which it is milliseconds
MICROS_FROM = 100_000_000_000_000  # 1e14: ... microseconds
TOO_LARGE_FROM = 100_000_000_000_000_000  # 1e17: ... rejected (nanoseconds or garbage)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
MIN_EPOCH_MICROS = (MIN_TIMESTAMP - _EPOCH) // timedelta(microseconds=1)
MAX_FUTURE_MICROS = MAX_FUTURE // timedelta(microseconds=1)
_PREVIEW_CHARS = 60
_FUTURE_TEXT = f"{MAX_FUTURE.total_seconds() / 3600:g} hours"


class BadTimestamp(ValueError):
    """A value that is not an acceptable event time; the message says what is wrong with it."""


def to_epoch_micros(value: object, *, now: datetime | None = None) -> int:
    """`value` (ISO-8601 text, epoch s/ms/us number or numeric text) as UTC epoch microseconds.

    `now` (default: the system clock) sets the upper bound, now + MAX_FUTURE; a naive `now`
    is UTC. Raises BadTimestamp with a message meant for a human reading the DLQ.
    """
    return parse_epoch_micros(value, upper_bound_micros(now))


def upper_bound_micros(now: datetime | None = None) -> int:
    """The latest accepted epoch microseconds for `now`; computed once per batch by callers
    that convert many rows, so the per-row cost does not include reading the clock."""
    if now is None:
        return time.time_ns() // 1000 + MAX_FUTURE_MICROS
    return datetime_micros(now) + MAX_FUTURE_MICROS


def parse_epoch_micros(value: object, upper_bound: int) -> int:
    """The per-row hot path of `to_epoch_micros`, with the upper bound precomputed.

    Accepts str, bytes (ASCII text from a `text_factory = bytes` connection), int, float and
    datetime; the type checks come most common first.
    """
    cls = value.__class__
    if cls is bytes:
        try:
            value = value.decode("ascii")  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            raise BadTimestamp(f"timestamp {_preview(value)} is not ASCII text") from None
        cls = str
    if cls is str:
        micros = _text_micros(value)  # type: ignore[arg-type]
    elif cls is int:
        micros = _int_micros(value)  # type: ignore[arg-type]
    elif cls is float:
        micros = _float_micros(value)  # type: ignore[arg-type]
    elif value is None:
        raise BadTimestamp("timestamp is NULL")
    elif isinstance(value, bool):
        raise BadTimestamp(f"timestamp {value!r} is a boolean, not a time")
    elif isinstance(value, datetime):
        micros = datetime_micros(value)
    else:
        raise BadTimestamp(f"timestamp {_preview(value)} has unsupported type {cls.__name__}")
    if MIN_EPOCH_MICROS <= micros <= upper_bound:
        return micros
    raise _out_of_range(value, micros, upper_bound)


def datetime_micros(dt: datetime) -> int:
    """Exact epoch microseconds of `dt` (naive = UTC), by integer arithmetic, never float."""
    delta = dt - (_EPOCH_NAIVE if dt.tzinfo is None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _text_micros(text: str) -> int:
    if text.isdigit():
        return _numeric_text_micros(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _numeric_text_micros(text)
    # fromisoformat takes any character between date and time; ISO-8601/RFC 3339 allow these.
    if len(text) > 10 and text[10] not in "Tt " and text[4] == "-" and text[7] == "-":
        raise BadTimestamp(
            f"timestamp {_preview(text)}: date and time must be separated by 'T' or a space"
        )
    # datetime_micros inlined: this is the per-row common case.
    delta = parsed - (_EPOCH_NAIVE if parsed.tzinfo is None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _numeric_text_micros(text: str) -> int:
    """Text fromisoformat refused: padded or lower-case ISO, an epoch number, or unparseable."""
    stripped = text.strip()
    if stripped != text and stripped:
        return _text_micros(stripped)
    if "t" in text or "z" in text:  # RFC 3339 allows 't' and 'z'; fromisoformat does not
        try:
            return _text_micros(text.upper())
        except BadTimestamp:
            pass  # report the text as it was, below
    # int() and float() also take '1_000' and non-ASCII digits: neither is an epoch number here.
    if stripped.isascii() and "_" not in stripped:
        unsigned = stripped[1:] if stripped[:1] in "+-" else stripped
        if unsigned.isdigit():
            return _int_micros(int(stripped))
        try:
            number = float(stripped)
        except ValueError:
            pass
        else:
            return _float_micros(number)
    raise BadTimestamp(
        f"timestamp {_preview(text)} is neither ISO-8601 nor an epoch number (s, ms or us)"
    )


def _int_micros(value: int) -> int:
    magnitude = -value if value < 0 else value
    if magnitude < MILLIS_FROM:
        return value * 1_000_000
    if magnitude < MICROS_FROM:
        return value * 1_000
    if magnitude < TOO_LARGE_FROM:
        return value
    raise BadTimestamp(
        f"epoch timestamp {value} is too large for seconds, milliseconds or microseconds "
        "(nanoseconds are not accepted)"
    )


def _float_micros(value: float) -> int:
    if value - value != 0.0:  # true exactly for NaN and +-inf, without a function call
        raise BadTimestamp(f"timestamp {value!r} is not a finite number")
    magnitude = -value if value < 0 else value
    if magnitude < MILLIS_FROM:
        return round(value * 1_000_000)
    if magnitude < MICROS_FROM:
        return round(value * 1_000)
    if magnitude < TOO_LARGE_FROM:
        return round(value)
    raise BadTimestamp(
        f"epoch timestamp {value!r} is too large for seconds, milliseconds or microseconds "
        "(nanoseconds are not accepted)"
    )


def _out_of_range(value: object, micros: int, upper_bound: int) -> BadTimestamp:
    """The error for an absurd time, saying how the value was read (unit) and as what time."""
    reading = _describe(value)
    when = _format_micros(micros)
    if micros < MIN_EPOCH_MICROS:
        return BadTimestamp(
            f"timestamp {_preview(value)}{reading} is {when}, "
            f"before {_format_micros(MIN_EPOCH_MICROS)} (the earliest accepted)"
        )
    return BadTimestamp(
        f"timestamp {_preview(value)}{reading} is {when}, more than {_FUTURE_TEXT} after now "
        f"(latest accepted: {_format_micros(upper_bound)})"
    )


def _describe(value: object) -> str:
    if value.__class__ is str:
        try:
            value = float(value.strip())  # type: ignore[attr-defined]
        except ValueError:
            return ""
    if value.__class__ not in (int, float):
        return ""
    magnitude = abs(value)  # type: ignore[arg-type]
    if magnitude < MILLIS_FROM:
        return " read as epoch seconds"
    if magnitude < MICROS_FROM:
        return " read as epoch milliseconds"
    return " read as epoch microseconds"


def _format_micros(micros: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{micros} microseconds from the epoch"


def _preview(value: object) -> str:
    """A short ASCII-only rendering of a value: error messages end up in DLQ headers."""
    text = ascii(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."
