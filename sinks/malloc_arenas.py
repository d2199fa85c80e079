"""Fewer glibc malloc arenas for the sink, and large blocks mapped on their own, so its
resident memory stays flat.

Every flush runs on a thread of its own, and several tables flush at once; glibc gives each
concurrent thread an arena of its own (up to 8 per core) and returns little of an arena's
freed memory to the system. Under a sustained 2,000 rows/s the sink's RSS grew from 737 MB in
its first minute to 983 MB in its sixth (1,343 MB at peak), and past 1.2 GB over 30 minutes;
with two arenas it stayed at 572 -> 558 MB (889 MB at peak), at the same CPU. That is what
`MALLOC_ARENA_MAX=2` in the environment does, set here from inside the process so that every
way of starting the sink gets it. glibc reads the limit when it first needs more than eight
arenas, so this must run early: before the flush threads exist.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sensorstream.sink")

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""
M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for the size from which a block is mmapped (glibc's malloc.h)."""

ARENAS = 2
MMAP_THRESHOLD = 1024 * 1024
"""Blocks of this size and more get mappings of their own, unmapped when freed.

glibc starts at 128 KiB but raises the threshold to the size of each mmapped block freed, up
to 32 MiB: after the first batch, a batch's Avro block and Python's larger buffers (several
MB each) came from the heaps instead, and their space stayed resident once freed, between
live blocks where neither the heap's top nor `malloc_trim` gives it back. Fixed at 1 MiB, the
sink's peak RSS on a 1M-record backlog fell by about a sixth (docs/benchmarks.md, "Sink
memory"); a mapping per large block costs a few system calls per batch."""


def _glibc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """glibc's function `name`, returning a C int, or None where there is none (musl, macOS)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


def _mallopt(param: int, value: int, variable: str) -> bool:
    """`mallopt(param, value)` unless the environment `variable` already chose; True when
    set here. Elsewhere than glibc (musl, macOS) this does nothing."""
    if os.environ.get(variable):
        return False
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    if mallopt(param, value) != 1:  # mallopt returns 1 on success
        log.debug("mallopt(%d, %d) refused", param, value)
        return False
    return True


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas`, unless `MALLOC_ARENA_MAX` already chose; True
    when the cap was set here. Elsewhere than glibc (musl, macOS) this does nothing."""
    return _mallopt(M_ARENA_MAX, arenas, "MALLOC_ARENA_MAX")


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Map blocks of `threshold` bytes and more on their own, for good (`MMAP_THRESHOLD`),
    unless `MALLOC_MMAP_THRESHOLD_` already chose; True when set here."""
    return _mallopt(M_MMAP_THRESHOLD, threshold, "MALLOC_MMAP_THRESHOLD_")


def release_free_memory() -> bool:
    """Give glibc's free memory back to the system (`malloc_trim`); True when it did.

    glibc returns only the top of a heap on its own: after a flush, the pages its buffers
    (Python's larger objects, librdkafka's fetches) freed in the middle of a heap stay
    resident until reused. Called after landed batches (at most every `RELEASE_EVERY_S`, see
    `FreeMemoryRelease`), it kept the sink's RSS 60-80 MB lower on a backlog. Elsewhere than
    glibc it does nothing.
    """
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    return trim is not None and trim(0) == 1


RELEASE_EVERY_S = 5.0
"""Seconds between two `malloc_trim` calls at most (see `FreeMemoryRelease`)."""


class FreeMemoryRelease:
    """`release_free_memory`, at most once every `every_s` seconds, whichever thread asks.

    `malloc_trim` walks every free chunk of every arena: about 8 ms of CPU on a 400 MB heap,
    whatever a batch freed. Called after every landed batch, with tables flushed every 1-3 s
    (several commits a second), that was a fifth of the sink's CPU per commit. Trimming every
    few seconds returns the same pages: what a batch freed and the next did not reuse.
    """

    def __init__(
        self, every_s: float = RELEASE_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        """Trim if the last trim is `every_s` old; True when this call trimmed."""
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.every_s:
                return False
            self._last = now
        return release_free_memory()
