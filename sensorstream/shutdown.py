"""Ctrl-C and SIGTERM as a request to stop cleanly, for every long-running command.

The commands finish the unit of work in hand (a SQLite write batch, a Kafka transaction, a
Delta commit) and exit, instead of dying in the middle of it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `stop`, so the run ends after committing its current batch.

    A second Ctrl-C interrupts at once. Outside the main thread signals cannot be handled, and
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    requested: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and requested:
            raise KeyboardInterrupt
        requested.append(signum)
        # Event.set takes a non-reentrant lock that this very thread may hold inside
        # Event.wait when the signal lands; setting it from another thread cannot deadlock.
        threading.Thread(target=stop.set, name="sensorstream-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
