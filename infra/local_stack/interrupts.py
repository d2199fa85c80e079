"""Ctrl-C (or SIGTERM) as a request to stop cleanly, never an exception halfway through.

A run that started processes has to stop them: a KeyboardInterrupt raised in the middle of
that would leave some running. The request is a flag the run looks at between steps.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator


class StopRequests:
    """Ctrl-C (or SIGTERM) as a request: the first stops the pipeline cleanly, a second hurries.

    A flag rather than KeyboardInterrupt, so the demo is never interrupted halfway through
    stopping its children. Signals within a second of the first count as the same request:
    a terminal's Ctrl-C reaches both `uv run` and the demo, and uv forwards its copy too.
    """

    def __init__(self) -> None:
        self.first: float | None = None
        self.hurry = False

    @property
    def requested(self) -> bool:
        return self.first is not None

    def _on_signal(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        elif now - self.first > 1.0:
            self.hurry = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless a stop is requested; True when one was."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.requested
