"""`sensorstream route --once`: route what was in the input when it started, then exit 0.

quixstreams' own stop condition, `Application.run(timeout=...)`, stops after that long without
a message. That is not "everything available": on a live input that never goes quiet the run
never ends, and a pause longer than the timeout (an upstream transaction held open, a slow
fetch) ends it with records still waiting. So the router takes each assigned partition's end
when it first sees the partition (`sensorstream.end_offsets`) and stops the application when
its position has reached the end on every partition it owns; quixstreams then commits the
last checkpoint, as on any stop.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from quixstreams import Application

from sensorstream.end_offsets import EndOffsets, key
from sensorstream.errors import PipelineError
from stream_apps.quixstreams_internals import CommitCheckpoint, on_commit_checkpoint

if TYPE_CHECKING:
    from quixstreams.processing import ProcessingContext

CHECK_INTERVAL_S = 0.25


def input_exists(kafka_config: dict[str, Any], topic: str, timeout: float = 30) -> bool:
    admin = AdminClient(kafka_config)
    return topic in admin.list_topics(timeout=timeout).topics


class ReadToEnd:
    """Stops `app` once every partition it owns is routed to its end at assignment; or, when
    no partition was assigned within `join_timeout_s`, stops it with `failure` set."""

    def __init__(
        self,
        app: Application,
        context: ProcessingContext,
        join_timeout_s: float,
        topic: str,
        group: str,
    ) -> None:
        """`context`: the processing context of `app` (`quixstreams_internals`), whose consumer
        is the application's and whose commits are followed."""
        self.app, self.consumer = app, context.consumer
        self.join_timeout_s, self.topic, self.group = join_timeout_s, topic, group
        self.ends = EndOffsets()
        self.failure: PipelineError | None = None
        self.started = time.monotonic()
        self._checked = 0.0

        def checking(commit_checkpoint: CommitCheckpoint) -> CommitCheckpoint:
            @functools.wraps(commit_checkpoint)
            def checked(*args: Any, **kwargs: Any) -> None:
                commit_checkpoint(*args, **kwargs)
                self._check()

            return checked

        # Called on the application's thread after every message (and every empty poll).
        on_commit_checkpoint(context, checking)

    def _check(self) -> None:
        now = time.monotonic()
        if now - self._checked < CHECK_INTERVAL_S:
            return
        self._checked = now
        assignment = self.consumer.assignment()
        owned = {key(tp) for tp in assignment}
        gone = self.ends.owned() - owned
        if gone:
            self.ends.revoked(TopicPartition(t, p) for t, p in gone)
        self.ends.assigned(self.consumer, assignment)
        if self.ends.reached(self.consumer):
            self.app.stop()
        elif not self.ends.ever_owned and now - self.started > self.join_timeout_s:
            self.failure = PipelineError(
                f"no partition of {self.topic} was assigned to the router within "
                f"{self.join_timeout_s:g} s (consumer group {self.group}): the broker may be "
                "unreachable, or the group's other members own every partition: stop them "
                "first (a router in a group of its own would route the input again from its "
                "start)"
            )
            self.app.stop()
