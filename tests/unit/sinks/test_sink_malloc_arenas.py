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
