"""The sink's flush lanes (issue 6): a table's commits stay in order, one at a time, while its
next batch may already decode and different tables' flushes run side by side, so a slow
30-second table never holds back the emergency table's batch or the commit of its offsets."""

from __future__ import annotations

import threading

import pytest

from sinks.flusher import FlushLanes


def same(prepared):
    return prepared


def test_a_slow_lane_does_not_hold_back_another_lane() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    release_bulk = threading.Event()

    def bulk() -> str:
        assert release_bulk.wait(10)
        return "raw"

    lanes.submit("raw", bulk, same, rows=30_000)
    lanes.submit("emergency", lambda: "emergency", same, rows=10)
    lanes.wait("emergency")
    assert landed == ["emergency"]
    assert lanes.rows_in_flight == 30_000

    release_bulk.set()
    lanes.wait()
    assert landed == ["emergency", "raw"]
    assert lanes.rows_in_flight == 0


def test_a_lane_commits_one_at_a_time_in_order() -> None:
    landed: list[int] = []
    committing = 0
    most_at_once = 0
    guard = threading.Lock()
    lanes: FlushLanes[str, int] = FlushLanes(landed.append)

    def commit(n: int) -> int:
        nonlocal committing, most_at_once
        with guard:
            committing += 1
            most_at_once = max(most_at_once, committing)
        threading.Event().wait(0.01 * (5 - n))  # earlier batches commit slower
        with guard:
            committing -= 1
        return n

    for n in range(5):
        lanes.submit("raw", lambda n=n: n, commit, rows=1)
    lanes.wait()
    assert landed == [0, 1, 2, 3, 4]
    assert most_at_once == 1


def test_the_next_batch_decodes_while_the_previous_one_commits() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    first_committing = threading.Event()
    second_prepared = threading.Event()

    def slow_commit(name: str) -> str:
        first_committing.set()
        assert second_prepared.wait(10), "the second batch was not decoded meanwhile"
        return name

    def prepare_second() -> str:
        assert first_committing.wait(10)
        second_prepared.set()
        return "second"

    lanes.submit("raw", lambda: "first", slow_commit, rows=1)
    assert not lanes.busy("raw")  # one more may decode meanwhile
    lanes.submit("raw", prepare_second, same, rows=1)
    assert lanes.busy("raw")  # a third would wait
    lanes.wait()
    assert landed == ["first", "second"]


def test_a_large_batch_being_committed_holds_back_the_next_ones_decoding() -> None:
    """Two large batches at once (one decoding, one being written) were most of the sink's
    peak memory while catching up: past `ahead_bytes` in flight, the next batch is handed over
    only once the previous one has landed, so it is never decoded beside it."""
    events: list[str] = []
    guard = threading.Lock()
    lanes: FlushLanes[str, str] = FlushLanes(lambda _: None, ahead_bytes=1000)

    def note(what: str) -> None:
        with guard:
            events.append(what)

    def commit(name: str) -> str:
        note(f"commit {name} starts")
        threading.Event().wait(0.05)  # the later decode would run meanwhile if allowed
        note(f"commit {name} ends")
        return name

    def prepare(name: str):
        return lambda: note(f"decode {name}") or name

    lanes.submit("raw", prepare("small"), commit, rows=1, size=10)
    assert not lanes.busy("raw")  # a small batch in flight: the next may decode ahead
    lanes.wait()
    lanes.submit("raw", prepare("large"), commit, rows=1, size=1000)
    assert lanes.busy("raw")
    lanes.submit("raw", prepare("next"), commit, rows=1, size=1000)
    lanes.wait()
    assert events.index("decode next") > events.index("commit large ends")

    sizes = FlushLanes(lambda _: None)  # the default bound: batches of a backlog
    sizes.submit("raw", lambda: None, lambda _: threading.Event().wait(0.05), 1, 8 << 20)
    assert sizes.busy("raw")
    sizes.wait()


def test_results_reach_on_done_only_on_the_calling_thread() -> None:
    """Offsets are committed with the consumer, which belongs to the sink's own thread."""
    threads: list[str] = []
    lanes: FlushLanes[str, None] = FlushLanes(
        lambda _: threads.append(threading.current_thread().name)
    )
    lanes.submit("raw", lambda: None, same, rows=1)
    lanes.submit("dlq", lambda: None, same, rows=1)
    lanes.wait()
    assert threads == [threading.current_thread().name] * 2


def test_after_a_failed_flush_its_lane_commits_nothing_more() -> None:
    landed: list[str] = []
    committed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    release = threading.Event()

    def broken(_: str) -> str:
        assert release.wait(10)
        raise OSError("s3 unreachable")

    def commit(name: str) -> str:
        committed.append(name)
        return name

    lanes.submit("raw", lambda: "first", broken, rows=1)
    lanes.submit("raw", lambda: "second", commit, rows=1)
    release.set()
    with pytest.raises(OSError, match="s3 unreachable"):
        lanes.wait()
    assert landed == [] and committed == []


def test_poll_hands_over_finished_flushes_without_waiting_for_running_ones() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append)
    release = threading.Event()
    lanes.submit("raw", lambda: release.wait(10) and "raw", same, rows=1)
    lanes.submit("emergency", lambda: "emergency", same, rows=1)
    for _ in range(200):
        lanes.poll()
        if landed:
            break
        threading.Event().wait(0.005)
    assert landed == ["emergency"]
    assert lanes.rows_in_flight == 1
    release.set()
    lanes.wait()
    assert landed == ["emergency", "raw"]


def test_foreground_mode_flushes_on_the_calling_thread() -> None:
    landed: list[str] = []
    lanes: FlushLanes[str, str] = FlushLanes(landed.append, background=False)
    lanes.submit("raw", lambda: threading.current_thread().name, same, rows=1)
    assert landed == [threading.current_thread().name]
    assert not lanes.busy("raw")


def test_each_handover_and_wait_is_reported_to_on_blocked() -> None:
    """The sink benchmark's "loop waiting for lanes": every submit and wait, with its span."""
    spans: list[tuple[float, float]] = []
    lanes: FlushLanes[str, int] = FlushLanes(lambda _: None, on_blocked=lambda *s: spans.append(s))
    release = threading.Event()

    def slow() -> int:
        assert release.wait(10)
        return 1

    lanes.submit("raw", slow, same, rows=1)
    assert len(spans) == 1
    threading.Timer(0.05, release.set).start()
    lanes.wait("raw")
    assert len(spans) == 2
    started, ended = spans[1]
    assert ended - started >= 0.04  # the wait lasted until the flush was released
    lanes.wait()
    assert len(spans) == 3
