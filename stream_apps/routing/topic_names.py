"""Output topic names: literal ones checked at load, templated ones rendered per record.

A template such as `sensors.regional.{_region}` takes its placeholders from the record, so a
value decides where data goes (and, downstream, which lake path and which bucket): a value
like `eu/west`, `..` or one with spaces must never become part of a name (DESIGN section 7).
Rendered values are held to a stricter rule than Kafka's: letters, digits, '_', '-', and '.'
only between other characters (no leading, trailing or doubled dot).

Where a route may write at all (not the input, the DLQ, an internal topic or another route's
topic) is decided by the routing config, which hands each template the rule (`forbid`): a
rendered topic it refuses is an UnsafeTopic too, so that record goes to the DLQ for that route.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

MAX_TOPIC_CHARS = 249
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)
_SAFE_VALUE_TEXT = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_SAFE_VALUE = re.compile(_SAFE_VALUE_TEXT, re.ASCII)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_-."
"""Topic name characters, in the order examples are built from (readable ones first)."""
_VALUE_CHARS = frozenset(_NAME_CHARS) - {"."}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_CACHE_LIMIT = 4096


class TopicNameError(ValueError):
    """A topic name or template that is invalid whatever the records (a load-time error)."""

    def __init__(self, message: str, *, unknown_field: bool = False) -> None:
        super().__init__(message)
        self.unknown_field = unknown_field  # a placeholder names a field the records lack


class UnsafeTopic(ValueError):
    """A record whose values would render an unsafe topic name (a record-level error)."""


def topic_problem(name: str) -> str | None:
    """Why `name` is not a valid Kafka topic name, or None when it is."""
    if name in (".", ".."):
        return f"'{name}' is not allowed as a topic name"
    if not _TOPIC.fullmatch(name):
        if not name or len(name) > MAX_TOPIC_CHARS:
            return f"a topic name has 1 to {MAX_TOPIC_CHARS} characters, not {len(name)}"
        bad = next(ch for ch in name if not _TOPIC.fullmatch(ch))
        return f"{name!a} contains {bad!a}; topic names use only letters, digits, '.', '_', '-'"
    return None


class TopicTemplate:
    """A literal topic, or a template with `{field}` placeholders filled from the record."""

    __slots__ = ("_cache", "_refusal", "fields", "literal", "parts", "pattern", "text")

    def __init__(self, text: str, known_fields: Collection[str]) -> None:
        """Raises TopicNameError naming the problem (unknown field, stray brace, bad name)."""
        self.text = text
        self.parts: tuple[tuple[str, str], ...] = _parse(text, known_fields)
        self.fields = tuple(name for kind, name in self.parts if kind == "field")
        self.literal = text if not self.fields else None
        self.pattern = re.compile(
            "".join(re.escape(p) if kind == "text" else _SAFE_VALUE_TEXT for kind, p in self.parts),
            re.ASCII,
        )
        """Every topic the template can render (but for Kafka's length limit)."""
        self._cache: dict[tuple[Any, ...], str] = {}
        self._refusal: Callable[[str], str | None] | None = None

    def forbid(self, refusal: Callable[[str], str | None]) -> None:
        """Refuse rendered topics for which `refusal` gives a reason (e.g. "the input topic").

        Set once, while the routing is compiled: the cache only ever holds allowed topics.
        """
        self._refusal = refusal

    def render(self, record: Mapping[str, Any]) -> str:
        """The topic for `record`; UnsafeTopic when a value cannot be part of a topic name."""
        literal = self.literal
        if literal is not None:
            return literal
        if len(self.fields) == 1:
            value = record.get(self.fields[0])
            values: tuple[Any, ...] = (value,)
            topic = self._cache.get(values) if value.__class__ is str else None
        else:
            values = tuple(record.get(name) for name in self.fields)
            topic = self._cache.get(values) if _all_text(values) else None
        if topic is None:
            topic = self._render(values)  # raises for anything but safe text and integers
            if _all_text(values):
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[values] = topic
        return topic

    def _render(self, values: tuple[Any, ...]) -> str:
        by_field = dict(zip(self.fields, values, strict=True))
        out = []
        for kind, text in self.parts:
            if kind == "text":
                out.append(text)
                continue
            value = by_field[text]
            if value.__class__ is int:
                value = str(value)
            if value.__class__ is not str or not _SAFE_VALUE.fullmatch(value):
                shown = "null" if value is None else ascii(value)[:60]
                raise UnsafeTopic(f"{text} value {shown} is not a safe topic name")
            out.append(value)
        topic = "".join(out)
        if len(topic) > MAX_TOPIC_CHARS:
            longest = max(self.fields, key=lambda name: len(str(by_field[name])))
            raise UnsafeTopic(
                f"{longest} value {ascii(by_field[longest])[:40]}... makes a topic name of "
                f"{len(topic)} characters, above Kafka's limit of {MAX_TOPIC_CHARS}"
            )
        why = self._refusal(topic) if self._refusal is not None else None
        if why is not None:
            values = ", ".join(f"{name} value {value!a}" for name, value in by_field.items())
            raise UnsafeTopic(f"{values} renders '{topic}', {why}; a route cannot write there")
        return topic


def shared_topic(a: TopicTemplate, b: TopicTemplate) -> str | None:
    """The shortest topic both `a` and `b` can render, or None when they never meet.

    A breadth-first walk over the pairs of positions the two templates can be in after the
    same characters (each template read as an automaton: literal characters, and placeholders
    taking a safe value). Characters that appear in neither template's text behave alike, so
    one of them stands for all.
    """
    tokens_a, tokens_b = _tokens(a), _tokens(b)
    literal = {t for t in tokens_a + tokens_b if t is not None}
    spare = [char for char in _NAME_CHARS if char not in literal and char != "."][:1]
    alphabet = sorted(literal | {"."} | set(spare), key=_NAME_CHARS.index)
    start = (_closure(tokens_a, {(0, 0)}), _closure(tokens_b, {(0, 0)}))
    came_from: dict[tuple[frozenset, frozenset], tuple[Any, str]] = {start: (None, "")}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        states_a, states_b = state
        if (len(tokens_a), 0) in states_a and (len(tokens_b), 0) in states_b:
            chars = []
            while state != start:
                state, char = came_from[state]
                chars.append(char)
            return "".join(reversed(chars))
        for char in alphabet:
            after = (_step(tokens_a, states_a, char), _step(tokens_b, states_b, char))
            if after[0] and after[1] and after not in came_from:
                came_from[after] = (state, char)
                queue.append(after)
    return None


# A template as an automaton: tokens are literal characters, or None for a placeholder. A state
# is (token index, where in a placeholder's value: 0 at its start, 1 after a value character,
# 2 after a dot); a value may end only in 1.


def _tokens(template: TopicTemplate) -> list[str | None]:
    tokens: list[str | None] = []
    for kind, part in template.parts:
        tokens.extend(part if kind == "text" else [None])
    return tokens


def _closure(tokens: list[str | None], states: set[tuple[int, int]]) -> frozenset:
    ended = {(i + 1, 0) for i, where in states if where == 1}
    return frozenset(states | ended)


def _step(tokens: list[str | None], states: frozenset, char: str) -> frozenset:
    out: set[tuple[int, int]] = set()
    for i, where in states:
        if i == len(tokens):
            continue
        token = tokens[i]
        if token is not None:
            if where == 0 and char == token:
                out.add((i + 1, 0))
        elif char in _VALUE_CHARS:
            out.add((i, 1))
        elif char == "." and where == 1:
            out.add((i, 2))
    return _closure(tokens, out)


def _all_text(values: tuple[Any, ...]) -> bool:
    """Only text values key the cache: 1, 1.0 and True are equal dict keys, and must not be."""
    return all(value.__class__ is str for value in values)


def _parse(text: str, known_fields: Collection[str]) -> tuple[tuple[str, str], ...]:
    parts: list[tuple[str, str]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(("text", text[position : match.start()]))
        name = match.group(1).strip()
        if not _FIELD_NAME.fullmatch(name):
            raise TopicNameError(f"placeholder {match.group()!a} is not a field name")
        if name not in known_fields:
            raise TopicNameError(
                f"placeholder {{{name}}} names an unknown field '{name}'", unknown_field=True
            )
        parts.append(("field", name))
        position = match.end()
    parts.append(("text", text[position:]))
    literal_text = "".join(part for kind, part in parts if kind == "text")
    if "{" in literal_text or "}" in literal_text:
        raise TopicNameError(f"{text!a} has an unmatched '{{' or '}}'")
    fields = [part for kind, part in parts if kind == "field"]
    if not fields:
        problem = topic_problem(text)
        if problem:
            raise TopicNameError(problem)
    elif literal_text and not _TOPIC.fullmatch(literal_text):
        bad = next(ch for ch in literal_text if not _TOPIC.fullmatch(ch))
        raise TopicNameError(
            f"{text!a} contains {bad!a}; topic names use only letters, digits, '.', '_', '-'"
        )
    return tuple((kind, part) for kind, part in parts if part or kind == "field")
