"""The sink's cap on glibc malloc arenas: set from inside the process unless the operator chose
with `MALLOC_ARENA_MAX`, and harmless where there is no glibc."""

from __future__ import annotations

import ctypes
import platform

from sinks import malloc_arenas
from sinks.malloc_arenas import limit_malloc_arenas


def test_an_operators_choice_in_the_environment_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    calls: list[tuple[int, int]] = []

    class Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(malloc_arenas.ctypes, "CDLL", lambda _: Libc())
    assert limit_malloc_arenas() is False
    assert calls == []


def test_without_mallopt_nothing_happens(monkeypatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)

    class NoMallopt:  # musl, macOS: no such symbol
        pass

    monkeypatch.setattr(malloc_arenas.ctypes, "CDLL", lambda _: NoMallopt())
    assert limit_malloc_arenas() is False


def test_the_cap_is_set_exactly_where_glibc_is(monkeypatch) -> None:
    """No skip: on glibc the cap must be set; anywhere else the call must do nothing."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is on_glibc
    if on_glibc:
        assert ctypes.CDLL(None).mallopt(malloc_arenas.M_ARENA_MAX, malloc_arenas.ARENAS) == 1


def test_free_memory_is_released_at_most_once_per_interval(monkeypatch) -> None:
    """`malloc_trim` walks the whole heap (about 8 ms on a 400 MB one): with a commit every
    second or so, trimming after each batch cost about a fifth of a commit's CPU."""
    trims: list[int] = []

    class MallocTrim:  # a ctypes function: takes argtypes and restype
        def __call__(self, pad: int) -> int:
            trims.append(pad)
            return 1

    class Libc:
        malloc_trim = MallocTrim()

    monkeypatch.setattr(malloc_arenas.ctypes, "CDLL", lambda _: Libc())
    now = [1000.0]
    release = malloc_arenas.FreeMemoryRelease(every_s=5.0, clock=lambda: now[0])
    assert release() is True
    for _ in range(10):  # batches landing within the interval
        now[0] += 0.4
        assert release() is False
    now[0] += 1.5  # past 5 s since the trim
    assert release() is True
    assert len(trims) == 2
