"""The cyclic garbage collector kept out of the sink's way while it works.

The sink allocates a Python object or two per consumed message (confluent-kafka's `Message`
objects are GC-tracked) and makes no reference cycles of its own. With the default thresholds
the collector ran thousands of times per million messages, and each full collection walked
every object the process held, start-up's included: the largest single item of the sink's
loop in the issue 5 profile (GC was ~30% of it). Freezing what start-up created moves it out
of every later collection, and a higher first threshold makes collections rarer; collections
still run, so a cycle created by a library is still freed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 20)
"""gc thresholds inside `quiet_gc` (the defaults are 700, 10, 10)."""


@contextmanager
def quiet_gc(thresholds: tuple[int, int, int] = THRESHOLDS) -> Iterator[None]:
    """Freeze the objects alive now and raise the thresholds; both undone on exit."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
