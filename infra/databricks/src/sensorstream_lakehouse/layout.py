"""Where the job reads and writes: the sink's lake, Unity Catalog names and checkpoints.

One object carries the four bundle variables (catalog, schema, lake root, checkpoint root) so
that every stage derives names the same way, and the tests can point it at a local warehouse
(no catalog: two-part names) without touching the stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


def _quote(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


@dataclass(frozen=True)
class Lakehouse:
    schema: str
    lake_root: str
    """The sink's SENSORSTREAM_LAKE_URI: tables at <lake_root>/<route>[/<region>]."""
    checkpoint_root: str
    """Streaming checkpoints, one directory per query; never inside a table's directory."""
    catalog: str | None = None
    """Unity Catalog catalog; None for a plain Spark session (two-part names)."""

    def table(self, name: str) -> str:
        parts = [self.catalog, self.schema, name] if self.catalog else [self.schema, name]
        return ".".join(_quote(p) for p in parts)

    def schema_name(self) -> str:
        parts = [self.catalog, self.schema] if self.catalog else [self.schema]
        return ".".join(_quote(p) for p in parts)

    def source_uri(self, route: str) -> str:
        """The sink's Delta table of a route, e.g. `regional/eu-west-1`."""
        return f"{self.lake_root.rstrip('/')}/{route.strip('/')}"

    def landing_uri(self, route: str) -> str:
        """The sink's Parquet landing area of a route (sinks/landing.py)."""
        return f"{self.lake_root.rstrip('/')}/landing/{route.strip('/')}"

    def checkpoint(self, query: str) -> str:
        return f"{self.checkpoint_root.rstrip('/')}/{query}"

    @staticmethod
    def bronze_name(route: str, *, landing: bool = False) -> str:
        """`regional/eu-west-1` -> `bronze_regional_eu_west_1` (landing: `bronze_landing_...`)."""
        safe = _UNSAFE.sub("_", route.strip("/")).strip("_").lower()
        if not safe:
            raise ValueError(f"route {route!r} gives no usable table name")
        return f"bronze_landing_{safe}" if landing else f"bronze_{safe}"
