"""Logging for long-running commands: one line per event, and librdkafka's chatter throttled.

When the broker is unreachable, librdkafka reports every failed connection attempt; an edge
node offline for hours would fill its disk with them. `kafka_logger()` gives clients a logger
that passes each distinct message at most once per interval, with a count of what it held back.
"""

from __future__ import annotations

import logging
import sys
import time

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def silence_known_warnings() -> None:
    """Hide third-party warnings that tell an operator nothing they can act on.

    confluent-kafka's registry client imports authlib, whose httpx integration announces its
    own deprecation at import time through a filter it forces to "always"; the filter is
    installed here first, in front of authlib's, so it wins.
    """
    import warnings

    import authlib.deprecate

    warnings.filters[:] = [
        f for f in warnings.filters if f[2] is not authlib.deprecate.AuthlibDeprecationWarning
    ]
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")


def configure(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_sensorstream", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._sensorstream = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request


class ThrottleFilter(logging.Filter):
    """Lets a message through once per `interval_s` per (logger, text-without-digits)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        shape = "".join(ch for ch in text if not ch.isdigit())[:200]
        key = (record.name, shape)
        now = time.monotonic()
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{text} ({held} similar messages held back)"
            record.args = ()
        self._last[key] = (now, 0)
        return True


def kafka_logger(name: str = "sensorstream.kafka", interval_s: float = 60.0) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, ThrottleFilter) for f in logger.filters):
        logger.addFilter(ThrottleFilter(interval_s))
    return logger
