"""Which Delta table a topic lands in (DESIGN section 8): `<lake>/<route>[/<region>]`.

A routed topic is named `<prefix><route>` or, for the regional route, `<prefix>regional.<region>`;
a route may set its own URI (a bucket per region for data residency) with a `{region}`
placeholder. Each topic lands in exactly one table, which is what lets a table's txn version
for a topic-partition stand for the consumer offset of that partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.settings import SinkSettings, TableSettings

REGIONAL = "regional"


@dataclass(frozen=True)
class TableTarget:
    route: str
    region: str | None
    uri: str
    settings: TableSettings

    @property
    def name(self) -> str:
        return f"{self.route}/{self.region}" if self.region else self.route


def target_for(topic: str, settings: SinkSettings, lake_uri: str) -> TableTarget:
    name = topic.removeprefix(settings.topic_prefix)
    route, region = name, None
    if name.startswith(f"{REGIONAL}."):
        route, region = REGIONAL, name[len(REGIONAL) + 1 :]
    table = settings.table_settings(route)
    if table.uri:
        uri = table.uri.format(region=region or "")
    else:
        uri = f"{lake_uri.rstrip('/')}/{route}" + (f"/{region}" if region else "")
    return TableTarget(route, region, uri, table)


def app_id(topic: str, partition: int) -> str:
    """The txn app id a table records for one topic-partition; its version is the last offset."""
    return f"sensorstream:{topic}/{partition}"
