"""The delta_log benchmark builds its new table as the product makes one, and opens it at the
point the docs say: checkpoints at the table's own interval, the worst case `interval - 1`
commits after the last one, a fresh table of the same files beside it.

Small tables on a local path (the benchmark's own build); the figures themselves belong to the
benchmark's run, not here."""

from __future__ import annotations

import json

import pytest

from benchmarks import delta_log
from sinks.table_log import CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_INTERVAL


@pytest.mark.parametrize(
    ("version", "interval", "due", "after", "to_worst"),
    [
        (19, 20, True, 0, 19),
        (20, 20, False, 1, 18),
        (38, 20, False, 19, 0),
        (20000, 20, False, 1, 18),
        (19999, 100, True, 0, 99),
        (20018, 100, False, 19, 80),
    ],
)
def test_where_a_version_stands_against_the_checkpoints(version, interval, due, after, to_worst):
    assert delta_log.checkpoint_due(version, interval) is due
    assert delta_log.commits_after_checkpoint(version, interval) == after
    assert delta_log.commits_to_worst_case(version, interval) == to_worst


def test_a_table_without_an_interval_checkpoints_at_delta_rs_default():
    assert delta_log.table_checkpoint_interval({}) == 100
    assert delta_log.table_checkpoint_interval({CHECKPOINT_INTERVAL: None}) == 100
    assert delta_log.table_checkpoint_interval({CHECKPOINT_INTERVAL: "20"}) == 20


def test_the_new_table_checkpoints_at_the_products_interval_and_is_opened_at_its_worst(tmp_path):
    out = tmp_path / "delta_log.json"
    commits = 100
    argv = ["--commits", str(commits), "--real-commits", "5", "--no-s3", "--reps", "1"]
    # a retention longer than the run: nothing is cleaned, every checkpoint written stays
    assert delta_log.main([*argv, "--retention-s", "1000000", "--out", str(out)]) == 0

    results = json.loads(out.read_text())
    interval = DEFAULT_CHECKPOINT_INTERVAL
    assert results["params"]["checkpoint_interval"] == {
        "new": interval,
        "old": delta_log.OLD_CHECKPOINT_INTERVAL,
        "fresh": interval,
    }
    built = results["positions"]["end_of_build"]
    due = [v for v in range(1, commits + 1) if delta_log.checkpoint_due(v, interval)]
    assert built["log"]["new"]["checkpoints"] == len(due) == commits // interval
    assert built["log"]["old"]["checkpoints"] == 1  # version 99 only
    assert built["log"]["fresh"] == {**built["log"]["fresh"], "commit_files": 2, "checkpoints": 1}
    worst = results["positions"]["worst_case"]
    assert worst["commits_after_checkpoint"]["new"] == interval - 1
    assert worst["version"] == commits + results["params"]["worst_case_commits_appended"]
    assert results["judged_at"] == "worst_case"
