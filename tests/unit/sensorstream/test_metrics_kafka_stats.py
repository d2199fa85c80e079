"""Consumer lag from librdkafka statistics documents (their shape: librdkafka STATISTICS.md)."""

from __future__ import annotations

import json
import logging

from prometheus_client import generate_latest

from sensorstream.kafka_stats import ConsumerLag, partition_lags
from sensorstream.metrics import MetricFamilies


def partition(p: int, **fields) -> dict:
    base = {
        "partition": p,
        "desired": True,
        "hi_offset": 100,
        "ls_offset": 100,
        "app_offset": -1001,
        "committed_offset": -1001,
        "consumer_lag": -1,
    }
    return {**base, **fields}


def stats(**topics: dict[int, dict]) -> dict:
    return {
        "name": "rdkafka#consumer-1",
        "type": "consumer",
        "topics": {
            name.replace("_", "."): {
                "topic": name.replace("_", "."),
                "partitions": {str(p): fields for p, fields in partitions.items()},
            }
            for name, partitions in topics.items()
        },
    }


def test_committed_lag_per_assigned_partition():
    document = stats(
        sensors_raw={
            0: partition(0, committed_offset=70, consumer_lag=30),
            1: partition(1, committed_offset=100, consumer_lag=0),
            -1: partition(-1),  # librdkafka's internal unassigned partition
            2: partition(2, desired=False, consumer_lag=55),  # not ours (any more)
        }
    )
    assert partition_lags(document) == {("sensors.raw", 0): 30, ("sensors.raw", 1): 0}


def test_before_the_first_commit_the_consumed_position_gives_the_lag():
    document = stats(
        sensors_readings={
            0: partition(0, app_offset=40),  # read_committed: the end is the last stable offset
            1: partition(1, app_offset=10, ls_offset=-1001, hi_offset=50),
            2: partition(2),  # nothing consumed yet, nothing committed: unknown
            3: partition(3, hi_offset=-1001, ls_offset=-1001, app_offset=5),  # end unknown
            # Fetching, nothing handed to the application yet (an empty partition: lag 0).
            4: partition(4, fetch_state="active", next_offset=100),
            5: partition(5, fetch_state="offset-query", next_offset=0),
        }
    )
    assert partition_lags(document) == {
        ("sensors.readings", 0): 60,
        ("sensors.readings", 1): 40,
        ("sensors.readings", 4): 0,
    }


def test_the_consumed_basis_ignores_a_committed_offset_the_consumer_cannot_follow():
    # Exactly-once: the producer commits the offsets; the consumer still holds the offset it
    # fetched on assignment, 900 records ago.
    part = partition(
        0, committed_offset=100, consumer_lag=900, app_offset=998, hi_offset=1000, ls_offset=1000
    )
    document = stats(sensors_readings={0: part})
    assert partition_lags(document, "committed") == {("sensors.readings", 0): 900}
    assert partition_lags(document, "consumed") == {("sensors.readings", 0): 2}


def test_a_document_without_topics_has_no_lag():
    assert partition_lags({"type": "consumer"}) == {}
    assert partition_lags({"topics": {"t": {"partitions": {}}}}) == {}


def lag_samples(families: MetricFamilies) -> set[str]:
    return {
        line
        for line in generate_latest(families.registry).decode().splitlines()
        if line.startswith("sensorstream_consumer_lag_records{")
    }


def test_the_gauge_follows_the_assignment():
    families = MetricFamilies()
    lag = ConsumerLag(families.consumer_lag, "sink")
    config = lag.consumer_config()
    assert config["statistics.interval.ms"] == 5000 and config["stats_cb"] == lag.on_stats
    lag.on_stats(
        json.dumps(
            stats(
                sensors_raw={
                    0: partition(0, consumer_lag=12),
                    1: partition(1, consumer_lag=3),
                }
            )
        )
    )
    assert lag_samples(families) == {
        'sensorstream_consumer_lag_records{partition="0",stage="sink",topic="sensors.raw"} 12.0',
        'sensorstream_consumer_lag_records{partition="1",stage="sink",topic="sensors.raw"} 3.0',
    }
    # A rebalance took partition 1 away: its series goes rather than freezing at 3.
    lag.on_stats(json.dumps(stats(sensors_raw={0: partition(0, consumer_lag=0)})))
    assert lag_samples(families) == {
        'sensorstream_consumer_lag_records{partition="0",stage="sink",topic="sensors.raw"} 0.0'
    }


def test_unreadable_statistics_are_logged_and_change_nothing(caplog):
    families = MetricFamilies()
    lag = ConsumerLag(families.consumer_lag, "router")
    lag.update({("sensors.readings", 0): 7})
    with caplog.at_level(logging.WARNING, "sensorstream.metrics"):
        lag.on_stats("{not json")
        lag.on_stats(json.dumps({"topics": {"t": {"partitions": {"0": "nonsense"}}}}))
    assert caplog.text.count("unreadable librdkafka statistics") == 2
    assert lag_samples(families) == {
        'sensorstream_consumer_lag_records{partition="0",stage="router",'
        'topic="sensors.readings"} 7.0'
    }
