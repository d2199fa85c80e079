"""Data-quality expectations: rules as data, applied the same way by the job and by a
Lakeflow (DLT) pipeline.

A rule is a name, a Spark SQL condition and an action, with Lakeflow's three actions:
* `warn`: the row stays; the rule's failures are counted (the quality table, the logs);
* `drop`: the row is removed from the output and counted;
* `fail`: any failing row stops the update before anything is written.

A row passes a rule only when the condition is true: NULL counts as a failure. Lakeflow gets
each condition wrapped in `coalesce(..., false)`, so both engines agree on NULLs whatever
either's default; rules should still say what a missing value means (`x IS NULL OR ...`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import reduce
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


class Action(StrEnum):
    WARN = "warn"
    DROP = "drop"
    FAIL = "fail"


@dataclass(frozen=True)
class Expectation:
    name: str
    condition: str
    """A Spark SQL boolean expression over the checked table's columns."""
    action: Action
    why: str = ""

    def passes(self) -> Column:
        return F.coalesce(F.expr(self.condition), F.lit(False))


@dataclass(frozen=True)
class Outcome:
    """What one application of the rules found, per rule: rows that did not pass."""

    checked: int
    failures: dict[str, int]
    dropped: int
    rules: tuple[Expectation, ...] = field(repr=False)

    def failed(self, action: Action) -> dict[str, int]:
        return {r.name: self.failures[r.name] for r in self.rules if r.action is action}


class ExpectationFailed(RuntimeError):
    """A `fail` rule found rows that broke it; nothing of the batch was written."""

    def __init__(self, table: str, failures: dict[str, int], checked: int) -> None:
        broken = ", ".join(f"{name} ({n} of {checked} rows)" for name, n in failures.items())
        super().__init__(f"{table}: expectations with action fail were broken: {broken}")
        self.table = table
        self.failures = failures


def validate(rules: Sequence[Expectation], frame: DataFrame) -> None:
    """Every rule named once and a condition Spark can resolve on `frame`, or a ValueError
    naming the rule: a typo in a rule must not read as 'every row failed'."""
    seen: set[str] = set()
    for rule in rules:
        if not rule.name or rule.name in seen:
            raise ValueError(f"expectation {rule.name!r}: names must be non-empty and unique")
        seen.add(rule.name)
        if not isinstance(rule.action, Action):
            raise ValueError(f"expectation {rule.name}: unknown action {rule.action!r}")
        try:
            frame.select(F.expr(rule.condition)).schema  # noqa: B018 - analysis only
        except AnalysisException as exc:
            raise ValueError(
                f"expectation {rule.name}: {rule.condition!r} is not a condition on this "
                f"table: {exc.getMessage()}"
            ) from None


def evaluate(
    frame: DataFrame, rules: Sequence[Expectation], table: str
) -> tuple[DataFrame, Outcome]:
    """The rows of `frame` that `drop` rules keep, and the counts of every rule.

    One aggregation counts all rules at once; `fail` rules raise ExpectationFailed before the
    caller writes anything. `frame` is read twice (counts, then rows): cache it when it is
    expensive to compute.
    """
    rules = tuple(rules)
    validate(rules, frame)
    drops = [r.passes() for r in rules if r.action is Action.DROP]
    keep = reduce(lambda a, b: a & b, drops, F.lit(True))
    counts = frame.agg(
        F.count(F.lit(1)),
        F.sum(F.when(~keep, 1).otherwise(0)),
        *[F.sum(F.when(~r.passes(), 1).otherwise(0)) for r in rules],
    ).first()
    checked, dropped = int(counts[0]), int(counts[1] or 0)
    failures = {r.name: int(counts[i + 2] or 0) for i, r in enumerate(rules)}
    outcome = Outcome(checked, failures, dropped, rules)
    broken = {name: n for name, n in outcome.failed(Action.FAIL).items() if n}
    if broken:
        raise ExpectationFailed(table, broken, checked)
    return frame.filter(keep), outcome


QUALITY_SCHEMA = StructType(
    [
        StructField("table_name", StringType(), False),
        StructField("batch_id", LongType(), False),
        StructField("rule", StringType(), False),
        StructField("action", StringType(), False),
        StructField("checked_rows", LongType(), False),
        StructField("failed_rows", LongType(), False),
        StructField("evaluated_at", TimestampType(), False),
    ]
)


def quality_rows(outcome: Outcome, table: str, batch_id: int) -> list[tuple[Any, ...]]:
    """One row per rule for the quality table, the job's counterpart of Lakeflow's event log."""
    now = datetime.now(UTC)
    return [
        (table, batch_id, r.name, str(r.action), outcome.checked, outcome.failures[r.name], now)
        for r in outcome.rules
    ]


def lakeflow_expectations(rules: Iterable[Expectation]) -> dict[Action, dict[str, str]]:
    """The rules grouped the way `expect_all`, `expect_all_or_drop` and `expect_all_or_fail`
    take them, each condition NULL-safe as in `evaluate`."""
    grouped: dict[Action, dict[str, str]] = {action: {} for action in Action}
    for rule in rules:
        grouped[rule.action][rule.name] = f"coalesce(({rule.condition}), false)"
    return grouped


def lakeflow_decorator(dlt: Any, rules: Iterable[Expectation]) -> Callable:
    """A decorator applying the rules to a Lakeflow table function; `dlt` is the pipeline
    module (`import dlt`), passed in because it exists only inside a pipeline."""
    grouped = lakeflow_expectations(rules)
    apply = {
        Action.WARN: dlt.expect_all,
        Action.DROP: dlt.expect_all_or_drop,
        Action.FAIL: dlt.expect_all_or_fail,
    }

    def decorate(function: Callable) -> Callable:
        for action, conditions in grouped.items():
            if conditions:
                function = apply[action](conditions)(function)
        return function

    return decorate
