"""Exponential backoff with jitter, for every wait on a server that is not answering.

Shared by the components because they all face the same outage (the edge losing its uplink)
and should behave alike in it: retry quickly at first, then settle at a ceiling, never in
lock-step with other nodes (jitter), and never busy-loop.
"""

from __future__ import annotations

import random
import threading


class Backoff:
    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.attempts = 0

    def next_delay(self) -> float:
        try:
            base = min(self.max_s, self.initial_s * self.factor**self.attempts)
        except OverflowError:  # ~1000 attempts: hours offline, long since at the ceiling
            base = self.max_s
        self.attempts += 1
        return base * random.uniform(0.5, 1.0)

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep the next delay; returns True when `stop` was set meanwhile."""
        delay = self.next_delay()
        if stop is None:
            threading.Event().wait(delay)
            return False
        return stop.wait(delay)

    def reset(self) -> None:
        self.attempts = 0
