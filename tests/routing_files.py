"""Routing files in unit tests: the default one, and texts compiled against the curated fields."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from schemas.value_schema import PROVENANCE_FIELDS, curated_schema
from sensorstream.errors import ConfigError
from stream_apps.routing.config import CompiledRouting, parse_routing

DEFAULT_ROUTES = Path(__file__).resolve().parents[1] / "stream_apps" / "routes.yaml"


def input_schema() -> dict[str, Any]:
    """The curated reading schema with the provenance fields (appended when missing)."""
    schema = curated_schema()
    present = {field["name"] for field in schema["fields"]}
    schema["fields"] += [dict(f) for f in PROVENANCE_FIELDS if f["name"] not in present]
    return schema


FIELDS = frozenset(field["name"] for field in input_schema()["fields"])


def compile_text(text: str, source: str = "routes.yaml", **kwargs) -> CompiledRouting:
    """`text` (dedented) as the router would load it; `kwargs` as parse_routing takes them."""
    return parse_routing(textwrap.dedent(text), source, FIELDS, **kwargs)


def config_error(text: str, source: str = "routes.yaml", **kwargs) -> str:
    """The message `text` is refused with; fails the test if it loads."""
    with pytest.raises(ConfigError) as info:
        compile_text(text, source, **kwargs)
    return str(info.value)
