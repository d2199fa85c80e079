"""Named crash points, so tests can kill a process at the exact moment that matters.

`SENSORSTREAM_FAILPOINTS="producer.before_commit=3"` makes the third pass through
`failpoint("producer.before_commit")` kill the process with SIGKILL: no cleanup, no flush, as a
power cut or the OOM killer would. Without the variable a failpoint is one dict lookup.
Exactly-once claims are only worth the crash points they were tested at.
"""

from __future__ import annotations

import os
import signal

_ENV = "SENSORSTREAM_FAILPOINTS"


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition("=")
        armed[name.strip()] = int(count or "1")
    return armed


_armed = _parse(os.environ.get(_ENV, ""))
_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
