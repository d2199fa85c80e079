"""A route's `validate` block: normalise a record, then check it against the rules.

Normalising first means the rules see what the route will write: strings without surrounding
whitespace, timestamps as UTC datetimes, and no NaN or infinity (Delta, Spark and JSON consumers
all handle those badly, and they are never a real reading). A failing record is not written to
the route; the reason lists every broken rule as `rule.field: value ...` for the DLQ header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

TYPE_CHECKS = ("number", "integer", "string", "boolean")
_PREVIEW_CHARS = 40


class RuleFailure(ValueError):
    """A record that breaks a route's rules; the message is the dead-letter reason."""


def preview(value: Any) -> str:
    """Short, ASCII-only rendering of a value: reasons end up in Kafka headers."""
    text = value.isoformat() if isinstance(value, datetime) else ascii(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _is_number(value: Any) -> bool:
    return value.__class__ is int or value.__class__ is float


_TYPE_TESTS = {
    "number": _is_number,
    "integer": lambda value: value.__class__ is int,
    "string": lambda value: value.__class__ is str,
    "boolean": lambda value: value.__class__ is bool,
}


def _allowed_key(value: Any) -> tuple[str, Any]:
    """Typed membership: 1 and True are equal in Python, but not as allowed values."""
    if value.__class__ is bool:
        return ("boolean", value)
    return ("number", value) if _is_number(value) else (value.__class__.__name__, value)


class Validator:
    """Checks of one route, prepared once; `apply` runs per record."""

    def __init__(
        self,
        required: Sequence[str] = (),
        ranges: Mapping[str, tuple[float, float]] | None = None,
        types: Mapping[str, str] | None = None,
        allowed: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        self.required = tuple(required)
        self.ranges = tuple((name, low, high) for name, (low, high) in (ranges or {}).items())
        self.types = tuple((name, kind, _TYPE_TESTS[kind]) for name, kind in (types or {}).items())
        self.allowed = tuple(
            (name, frozenset(_allowed_key(v) for v in values), list(values))
            for name, values in (allowed or {}).items()
        )

    def apply(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """The normalised record; RuleFailure naming every broken rule.

        `record` itself when normalising changed nothing (the usual case): the router then
        knows the route's values are the input's and can forward the input's Avro body.
        """
        out, problems = _normalise(record)
        get = out.get
        for name in self.required:
            value = get(name)
            if value is None:
                problems.append(f"required.{name}: {'null' if name in out else 'missing'}")
            elif value.__class__ is str and not value:
                problems.append(f"required.{name}: blank")
        for name, kind, test in self.types:
            value = get(name)
            if value is not None and not test(value):
                problems.append(f"types.{name}: {preview(value)} is not a {kind}")
        for name, low, high in self.ranges:
            value = get(name)
            if value is None:
                continue
            if not _is_number(value):
                problems.append(f"ranges.{name}: {preview(value)} is not a number")
            elif not low <= value <= high:
                problems.append(
                    f"ranges.{name}: {preview(value)} is outside "
                    f"[{_number_text(low)}, {_number_text(high)}]"
                )
        for name, keys, values in self.allowed:
            value = get(name)
            if value is not None and _allowed_key(value) not in keys:
                problems.append(f"allowed.{name}: {preview(value)} is not one of {values!a}")
        if problems:
            raise RuleFailure("; ".join(problems))
        return out


def _normalise(record: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    # Copy on the first value that changes: most records need no change at all.
    out: dict[str, Any] | None = None
    problems: list[str] = []
    isfinite = math.isfinite
    for name, value in record.items():
        cls = value.__class__
        if cls is str:
            stripped = value.strip()
            if stripped is not value:
                if out is None:
                    out = dict(record)
                out[name] = stripped
        elif cls is float:
            if not isfinite(value):
                problems.append(f"finite.{name}: {value!r} is not a finite number")
        elif cls is datetime:
            tz = value.tzinfo
            if tz is not UTC:
                if out is None:
                    out = dict(record)
                out[name] = value.replace(tzinfo=UTC) if tz is None else value.astimezone(UTC)
    return (record if out is None else out), problems
