"""A route's `transform` block: privacy and precision changes, in the order drop → hash → round.

Dropping first means a field cannot be both removed and published hashed by accident (the
loader refuses that combination anyway); hashing before rounding keeps a hashed field's digest
independent of the rounding settings.

Hashing: SHA-256 hex of the value's UTF-8 text followed by the salt (from the environment
variable `salt_env` when set, read once at load). Without a salt, low-entropy values (serial
numbers, instance ids) can be recovered by hashing candidates, so set one in production. Null
stays null; numbers hash their decimal text, timestamps their ISO-8601 text.

Rounding: Python's round(), i.e. half to even on the binary value (round(0.125, 2) == 0.12);
integers stay integers. A non-number in a rounded field is a record-level failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stream_apps.routing.validation import RuleFailure, preview


class Transformer:
    """The transforms of one route, prepared once; `apply` runs per record."""

    def __init__(
        self,
        round_digits: Mapping[str, int] | None = None,
        drop: Sequence[str] = (),
        hash_fields: Sequence[str] = (),
        salt: str = "",
    ) -> None:
        self.drop = tuple(drop)
        self.hash_fields = tuple(hash_fields)
        self.round_digits = tuple((round_digits or {}).items())
        self._salt = salt.encode("utf-8")

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A transformed copy of `record`; RuleFailure for a value that cannot be rounded."""
        out = dict(record)
        for name in self.drop:
            out.pop(name, None)
        for name in self.hash_fields:
            value = out.get(name)
            if value is not None:
                out[name] = self.digest(value)
        for name, digits in self.round_digits:
            value = out.get(name)
            cls = value.__class__
            if cls is float or cls is int:
                out[name] = round(value, digits)
            elif value is not None:
                raise RuleFailure(f"transform.round.{name}: {preview(value)} is not a number")
        return out

    def digest(self, value: Any) -> str:
        if value.__class__ is bytes:
            data = value
        elif value.__class__ is bool:
            data = b"true" if value else b"false"
        elif isinstance(value, datetime):
            data = value.isoformat().encode("utf-8")
        elif value.__class__ is float:
            data = repr(value).encode("utf-8")
        else:
            data = str(value).encode("utf-8")
        return hashlib.sha256(data + self._salt).hexdigest()
