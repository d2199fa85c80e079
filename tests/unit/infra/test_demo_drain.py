"""The demo's drain: it waits while the pipeline makes progress, however slowly, and gives up
only after a whole stall window in which no stage did any work.

The drain is pure logic over what the stages owe, so it is driven here by a scripted pipeline
and a clock that moves only when told: what a slow machine does in minutes runs in no time.
"""

from __future__ import annotations

from collections.abc import Iterator

from infra.local_stack.drain import STALL_WINDOW_S, Drain, DrainState, describe, owed
from infra.local_stack.snapshot import Snapshot

STEP_S = 1.0  # one refresh of the demo's progress view


def run(script: Iterator[tuple[dict[str, int], bool]]) -> tuple[DrainState, float]:
    """Feed the drain one observation per second until it stops waiting; (state, seconds)."""
    now = 0.0
    drain = Drain(now)
    for stages, caught_up in script:
        now += STEP_S
        state = drain.observe(now, stages, caught_up)
        if state is not DrainState.WAITING:
            return state, now
    raise AssertionError("the script ended while the drain was still waiting")


def slow_pipeline(rows: int, per_step: int, every: int) -> Iterator[tuple[dict[str, int], bool]]:
    """A pipeline that lands `per_step` rows every `every` seconds, then stays caught up."""
    behind, step = rows, 0
    while True:
        step += 1
        if step % every == 0:
            behind = max(0, behind - per_step)
        yield {"router": 0, "sink sensors.raw": behind}, behind == 0


def test_a_slow_pipeline_is_waited_for_past_any_fixed_deadline() -> None:
    # The slow machine: 4,500 rows landed 300 every 20 s take five minutes.
    state, seconds = run(slow_pipeline(4_500, 300, every=20))
    assert state is DrainState.CAUGHT_UP
    assert seconds >= 300


def test_a_pipeline_without_progress_is_given_up_after_the_stall_window() -> None:
    stuck = iter([({"router": 0, "sink sensors.raw": 1_200}, False)] * 10_000)
    state, seconds = run(stuck)
    assert state is DrainState.STALLED
    assert STALL_WINDOW_S < seconds <= STALL_WINDOW_S + STEP_S


def test_the_stall_window_counts_from_the_last_progress() -> None:
    def script() -> Iterator[tuple[dict[str, int], bool]]:
        for behind in (900, 600, 300):  # progress for a while ...
            yield from [({"sink sensors.raw": behind}, False)] * 100
        while True:  # ... then stuck
            yield {"sink sensors.raw": 300}, False

    state, seconds = run(script())
    assert state is DrainState.STALLED
    assert seconds > 200 + STALL_WINDOW_S  # not from the start of the drain


def test_the_router_routing_while_the_sink_owes_more_is_progress() -> None:
    """Routed records make the sinks owe more; the total grows, yet the pipeline works."""

    def script() -> Iterator[tuple[dict[str, int], bool]]:
        for routed in range(0, 3_000, 10):  # five minutes of routing, 10 records a second
            yield {"router": 3_000 - routed, "sink sensors.raw": routed}, False
        for behind in range(3_000, -1, -100):
            yield {"router": 0, "sink sensors.raw": behind}, False
        while True:
            yield {"router": 0, "sink sensors.raw": 0}, True

    state, seconds = run(script())
    assert state is DrainState.CAUGHT_UP
    assert seconds > 300


def test_caught_up_needs_two_looks_in_a_row() -> None:
    script = iter(
        [
            ({"router": 0}, True),
            ({"router": 5}, False),  # the probe had not read the last records yet
            ({"router": 0}, True),
            ({"router": 0}, True),
        ]
    )
    state, seconds = run(script)
    assert state is DrainState.CAUGHT_UP
    assert seconds == 4 * STEP_S


def test_what_the_stages_owe_is_read_off_a_snapshot() -> None:
    snap = Snapshot(
        at=0.0,
        written={"node-a": 100, "node-b": 50},
        produced={"node-a": 100, "node-b": 20},
        topics={},
        router_lag=7,
        sink_lag={"sensors.raw": 3, "sensors.dlq": 0},
    )
    stages = owed(snap)
    assert stages == {
        "producer node-a": 0,
        "producer node-b": 30,
        "router": 7,
        "sink sensors.raw": 3,
        "sink sensors.dlq": 0,
    }
    assert describe(stages) == "producer node-b 30, router 7, sink sensors.raw 3"
