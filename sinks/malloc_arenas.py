"""Fewer glibc malloc arenas for the sink, so its resident memory stays flat.

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

log = logging.getLogger("sensorstream.sink")

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""

ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas`, unless `MALLOC_ARENA_MAX` already chose; True
    when the cap was set here. Elsewhere than glibc (musl, macOS) this does nothing."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:  # mallopt returns 1 on success
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
        return False
    return True


def release_free_memory() -> bool:
    """Give glibc's free memory back to the system (`malloc_trim`); True when it did.

    glibc returns only the top of a heap on its own: after a flush, the pages its buffers
    (Python's larger objects, librdkafka's fetches) freed in the middle of a heap stay
    resident until reused. Called once per landed batch, it kept the sink's RSS 60-80 MB
    lower on a backlog for a few milliseconds per batch. Elsewhere than glibc it does nothing.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return trim(0) == 1
