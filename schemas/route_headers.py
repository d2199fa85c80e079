"""Headers the router puts on every routed record: the route that selected it and the routing
version that was active, so the sink can land the version beside the row (`_routing_version`)
and the audit can tell from the lake which routes a row belongs to."""

from __future__ import annotations

HEADER_ROUTE = "sensorstream.route"
HEADER_ROUTES_VERSION = "sensorstream.routes_version"


def routes_version(headers: list[tuple[str, bytes]] | None) -> int | None:
    """The routing version a record's headers name (None: not routed, or not a number)."""
    for key, value in headers or ():
        if key == HEADER_ROUTES_VERSION:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
