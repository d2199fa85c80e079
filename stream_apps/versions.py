"""Routing versions as an operator changes them: checked against the fields the schema registry
knows, then published on the routing control topic.

`sensorstream routes` (`RoutingVersions`) and a router started with `--routes FILE`
(`stream_apps.app`) go through here, so a routing file is refused with the same message
wherever it comes from, and nothing is published that a router could not compile. The control
topic itself (ordering, first-wins, watching) is `stream_apps.control`'s.
"""

from __future__ import annotations

from pathlib import Path

from schemas.registry import SchemaRegistry
from schemas.value_schema import PROVENANCE_NAMES, curated_schema
from sensorstream.errors import ConfigError
from sensorstream.settings import ConnectionSettings
from sensorstream.topics import READINGS, internal_topics
from stream_apps.control import RoutingControl, RoutingVersion
from stream_apps.routing.config import CompiledRouting, parse_routing
from stream_apps.settings import RouterSettings


def known_fields(registry: SchemaRegistry, input_topic: str) -> set[str]:
    """Fields a routing rule may name: the curated reading, provenance, and every field of
    every registered input schema version (new columns from the edge). Every version, not only
    the latest: nodes of one fleet with tables of different shapes take turns registering the
    latest, and a column only some nodes have is still a field of the topic."""
    fields = {f["name"] for f in curated_schema()["fields"]} | set(PROVENANCE_NAMES)
    for schema in registry.value_schemas(input_topic):
        fields |= {f["name"] for f in schema["fields"]}
    return fields


def check_routing(text: str, source: str, fields: set[str], control_topic: str) -> CompiledRouting:
    """`text` compiled as a router following `control_topic` would, before it is published;
    ConfigError naming `source`, the line, the route and the key when it does not compile."""
    return parse_routing(text, source, fields, internal_topics(control_topic))


def checked_routing_file(path: Path, fields: set[str], control_topic: str) -> str:
    """The routing file at `path`, once it compiles (`check_routing`): the text to publish.
    ConfigError naming the file when it cannot be read or does not compile."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read routing file: {exc}") from None
    check_routing(text, str(path), fields, control_topic)
    return text


def compile_version(
    version: RoutingVersion, fields: set[str], control_topic: str
) -> CompiledRouting:
    """A version from the control topic, compiled for a router following `control_topic`."""
    try:
        return check_routing(
            version.content, f"routing version {version.version}", fields, control_topic
        )
    except ConfigError as exc:
        # A version published by an older release, or against another registry's fields.
        raise ConfigError(
            f"{exc}\n(fix the file and publish it with `sensorstream routes apply FILE`)"
        ) from None


class RoutingVersions:
    """The routing versions on the control topic, for `sensorstream routes`: show, apply,
    history, rollback. Creates the control topic when it is missing (and refuses one that is
    not compacted)."""

    def __init__(self, settings: RouterSettings, connection: ConnectionSettings) -> None:
        self.settings = settings
        self.registry_config = connection.schema_registry_config()
        self.control = RoutingControl(connection.kafka_client_config(), settings.control_topic)
        self.control.ensure_topic()

    def apply(self, path: Path) -> tuple[RoutingVersion, bool]:
        """Publish the routing file at `path` as the next version once it compiles; (version,
        False) when it is the latest version's content already."""
        text = checked_routing_file(path, self._fields(), self.settings.control_topic)
        return self.control.publish(text, self.settings.applied_by, str(path))

    def rollback(self, number: int) -> tuple[RoutingVersion, bool]:
        """Publish version `number`'s content as a new version, once it still compiles against
        the registry's fields (history is never rewritten)."""
        old = self.version(number)
        check_routing(
            old.content, f"routing version {number}", self._fields(), self.settings.control_topic
        )
        return self.control.rollback(number, self.settings.applied_by)

    def history(self) -> list[RoutingVersion]:
        """Every version, oldest first."""
        return self.control.history()

    def latest(self) -> RoutingVersion | None:
        return self.control.latest()

    def version(self, number: int) -> RoutingVersion:
        try:
            return self.control.version(number)
        except LookupError as exc:
            raise ConfigError(f"{exc}; see `sensorstream routes history`") from None

    def _fields(self) -> set[str]:
        return known_fields(SchemaRegistry(self.registry_config), READINGS)
