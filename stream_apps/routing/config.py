"""The routing file (DESIGN section 6): validated and compiled once, or refused with one message.

The same text arrives from a file (`route --routes`, `routes apply`) or from the control topic
(a version another router published), so both paths share one parser and give the same errors.
Every problem, from bad YAML to an unknown field inside a `where`, becomes ONE ConfigError
naming the source, the line, the route and the key, e.g.

    routes.yaml, line 14, route 'filtered', key 'where': unknown field 'temprature' (did you
    mean 'temperature'?)

Pydantic checks the shape (unknown keys are errors: a typo'd `wher:` must not silently route
everything); the compile step checks what needs the record's field names: expressions, topic
templates, the fields named by rules and transforms.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from sensorstream.config_file import YamlDocument, read_yaml_text
from sensorstream.errors import ConfigError
from sensorstream.topics import internal_topics
from stream_apps.routing.compiled import (
    CompiledAlert,
    CompiledRoute,
    CompiledRouting,
    RoutedRecord,
    RouteFailure,
    RoutingResult,
)
from stream_apps.routing.document import Alert, Route, RoutingConfig, Transform, Validation
from stream_apps.routing.expressions import Expression, ExpressionError, compile_expression
from stream_apps.routing.output_schema import ALERT_FIELDS
from stream_apps.routing.topic_names import TopicNameError, TopicTemplate, topic_problem
from stream_apps.routing.topic_safety import TopicConflict, assign_topics, internal_reason
from stream_apps.routing.transforms import Transformer
from stream_apps.routing.validation import Validator

__all__ = [
    "Alert",
    "CompiledRouting",
    "InputFields",
    "Route",
    "RouteFailure",
    "RoutedRecord",
    "RoutingConfig",
    "RoutingResult",
    "Transform",
    "Validation",
    "compile_routing",
    "content_hash",
    "load_routing",
    "parse_routing",
]

Loc = tuple[str | int, ...]


def content_hash(text: str) -> str:
    """sha256 hex of the routing text: equal texts are the same routing version."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_routing(
    path: Path, fields: Collection[str], internal: Mapping[str, str] | None = None
) -> CompiledRouting:
    """The routing file at `path`, compiled against `fields`; ConfigError for any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: routing file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read routing file: {exc}") from None
    return parse_routing(text, str(path), fields, internal)


def parse_routing(
    text: str,
    source_name: str,
    fields: Collection[str],
    internal: Mapping[str, str] | None = None,
) -> CompiledRouting:
    """Routing `text` compiled against `fields` (the names a record may have), whatever its
    input topic (`compile_routing` checks them against the file's own input topic).

    `source_name` names the text in errors: a path, or e.g. "routing version 7". `internal`:
    the pipeline's internal topics, which no route may write into (`internal_topics()` with
    the router's control topic; by default the default topics).
    """
    names = InputFields(frozenset(fields))
    return compile_routing(text, source_name, lambda _input: names, internal)


@dataclass(frozen=True)
class InputFields:
    """The fields the records of one input topic carry: the names a routing file reading it
    may use. `unknown` is added to the refusal of any other name, to say which topic was
    asked and what to do (a field the input never carries would route nothing, silently)."""

    names: frozenset[str]
    unknown: str = ""


def compile_routing(
    text: str,
    source_name: str,
    fields_of: Callable[[str], InputFields],
    internal: Mapping[str, str] | None = None,
) -> CompiledRouting:
    """Routing `text` compiled against `fields_of(its input topic)`: the file's own `input`
    (sensors.readings when it names none) decides which fields its rules may name.
    `source_name` and `internal` as for `parse_routing`."""
    document = read_yaml_text(text, Path(source_name))
    try:
        config = RoutingConfig.model_validate(document.data)
    except ValidationError as exc:
        loc, message = _validation_problem(exc, document.data)
        raise ConfigError(_locate(source_name, document, loc, message)) from None
    internal = internal_topics() if internal is None else internal
    fields = fields_of(config.input)
    try:
        routes = _compile_routes(config, fields.names, internal, document.line_of)
    except _Problem as problem:
        message = problem.message
        if problem.unknown_field and fields.unknown:
            message += f"\n{fields.unknown}"
        raise ConfigError(_locate(source_name, document, problem.loc, message)) from None
    return CompiledRouting(config, routes, source=source_name, content_hash=content_hash(text))


# ---- compiling ----------------------------------------------------------------------------


class _Problem(Exception):
    def __init__(self, loc: Loc, message: str, *, unknown_field: bool = False) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.unknown_field = unknown_field


def _compile_routes(
    config: RoutingConfig,
    fields: frozenset[str],
    internal: Mapping[str, str],
    line_of: Callable[[Loc], int | None],
) -> list[CompiledRoute]:
    for key, what in (("input", "its input"), ("dead_letter_topic", "its dead-letter topic")):
        name = getattr(config, key)
        problem = topic_problem(name)
        if problem:
            raise _Problem((key,), problem)
        why = internal_reason(name, internal)
        if why is not None:
            raise _Problem((key,), f"'{name}' is {why}; the router cannot use it as {what}")
    if config.input == config.dead_letter_topic:
        raise _Problem(("dead_letter_topic",), "must differ from the input topic")
    seen: dict[str, int] = {}
    for index, route in enumerate(config.routes):
        if route.name in seen:
            raise _Problem(
                ("routes", index, "name"),
                f"duplicate route name '{route.name}' (route #{seen[route.name] + 1} has it too)",
            )
        seen[route.name] = index
    topics = [_topic(route, ("routes", i), fields) for i, route in enumerate(config.routes)]
    try:
        assign_topics(
            [route.name for route in config.routes],
            topics,
            config.input,
            config.dead_letter_topic,
            internal,
            lambda index: line_of(("routes", index, "topic")),
        )
    except TopicConflict as exc:
        raise _Problem(("routes", exc.route, "topic"), str(exc)) from None
    return [
        _compile_route(route, topic, ("routes", i), fields)
        for i, (route, topic) in enumerate(zip(config.routes, topics, strict=True))
    ]


def _topic(route: Route, loc: Loc, fields: frozenset[str]) -> TopicTemplate:
    try:
        return TopicTemplate(route.topic, fields)
    except TopicNameError as exc:
        raise _Problem((*loc, "topic"), str(exc), unknown_field=exc.unknown_field) from None


def _compile_route(
    route: Route, topic: TopicTemplate, loc: Loc, fields: frozenset[str]
) -> CompiledRoute:
    where = _expression(route.where, (*loc, "where"), fields) if route.where else None
    validator = _validator(route.validation, (*loc, "validate"), fields)
    transformer = _transformer(route.transform, (*loc, "transform"), fields)
    alerts = _alerts(route.alerts or [], (*loc, "alerts"), fields)
    rewrites = validator is not None or transformer is not None or bool(alerts)
    if route.passthrough and rewrites:
        raise _Problem(
            (*loc, "passthrough"),
            "passthrough forwards the original message unchanged, so it cannot be combined "
            "with validate, transform or alerts",
        )
    passthrough = route.passthrough if route.passthrough is not None else not rewrites
    return CompiledRoute(
        route.name,
        topic,
        where=where,
        validator=validator,
        transformer=transformer,
        alerts=alerts,
        passthrough=passthrough,
    )


def _expression(text: str, loc: Loc, fields: frozenset[str]) -> Expression:
    try:
        return compile_expression(text, fields)
    except ExpressionError as exc:
        raise _Problem(loc, str(exc), unknown_field=exc.unknown_field) from None


def _known(name: str, loc: Loc, fields: frozenset[str]) -> None:
    if name not in fields:
        close = difflib.get_close_matches(name, sorted(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _Problem(loc, f"unknown field '{name}'{hint}", unknown_field=True)


def _validator(rules: Validation | None, loc: Loc, fields: frozenset[str]) -> Validator | None:
    if rules is None:
        return None
    for i, name in enumerate(rules.required):
        _known(name, (*loc, "required", i), fields)
    for name, (low, high) in rules.ranges.items():
        _known(name, (*loc, "ranges", name), fields)
        if low > high:
            raise _Problem(
                (*loc, "ranges", name), f"the low end {low:g} is above the high end {high:g}"
            )
    for name in rules.types:
        _known(name, (*loc, "types", name), fields)
    for name, values in rules.allowed.items():
        _known(name, (*loc, "allowed", name), fields)
        if not values:
            raise _Problem((*loc, "allowed", name), "an empty list allows no value at all")
    return Validator(rules.required, rules.ranges, rules.types, rules.allowed)


def _transformer(
    transform: Transform | None, loc: Loc, fields: frozenset[str]
) -> Transformer | None:
    if transform is None:
        return None
    for key, names in (("drop", transform.drop), ("hash", transform.hash)):
        for i, name in enumerate(names):
            _known(name, (*loc, key, i), fields)
    for name in transform.round:
        _known(name, (*loc, "round", name), fields)
    dropped = set(transform.drop)
    for i, name in enumerate(transform.hash):
        if name in dropped:
            raise _Problem((*loc, "hash", i), f"'{name}' is dropped; it cannot also be hashed")
    for name in transform.round:
        if name in dropped or name in transform.hash:
            what = "dropped" if name in dropped else "hashed"
            raise _Problem((*loc, "round", name), f"'{name}' is {what}; it cannot be rounded")
    salt = ""
    if transform.salt_env is not None:
        salt = os.environ.get(transform.salt_env, "")
        if not salt:  # never echo the value: it is a secret
            raise _Problem(
                (*loc, "salt_env"),
                f"environment variable {transform.salt_env} is not set or empty",
            )
    return Transformer(transform.round, transform.drop, transform.hash, salt)


def _alerts(rules: list[Alert], loc: Loc, fields: frozenset[str]) -> list[CompiledAlert]:
    if rules:
        taken = [name for name in ALERT_FIELDS if name in fields]
        if taken:
            raise _Problem(
                loc,
                f"records already have field '{taken[0]}', which alert routes add; "
                "rename the field or move the alerts to their own route",
            )
    alerts, seen = [], set()
    for i, rule in enumerate(rules):
        if rule.name in seen:
            raise _Problem((*loc, i, "name"), f"duplicate alert name '{rule.name}'")
        seen.add(rule.name)
        when = _expression(rule.when, (*loc, i, "when"), fields)
        alerts.append(CompiledAlert(rule.name, when, rule.severity))
    return alerts


# ---- error messages -----------------------------------------------------------------------


def _locate(source: str, document: YamlDocument, loc: Loc, message: str) -> str:
    """`source, line N, route 'x', key 'a.b': message` with whatever parts are known."""
    parts = [source]
    line = document.line_of(loc) if loc else None
    if line is not None:
        parts.append(f"line {line}")
    key_loc = loc
    if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
        parts.append(f"route '{_route_label(document.data, loc[1])}'")
        key_loc = loc[2:]
    if key_loc:
        parts.append("key '" + ".".join(str(part) for part in key_loc) + "'")
    return f"{', '.join(parts)}: {message}"


def _route_label(data: dict[str, Any], index: int) -> str:
    routes = data.get("routes")
    if isinstance(routes, list) and index < len(routes) and isinstance(routes[index], dict):
        name = routes[index].get("name")
        if isinstance(name, str) and name:
            return name
    return f"#{index + 1}"


def _validation_problem(exc: ValidationError, data: Any) -> tuple[Loc, str]:
    errors = exc.errors(include_url=False)
    # An unknown key usually explains the rest (`route:` for `routes:` → "routes missing").
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    error = errors[0]
    kind = error["type"]
    loc = _data_loc(tuple(error["loc"]), data, kind)
    # A value that fits no branch of a union gives one error per branch: say it once.
    same = [e for e in errors if _data_loc(tuple(e["loc"]), data, e["type"]) == loc]
    if kind == "extra_forbidden":
        message = f"unknown key '{loc[-1]}'" + _key_hint(loc)
    elif kind == "missing":
        message = f"missing required key '{loc[-1]}'"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        message = (
            f"{_preview(error.get('input'))} is not a valid name: use letters, digits, '_' "
            "and '-', starting with a letter, at most 64 characters"
        )
    elif kind in ("model_type", "dict_type"):
        message = f"must be a mapping of keys to values, not {_preview(error.get('input'))}"
    else:
        prefix = "Input should be "
        if len(same) > 1 and all(e["msg"].startswith(prefix) for e in same):
            wanted = [e["msg"][len(prefix) :] for e in same]
            message = "input should be " + ", ".join(wanted[:-1]) + " or " + wanted[-1]
        else:
            message = error["msg"][:1].lower() + error["msg"][1:]
        if "input" in error and kind not in ("too_short", "too_long"):
            message += f", not {_preview(error['input'])}"
    others = len(errors) - max(1, len(same))
    if others > 0:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return loc, message


def _data_loc(loc: Loc, data: Any, kind: str) -> Loc:
    """The part of pydantic's `loc` that exists in the YAML data (drops union-branch tags)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        else:
            if isinstance(node, dict) and isinstance(part, str) and kind == "missing":
                out.append(part)
            break
        out.append(part)
    return tuple(out)


def _key_hint(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    keys = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; known keys: {', '.join(keys)}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] | None = RoutingConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        by_key = {field.alias or name: field for name, field in model.model_fields.items()}
        field = by_key.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _preview(value: Any) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."
