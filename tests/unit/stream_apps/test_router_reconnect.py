"""Which failures the router rides out in-process (a broker that is away) and for how long
(the retry budget, counted per outage), checked on a fake clock."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from sensorstream.errors import PipelineError
from stream_apps.reconnect import RECOVERED_AFTER_S, Outage, outage_error


def kafka_exception(code: int, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "broker says no", fatal=fatal))


def test_a_timed_out_transaction_is_an_outage() -> None:
    error = outage_error(kafka_exception(KafkaError._TIMED_OUT))
    assert error is not None and error.code() == KafkaError._TIMED_OUT


def test_an_outage_is_found_behind_the_exceptions_that_wrap_it() -> None:
    try:
        try:
            raise kafka_exception(KafkaError._TRANSPORT)
        except KafkaException as exc:
            raise PipelineError("creating topic sensors.raw: transport failure") from exc
    except PipelineError as wrapped:
        error = outage_error(wrapped)
    assert error is not None and error.code() == KafkaError._TRANSPORT


@pytest.mark.parametrize(
    "exc",
    [
        kafka_exception(KafkaError._FENCED, fatal=True),  # another instance took over
        kafka_exception(KafkaError._TIMED_OUT, fatal=True),
        kafka_exception(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        ValueError("a bug"),
    ],
)
def test_fatal_errors_and_bugs_are_not_ridden_out(exc: BaseException) -> None:
    assert outage_error(exc) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_counts_from_the_first_failure_of_an_outage() -> None:
    clock = Clock()
    outage = Outage(60, "127.0.0.1:9092", clock)
    error = KafkaError(KafkaError._TRANSPORT, "Broker transport failure")
    assert outage.failed(error, ran_for_s=45) == 0
    clock.now += 30
    assert outage.failed(error, ran_for_s=0.5) == 30
    clock.now += 30
    with pytest.raises(PipelineError) as raised:
        outage.failed(error, ran_for_s=0.5)
    message = str(raised.value)
    assert message.startswith("Kafka at 127.0.0.1:9092 unreachable for 60 s (3 attempts")
    assert "retry budget 60 s" in message and "Broker transport failure" in message


def test_a_run_that_lasted_starts_a_new_outage() -> None:
    clock = Clock()
    outage = Outage(60, "kafka:9092", clock)
    error = KafkaError(KafkaError._TIMED_OUT, "timed out")
    outage.failed(error, ran_for_s=0)
    clock.now += 50
    outage.failed(error, ran_for_s=1)
    clock.now += 600  # then a long healthy run ...
    assert outage.failed(error, ran_for_s=RECOVERED_AFTER_S + 1) == 0  # ... and a new outage
