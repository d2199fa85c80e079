"""A topic created a moment ago is not yet known to every part of the broker: the compaction
check asks again instead of failing the command that just created it."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from sensorstream.errors import ConfigError, PipelineError
from sensorstream.topics import require_compacted


class AdminAnsweringLate:
    """Answers UNKNOWN_TOPIC_OR_PART `unknown_for` times, then the given policy."""

    def __init__(
        self, policy: str, unknown_for: int, error: int = KafkaError.UNKNOWN_TOPIC_OR_PART
    ):
        self.policy = policy
        self.unknown_for = unknown_for
        self.error = error
        self.calls = 0

    def describe_configs(self, resources, request_timeout):
        self.calls += 1
        future: Future = Future()
        if self.calls <= self.unknown_for:
            future.set_exception(KafkaException(KafkaError(self.error)))
        else:
            future.set_result({"cleanup.policy": SimpleNamespace(value=self.policy)})
        return {resources[0]: future}


def test_a_topic_not_yet_known_is_asked_again() -> None:
    admin = AdminAnsweringLate("compact", unknown_for=3)
    require_compacted(admin, ["sensors.producer-checkpoints"], timeout=30)
    assert admin.calls == 4


def test_a_delete_policy_seen_after_the_wait_is_still_refused() -> None:
    admin = AdminAnsweringLate("delete", unknown_for=2)
    with pytest.raises(ConfigError, match=r"cleanup\.policy=delete"):
        require_compacted(admin, ["sensors.routing-control"], timeout=30)


def test_other_errors_fail_with_the_topic_named() -> None:
    admin = AdminAnsweringLate(
        "compact", unknown_for=1, error=KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    with pytest.raises(PipelineError, match=r"sensors\.routing-control"):
        require_compacted(admin, ["sensors.routing-control"], timeout=30)
    assert admin.calls == 1


def test_a_topic_that_never_appears_fails_after_the_timeout() -> None:
    admin = AdminAnsweringLate("compact", unknown_for=10**9)
    with pytest.raises(PipelineError, match=r"sensors\.routing-control"):
        require_compacted(admin, ["sensors.routing-control"], timeout=0.5)
