"""Where routes may write: never where a record would come back, be misread, or land twice.

- The input topic: the router would route its own outputs again, without end (each pass adds
  a copy to every route).
- The dead-letter topic: records would pass for failures, and the DLQ table would hold readings.
- Internal topics (the routing control topic, the producers' checkpoint topic, Kafka's own
  `__` topics): a reading there would be read back as a routing version or a checkpoint.
- Another route's topic: its table would hold the records of both routes, a record matching
  both twice.

A literal topic breaking a rule, two routes with one literal topic, and two templates that can
render one topic are refused when the file is loaded. A template whose topic could break a rule
only for some values (`sensors.{_region}` with a region `readings`) is checked per record: that
record goes to the DLQ for that route (TopicTemplate.forbid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sensorstream.topics import KAFKA_INTERNAL_PREFIX
from stream_apps.routing.topic_names import TopicTemplate, shared_topic

CANNOT_WRITE = "a route cannot write there"
TWICE = "two routes writing one topic would put records in its table twice"


class TopicConflict(ValueError):
    """A route topic refused at load; `route` is the route's index in the file."""

    def __init__(self, route: int, message: str) -> None:
        super().__init__(message)
        self.route = route


def internal_reason(topic: str, internal: Mapping[str, str]) -> str | None:
    """What internal topic `topic` is (e.g. "the routing control topic"), or None."""
    why = internal.get(topic)
    if why is None and topic.startswith(KAFKA_INTERNAL_PREFIX):
        why = "one of Kafka's internal topics"
    return why


def reserved_reason(
    topic: str, input_topic: str, dead_letter_topic: str, internal: Mapping[str, str]
) -> str | None:
    """Why no route may write into `topic`, or None when a route may."""
    if topic == input_topic:
        return "the input topic"
    if topic == dead_letter_topic:
        return "the dead-letter topic"
    return internal_reason(topic, internal)


def assign_topics(
    names: Sequence[str],
    topics: Sequence[TopicTemplate],
    input_topic: str,
    dead_letter_topic: str,
    internal: Mapping[str, str],
    line_of: Callable[[int], int | None],
) -> None:
    """Check every route's topic (TopicConflict for the first refused) and give each template
    its per-record rule. `line_of(i)` is the line of route i's topic, for messages."""
    owners: dict[str, int] = {}
    for i, topic in enumerate(topics):
        literal = topic.literal
        if literal is None:
            continue
        why = reserved_reason(literal, input_topic, dead_letter_topic, internal)
        if why is not None:
            raise TopicConflict(i, f"'{literal}' is {why}; {CANNOT_WRITE}")
        owner = owners.setdefault(literal, i)
        if owner != i:
            raise TopicConflict(
                i,
                f"'{literal}' is already the topic of route '{names[owner]}'{_at(line_of(owner))}; "
                f"{TWICE}: give each route a topic of its own",
            )
    templated = [i for i, topic in enumerate(topics) if topic.literal is None]
    for n, i in enumerate(templated):
        for j in templated[:n]:
            example = shared_topic(topics[j], topics[i])
            if example is not None:
                raise TopicConflict(
                    i,
                    f"topic template '{topics[i].text}' can render the same topic as route "
                    f"'{names[j]}' ('{topics[j].text}'){_at(line_of(j))}, e.g. '{example}'; "
                    f"{TWICE}: give each templated route a prefix of its own",
                )
    owned = {literal: f"the topic of route '{names[i]}'" for literal, i in owners.items()}

    def refusal(topic: str) -> str | None:
        return reserved_reason(topic, input_topic, dead_letter_topic, internal) or owned.get(topic)

    for i in templated:
        topics[i].forbid(refusal)


def _at(line: int | None) -> str:
    return f" (line {line})" if line is not None else ""
