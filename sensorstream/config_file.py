"""YAML configuration files, read so that every error can name the file, the line and the key.

Settings classes validate the values; this module keeps, next to each value, the line it came
from, because "bad value for `rate`" is useless in a 200-line file an operator edited at 3 am.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sensorstream.errors import ConfigError


@dataclass
class YamlDocument:
    path: Path
    data: dict[str, Any]
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        """The line of `loc` or of its nearest enclosing key that the file has."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def where(self, loc: tuple[str | int, ...]) -> str:
        line = self.line_of(loc)
        key = ".".join(str(part) for part in loc)
        return f"{self.path}, line {line}, key '{key}'" if line else f"{self.path}, key '{key}'"


# The YAML core schema; anything else (!!python/..., custom !tags) is refused, not ignored.
_CORE_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp")
}


def _node_to_python(
    node: yaml.Node, loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]
) -> Any:
    if loc:
        lines[loc] = node.start_mark.line + 1
    if node.tag not in _CORE_TAGS:
        raise ConfigError(
            f"line {node.start_mark.line + 1}: invalid YAML: unsupported tag {node.tag}"
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if not isinstance(key, str):
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: key {key!r} must be text")
            if key in out:  # YAML would keep the last silently: a classic lost edit
                line = key_node.start_mark.line + 1
                first = lines[(*loc, key)]
                raise ConfigError(f"line {line}: key '{key}' appears twice (first on line {first})")
            out[key] = _node_to_python(value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def read_yaml(path: Path) -> YamlDocument:
    """Parse `path` safely (no Python tags); the top level must be a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    return read_yaml_text(text, path)


def read_yaml_text(text: str, path: Path) -> YamlDocument:
    """Like read_yaml, for YAML text that did not come from a file (a control topic, ...).

    `path` only names the source in errors and in `YamlDocument.where`.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if node is None:
        return YamlDocument(path, {})
    try:
        lines: dict[tuple[str | int, ...], int] = {}
        data = _node_to_python(node, (), lines)
    except ConfigError as exc:
        raise ConfigError(f"{path}, {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return YamlDocument(path, data, lines)
