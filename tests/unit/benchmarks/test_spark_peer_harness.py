"""The pure parts of the Spark comparison benchmark: reading /proc, the exactness verdict and
the summary of a streaming query's progress. The benchmark itself runs outside the suite."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.process_tree import CLOCK_TICKS, TreeMonitor, descendants, parse_stat, status_kb
from benchmarks.spark_peer import exactness, micro_batches


def test_parse_stat_counts_fields_after_a_command_name_with_spaces_and_parentheses():
    fields_after_comm = ["S", "41", *["0"] * 9, str(3 * CLOCK_TICKS), str(CLOCK_TICKS), "0"]
    text = "1234 (java (main) x) " + " ".join(fields_after_comm) + "\n"

    assert parse_stat(text) == (41, 4.0)


def test_status_kb_reads_a_field_and_is_zero_for_a_zombie():
    text = "Name:\tjava\nVmHWM:\t  524288 kB\nVmRSS:\t  1024 kB\n"

    assert status_kb(text, "VmHWM") == 524288
    assert status_kb(text, "VmRSS") == 1024
    assert status_kb("Name:\tjava\nState:\tZ (zombie)\n", "VmHWM") == 0


def test_descendants_follow_the_chain_of_parents_and_nothing_else():
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 30: 99}

    assert descendants(10, parents) == {10, 11, 12}
    assert descendants(30, parents) == {30}


def test_the_monitor_sees_a_grandchild_and_its_cpu():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
    burn += "time.sleep(60)\n"
    script = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn!r}])\n"
    parent = subprocess.Popen([sys.executable, "-c", script])
    monitor = TreeMonitor(parent.pid, interval_s=0.05)
    monitor.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if monitor.usage.cpu_seconds() >= 0.5 and len(monitor.usage.processes) == 2:
                break
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
        usage = monitor.stop()
    assert len(usage.processes) == 2
    assert usage.cpu_seconds() >= 0.5
    assert usage.peak_tree_rss_kb >= max(p.peak_rss_kb for p in usage.processes.values()) > 0
    grandchild = [p for pid, p in usage.processes.items() if pid != parent.pid]
    assert "process_time" in grandchild[0].command


@pytest.mark.parametrize(
    ("rows", "offsets", "rowids", "exact"),
    [
        (1000, 1000, 1000, True),
        (1001, 1000, 1000, False),  # a record landed twice
        (999, 999, 999, False),  # a record missing
        (1000, 1000, 999, False),  # two Kafka records of one source row
    ],
)
def test_exactness_needs_every_record_once_by_offset_and_by_source_row(
    rows, offsets, rowids, exact
):
    verdict = exactness(1000, rows, offsets, rowids)

    assert verdict["exact"] is exact
    assert verdict["duplicates"] == rows - offsets
    assert verdict["missing"] == 1000 - offsets


def test_micro_batches_sum_rows_and_phases_and_skip_empty_triggers():
    progress = [
        {"numInputRows": 250, "durationMs": {"addBatch": 900, "walCommit": 40}},
        {"numInputRows": 150, "durationMs": {"addBatch": 600, "walCommit": 35}},
        {"numInputRows": 0, "durationMs": {"latestOffset": 3}},
    ]

    assert micro_batches(progress) == {
        "count": 2,
        "input_rows": 400,
        "duration_ms": {"addBatch": 1500, "walCommit": 75, "latestOffset": 3},
    }
