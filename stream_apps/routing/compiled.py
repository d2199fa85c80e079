"""Applying compiled routes to one decoded record: where it goes, and what fails where.

A record goes to every route whose condition holds, independently: one route's failure (a
rule broken, an expression that cannot be evaluated on this record, a topic value that is
not safe) becomes a RouteFailure for that route only, for the dead-letter topic, and the
other routes still get the record. No route matching is fine: nothing is owed to anyone.

Per route, in order: condition (`where`, and for alert routes the alert rules), topic (templates
render from the input record), then for re-encoding routes validate → transform → alert fields.
Passthrough routes hand back no record at all: the router forwards the original message bytes
and writer schema, which is both cheaper and exactly what "unchanged" promises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from stream_apps.routing.document import RoutingConfig
from stream_apps.routing.expressions import EvaluationError, Expression
from stream_apps.routing.output_schema import (
    MATCHED_RULES_FIELD,
    SEVERITY_FIELD,
    derive_output_schema,
)
from stream_apps.routing.topic_names import TopicTemplate, UnsafeTopic
from stream_apps.routing.transforms import Transformer
from stream_apps.routing.validation import RuleFailure, Validator

SEVERITIES = ("info", "warning", "critical")
WHERE_RULE = "where"
"""The `matched_rules` entry of an alert route whose `where` held while no alert rule did."""
WHERE_SEVERITY = "warning"


class RoutedRecord(NamedTuple):
    """One output. `passthrough`: forward the original bytes to `topic`; `record` is None.

    Otherwise `record` is a new dict (never the input), to encode with the route's
    `output_schema`. `unchanged`: its values are exactly the input's (validation normalised
    nothing, no transform, no alert fields), so wherever the route's schema lays a body out as
    the input's does, the input's Avro body is the encoding. NamedTuples: immutable, and
    several times cheaper to build than frozen dataclasses, at one per route per record.
    """

    route: str
    topic: str
    record: dict[str, Any] | None
    passthrough: bool
    unchanged: bool = False


class RouteFailure(NamedTuple):
    """One route that could not take the record; `reason` starts with the route name."""

    route: str
    reason: str


@dataclass(slots=True)
class RoutingResult:
    outputs: list[RoutedRecord]
    dead_letters: list[RouteFailure]


@dataclass(frozen=True, slots=True)
class CompiledAlert:
    name: str
    when: Expression
    severity: str


class CompiledRoute:
    """One route, ready to apply. Built by `config`; immutable once built."""

    def __init__(
        self,
        name: str,
        topic: TopicTemplate,
        *,
        where: Expression | None = None,
        validator: Validator | None = None,
        transformer: Transformer | None = None,
        alerts: Sequence[CompiledAlert] = (),
        passthrough: bool = False,
    ) -> None:
        self.name = name
        self.topic = topic
        self.where = where
        self.validator = validator
        self.transformer = transformer
        self.alerts = tuple(alerts)
        self.passthrough = passthrough
        self._rank = {severity: i for i, severity in enumerate(SEVERITIES)}
        # A passthrough route with a literal topic gives the same output for every record.
        self._fixed_output = (
            RoutedRecord(name, topic.literal, None, True)
            if passthrough and topic.literal is not None
            else None
        )

    def apply(
        self, record: Mapping[str, Any], outputs: list[RoutedRecord], failed: list[RouteFailure]
    ) -> None:
        """Append this route's output for `record` to `outputs`, or its failure to `failed`."""
        name = self.name
        matched: list[CompiledAlert] = []
        where = self.where
        try:
            if self.alerts:
                for alert in self.alerts:
                    try:
                        if alert.when.matches(record):
                            matched.append(alert)
                    except EvaluationError as exc:
                        failed.append(RouteFailure(name, f"{name}: alerts.{alert.name}: {exc}"))
                        return
                if not matched and (where is None or not where.matches(record)):
                    return
            elif where is not None and not where.matches(record):
                return
        except EvaluationError as exc:
            failed.append(RouteFailure(name, f"{name}: where: {exc}"))
            return
        try:
            topic = self.topic.render(record)
        except UnsafeTopic as exc:
            failed.append(RouteFailure(name, f"{name}: topic template: {exc}"))
            return
        if self.passthrough:
            fixed = self._fixed_output
            outputs.append(fixed if fixed is not None else RoutedRecord(name, topic, None, True))
            return
        try:
            out = self.validator.apply(record) if self.validator is not None else record
            if self.transformer is not None:
                out = self.transformer.apply(out)
        except RuleFailure as exc:
            failed.append(RouteFailure(name, f"{name}: {exc}"))
            return
        unchanged = out is record
        if unchanged:
            out = dict(record)
        if self.alerts:
            unchanged = False
            if matched:
                rank = self._rank
                out[SEVERITY_FIELD] = max((a.severity for a in matched), key=rank.__getitem__)
                out[MATCHED_RULES_FIELD] = [a.name for a in matched]
            else:
                out[SEVERITY_FIELD] = WHERE_SEVERITY
                out[MATCHED_RULES_FIELD] = [WHERE_RULE]
        outputs.append(RoutedRecord(name, topic, out, False, unchanged))

    def output_schema(self, input_schema: dict[str, Any]) -> dict[str, Any] | None:
        if self.passthrough:
            return None
        validator, transformer = self.validator, self.transformer
        return derive_output_schema(
            input_schema,
            self.name,
            required=validator.required if validator else (),
            dropped=transformer.drop if transformer else (),
            hashed=transformer.hash_fields if transformer else (),
            alerts=bool(self.alerts),
        )


class CompiledRouting:
    """A routing file compiled against a set of fields: what the router runs per record.

    Immutable and thread-safe; a new routing version is a new CompiledRouting. `config` is
    the validated file, `source` where it came from, `content_hash` the sha256 of its text.
    """

    def __init__(
        self,
        config: RoutingConfig,
        routes: Sequence[CompiledRoute],
        *,
        source: str = "",
        content_hash: str = "",
    ) -> None:
        self.config = config
        self.routes = tuple(routes)
        self.source = source
        self.content_hash = content_hash
        self._by_name = {route.name: route for route in self.routes}

    @property
    def input_topic(self) -> str:
        return self.config.input

    @property
    def dead_letter_topic(self) -> str:
        return self.config.dead_letter_topic

    def route(self, record: Mapping[str, Any]) -> RoutingResult:
        """Every route's output or failure for one decoded record (see the module docstring)."""
        outputs: list[RoutedRecord] = []
        failed: list[RouteFailure] = []
        for route in self.routes:
            try:
                route.apply(record, outputs, failed)
            except Exception as exc:  # a bug or a value nobody foresaw: DLQ, never a crash loop
                failed.append(
                    RouteFailure(route.name, f"{route.name}: {type(exc).__name__}: {exc}")
                )
        return RoutingResult(outputs, failed)

    def output_schema(self, route_name: str, input_schema: dict[str, Any]) -> dict[str, Any] | None:
        """The Avro schema of `route_name`'s records for inputs written with `input_schema`.

        None for passthrough routes (their messages keep the original bytes and schema id).
        Pure and deterministic: callers cache it per (route, writer schema id).
        """
        route = self._by_name.get(route_name)
        if route is None:
            raise KeyError(f"no route named {route_name!r} (routes: {', '.join(self._by_name)})")
        return route.output_schema(input_schema)
