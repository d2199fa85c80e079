"""The Avro schema of a re-encoding route's records, derived from the input's writer schema.

Derived rather than written by hand so that a column added at the edge (a new, nullable field
in the input) flows through every route without touching the routing file; the route's own
changes are applied on top: required fields lose their null branch, dropped fields go, hashed
fields become strings, alert routes gain `severity` and `matched_rules`. Each route's records
get their own record name (input name + route name in CamelCase, same namespace), so the
registry never sees two different shapes under one name.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

SEVERITY_FIELD = "severity"
MATCHED_RULES_FIELD = "matched_rules"
ALERT_FIELDS = (SEVERITY_FIELD, MATCHED_RULES_FIELD)


def record_suffix(route: str) -> str:
    """`hot_zone` → `HotZone`: route names become part of Avro record names."""
    return "".join(part[:1].upper() + part[1:] for part in route.replace("-", "_").split("_"))


def derive_output_schema(
    input_schema: dict[str, Any],
    route: str,
    *,
    required: Collection[str] = (),
    dropped: Collection[str] = (),
    hashed: Collection[str] = (),
    alerts: bool = False,
) -> dict[str, Any]:
    """A new schema dict; `input_schema` is not changed."""
    schema = {k: copy.deepcopy(v) for k, v in input_schema.items() if k not in ("aliases",)}
    name = schema["name"]
    namespace, dot, short = name.rpartition(".")
    schema["name"] = f"{namespace}{dot}{short}{record_suffix(route)}"
    schema["doc"] = f"Records of route '{route}', derived from {short}."
    fields = []
    for field in schema["fields"]:
        if field["name"] in dropped:
            continue
        if field["name"] in required:
            field = _non_null(field)
        if field["name"] in hashed:
            field = _hashed(field)
        fields.append(field)
    if alerts:
        taken = {f["name"] for f in fields} & set(ALERT_FIELDS)
        if taken:
            raise ValueError(
                f"route '{route}': the input schema already has field(s) {sorted(taken)}, "
                "which alert routes add"
            )
        fields.append(
            {
                "name": SEVERITY_FIELD,
                "type": "string",
                "doc": "Highest severity among the matched alert rules (info, warning, "
                "critical); warning when only the route's where matched.",
            }
        )
        fields.append(
            {
                "name": MATCHED_RULES_FIELD,
                "type": {"type": "array", "items": "string"},
                "doc": "Names of the alert rules that matched; ['where'] when only the "
                "route's where did.",
            }
        )
    schema["fields"] = fields
    return schema


def _is_null(branch: Any) -> bool:
    return branch == "null" or (isinstance(branch, dict) and branch.get("type") == "null")


def _non_null(field: dict[str, Any]) -> dict[str, Any]:
    kind = field["type"]
    if not isinstance(kind, list) or not any(_is_null(b) for b in kind):
        return field
    branches = [b for b in kind if not _is_null(b)]
    if not branches:
        return field
    out = {k: v for k, v in field.items() if k != "default"}
    out["type"] = branches[0] if len(branches) == 1 else branches
    return out


def _hashed(field: dict[str, Any]) -> dict[str, Any]:
    kind = field["type"]
    nullable = isinstance(kind, list) and any(_is_null(b) for b in kind)
    out = {k: v for k, v in field.items() if k != "default"}
    if nullable:
        out["type"] = ["null", "string"]
        if "default" in field and field["default"] is None:
            out["default"] = None
    else:
        out["type"] = "string"
    doc = field.get("doc")
    out["doc"] = f"{doc} Hashed: SHA-256 hex." if doc else "Hashed: SHA-256 hex."
    return out
