"""The sink's flush lanes (issue 6): a table's flushes stay in order, one at a time, while
different tables' flushes run side by side, so a slow 30-second table never holds back the
emergency table's batch or the commit of its offsets."""

from __future__ import annotations

import threading

import pytest

from sinks.flusher import FlushLanes


def test_a_slow_lane_does_not_hold_back_another_lane() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    release_bulk = threading.Event()

    def bulk() -> str:
        assert release_bulk.wait(10)
        return "raw"

    lanes.submit("raw", bulk, rows=30_000)
    lanes.submit("emergency", lambda: "emergency", rows=10)
    lanes.wait("emergency")
    assert landed == ["emergency"]
    assert lanes.busy("raw") and not lanes.busy("emergency")
    assert lanes.rows_in_flight == 30_000

    release_bulk.set()
    lanes.wait()
    assert landed == ["emergency", "raw"]
    assert lanes.rows_in_flight == 0


def test_a_lane_runs_its_flushes_one_at_a_time_in_order() -> None:
    landed: list[int] = []
    running = 0
    most_at_once = 0
    guard = threading.Lock()
    lanes: FlushLanes[str, int] = FlushLanes(landed.append)

    def flush(n: int):
        def run() -> int:
            nonlocal running, most_at_once
            with guard:
                running += 1
                most_at_once = max(most_at_once, running)
            threading.Event().wait(0.01)
            with guard:
                running -= 1
            return n

        return run

    for n in range(5):
        lanes.submit("raw", flush(n), rows=1)
    lanes.wait()
    assert landed == [0, 1, 2, 3, 4]
    assert most_at_once == 1


def test_results_reach_on_done_only_on_the_calling_thread() -> None:
    """Offsets are committed with the consumer, which belongs to the sink's own thread."""
    threads: list[str] = []
    lanes: FlushLanes[str, None] = FlushLanes(
        lambda _: threads.append(threading.current_thread().name)
    )
    lanes.submit("raw", lambda: None, rows=1)
    lanes.submit("dlq", lambda: None, rows=1)
    lanes.wait()
    assert threads == [threading.current_thread().name] * 2


def test_a_failed_flush_fails_the_next_call_and_is_not_handed_over() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)

    def broken() -> str:
        raise OSError("s3 unreachable")

    lanes.submit("raw", broken, rows=1)
    with pytest.raises(OSError, match="s3 unreachable"):
        lanes.wait()
    assert landed == []


def test_poll_hands_over_finished_flushes_without_waiting_for_running_ones() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    release = threading.Event()
    lanes.submit("raw", lambda: release.wait(10) and "raw", rows=1)
    lanes.submit("emergency", lambda: "emergency", rows=1)
    for _ in range(200):
        lanes.poll()
        if landed:
            break
        threading.Event().wait(0.005)
    assert landed == ["emergency"]
    assert lanes.busy("raw")
    release.set()
    lanes.wait()
    assert landed == ["emergency", "raw"]


def test_foreground_mode_flushes_on_the_calling_thread() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append, background=False)
    lanes.submit("raw", lambda: threading.current_thread().name, rows=1)
    assert landed == [threading.current_thread().name]
    assert not lanes.busy("raw")
