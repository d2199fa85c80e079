"""Routing versions as an operator changes them: checked against the fields the records of
their input topic carry (by the schema registry), then published on the routing control topic.

`sensorstream routes` (`RoutingVersions`), a router started with `--routes FILE` and a running
router switching to a new version (`stream_apps.app`) all check a routing text with
`check_routing`, so a routing file is accepted or refused the same way, with the same message,
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
from stream_apps.routing.config import CompiledRouting, InputFields, compile_routing
from stream_apps.settings import RouterSettings


def input_fields(registry: SchemaRegistry, input_topic: str) -> InputFields:
    """Fields a routing rule reading `input_topic` may name: provenance, and every field of
    every registered version of `<input_topic>-value`. Every version, not only the latest:
    nodes of one fleet with tables of different shapes take turns registering the latest,
    and a column only some nodes have is still a field of the topic.

    sensors.readings also has the curated reading's fields, which its producers register
    (a router may start before the first of them). A topic with no value schema of its own
    holds copies of readings (a replay of dead letters) or nothing yet: it is checked as
    sensors.readings is. Any other topic has only its own fields: a rule naming a field its
    records never carry would route nothing, silently, so it is refused.
    """
    subject = f"{input_topic}-value"
    own = registry.value_schemas(input_topic)
    if own and input_topic != READINGS:
        names, schemas = set(PROVENANCE_NAMES), own
        origin = f"every registered version of {subject}"
    else:
        names = {f["name"] for f in curated_schema()["fields"]} | set(PROVENANCE_NAMES)
        schemas = own if input_topic == READINGS else registry.value_schemas(READINGS)
        origin = f"the curated reading and every registered version of {READINGS}-value"
        if input_topic != READINGS:
            origin += f", as {subject} has no version yet"
    for schema in schemas:
        names |= {f["name"] for f in schema["fields"]}
    return InputFields(
        frozenset(names),
        unknown=(
            f"the records of input topic {input_topic} do not carry that field (checked "
            f"against {origin}): correct the field name, or set `input:` to the topic whose "
            "records carry it"
        ),
    )


def known_fields(registry: SchemaRegistry, input_topic: str) -> set[str]:
    """The names of `input_fields`."""
    return set(input_fields(registry, input_topic).names)


def check_routing(
    text: str, source: str, registry: SchemaRegistry, control_topic: str
) -> CompiledRouting:
    """`text` compiled as a router following `control_topic` would, against the fields of
    its own input topic (`input_fields`), before it is published or switched to; ConfigError
    naming `source`, the line, the route and the key (and, for an unknown field, the input
    topic and the remedy) when it does not compile."""
    return compile_routing(
        text,
        source,
        lambda input_topic: input_fields(registry, input_topic),
        internal_topics(control_topic),
    )


def checked_routing_file(path: Path, registry: SchemaRegistry, control_topic: str) -> str:
    """The routing file at `path`, once it compiles (`check_routing`): the text to publish.
    ConfigError naming the file when it cannot be read or does not compile."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read routing file: {exc}") from None
    check_routing(text, str(path), registry, control_topic)
    return text


def compile_version(
    version: RoutingVersion, registry: SchemaRegistry, control_topic: str
) -> CompiledRouting:
    """A version from the control topic, compiled for a router following `control_topic`."""
    try:
        return check_routing(
            version.content, f"routing version {version.version}", registry, control_topic
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
        text = checked_routing_file(path, self._registry(), self.settings.control_topic)
        return self.control.publish(text, self.settings.applied_by, str(path))

    def rollback(self, number: int) -> tuple[RoutingVersion, bool]:
        """Publish version `number`'s content as a new version, once it still compiles against
        the registry's fields (history is never rewritten)."""
        old = self.version(number)
        check_routing(
            old.content, f"routing version {number}", self._registry(), self.settings.control_topic
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

    def _registry(self) -> SchemaRegistry:
        """Only `apply` and `rollback` check fields: `show` and `history` need no registry."""
        return SchemaRegistry(self.registry_config)
