"""The sink's cap on glibc malloc arenas and its fixed mmap threshold: set from inside the
process unless the operator chose (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`), and harmless
where there is no glibc."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from sinks import malloc_arenas
from sinks.malloc_arenas import limit_malloc_arenas


def recorded_mallopt_calls(monkeypatch) -> list[tuple[int, int]]:
    """The `mallopt` calls the module makes from now on, to a stand-in libc that takes them."""
    calls: list[tuple[int, int]] = []

    class Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(malloc_arenas.ctypes, "CDLL", lambda _: Libc())
    return calls


def test_an_operators_choice_in_the_environment_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    calls = recorded_mallopt_calls(monkeypatch)
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


FREED_BLOCK = """
import ctypes, re, sys
from sinks.malloc_arenas import fix_mmap_threshold

def rss_kb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

fixed = fix_mmap_threshold() if sys.argv[1] == "fixed" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def use_and_free(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
use_and_free(24 << 20)  # a first batch's block: mmapped, and freed
before = rss_kb()
use_and_free(16 << 20)  # the next batch's
print(fixed, (rss_kb() - before) // 1024)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("mode", ["fixed", "glibc-default"])
def test_a_large_freed_block_leaves_no_resident_memory_once_the_threshold_is_fixed(
    mode: str, monkeypatch
) -> None:
    """By default glibc raises its mmap threshold to each freed mapped block's size, so the
    next batch's large block comes from the heap and stays resident once freed."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    out = subprocess.run(
        [sys.executable, "-c", FREED_BLOCK, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    ).stdout.split()
    fixed, retained_mb = out[0] == "True", int(out[1])
    if mode == "fixed":
        assert fixed
        assert retained_mb < 4
    else:
        assert retained_mb >= 12  # what the fixed threshold avoids


def test_an_operators_mmap_threshold_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    calls = recorded_mallopt_calls(monkeypatch)
    assert malloc_arenas.fix_mmap_threshold() is False
    assert calls == []
