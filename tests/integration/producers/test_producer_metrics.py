"""The producer's Prometheus endpoint, scraped over HTTP after real rows went to the real
broker: the counts are the rows that were committed, once, and the gauges say where it is."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.metrics import ProducerMetrics
from producers.settings import ProducerSettings
from producers.simulator import SimulatorSettings, SteppingClock, run_simulator
from producers.tailer import EdgeTailer
from sensorstream.metrics import MetricFamilies, serve_metrics
from tests.edge_nodes import node_settings
from tests.integration.producers.test_producer_bad_source import cli_environment
from tests.kafka_helpers import read_topic
from tests.processes import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def simulate(db: Path, count: int, start: datetime) -> None:
    settings = SimulatorSettings(db=db, count=count, rate=0, seed=3, sensors=4)
    run_simulator(settings, clock=SteppingClock(start, timedelta(milliseconds=10)))


def add_bad_rows(db: Path, count: int) -> None:
    conn = sqlite3.connect(db)
    for _ in range(count):
        conn.execute(
            "INSERT INTO sensor_readings (timestamp, sensor_id, temperature) "
            "VALUES ('2026-11-20T08:00:00Z', 'sensor-bad', 'hot')"
        )
    conn.commit()
    conn.close()


@pytest.fixture
def settings(tmp_path, unique) -> ProducerSettings:
    return node_settings(
        tmp_path / "edge.db", unique, chunk_rows=700, metrics_port=free_port(), once=True
    )


def test_scraped_counts_are_the_committed_rows(kafka, connection, settings):
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    simulate(settings.sqlite, 2000, two_hours_ago)
    add_bad_rows(settings.sqlite, 3)
    families = MetricFamilies()
    with serve_metrics(families.registry, settings) as endpoint:
        assert endpoint is not None
        result = EdgeTailer(settings, connection, metrics=ProducerMetrics(families)).run()
        samples = scrape(endpoint.url)
    assert (result.rows, result.dead_letters, result.transactions) == (2003, 3, 3)
    produced = len(read_topic(kafka.bootstrap_servers, settings.topic))
    assert produced == 2000

    assert value(samples, "sensorstream_records_in_total", stage="producer") == 2003
    out = value(samples, "sensorstream_records_out_total", stage="producer", route="readings")
    assert out == produced
    dead = {"stage": "producer"}
    assert value(samples, "sensorstream_dead_letters_total", **dead, reason="bad_row") == 3
    assert value(samples, "sensorstream_dead_letters_total", **dead, reason="encode") == 0
    for histogram in ("batch_duration", "commit_duration"):
        name = f"sensorstream_{histogram}_seconds_count"
        assert value(samples, name, stage="producer") == 3  # one per transaction
        assert value(samples, f"sensorstream_{histogram}_seconds_sum", stage="producer") > 0

    # Every record's event time (two hours ago, give or take the 20 s the rows span) to commit.
    latency = {"stage": "producer", "route": "readings"}
    e2e = "sensorstream_end_to_end_latency_seconds"
    assert value(samples, f"{e2e}_count", **latency) == 2000
    assert value(samples, f"{e2e}_bucket", **latency, le="3600.0") == 0
    assert value(samples, f"{e2e}_bucket", **latency, le="14400.0") == 2000
    assert value(samples, f"{e2e}_bucket", **latency, le="+Inf") == 2000
    assert 7000 * 2000 < value(samples, f"{e2e}_sum", **latency) < 7400 * 2000

    assert value(samples, "sensorstream_producer_checkpoint_rowid") == 2003
    assert value(samples, "sensorstream_producer_backlog_rows") == 0
    assert value(samples, "sensorstream_producer_offline") == 0
    assert value(samples, "sensorstream_producer_outages_total") == 0
    info = {"node_id": settings.node_id, "region": "eu-west-1", "table": "sensor_readings"}
    assert value(samples, "sensorstream_producer_info", **info) == 1
    last_commit = value(samples, "sensorstream_last_commit_timestamp_seconds", stage="producer")
    assert abs(last_commit - time.time()) < 600
    assert value(samples, "process_resident_memory_bytes") > 0


def test_a_restart_counts_only_what_it_commits(connection, settings):
    simulate(settings.sqlite, 900, datetime.now(UTC))
    EdgeTailer(settings, connection).run()
    simulate(settings.sqlite, 250, datetime.now(UTC))
    families = MetricFamilies()
    with serve_metrics(families.registry, settings) as endpoint:
        EdgeTailer(settings, connection, metrics=ProducerMetrics(families)).run()
        samples = scrape(endpoint.url)
    assert value(samples, "sensorstream_records_in_total", stage="producer") == 250
    assert value(samples, "sensorstream_producer_checkpoint_rowid") == 1150
    assert value(samples, "sensorstream_producer_backlog_rows") == 0


def test_an_unreachable_broker_shows_as_offline_with_the_backlog(tmp_path, connection, settings):
    simulate(settings.sqlite, 120, datetime.now(UTC))
    away = connection.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    live = settings.model_copy(update={"once": False, "retry_backoff_max_s": 1.0})
    families = MetricFamilies()
    stop = threading.Event()
    with serve_metrics(families.registry, live) as endpoint:
        tailer = EdgeTailer(live, away, stop, ProducerMetrics(families))
        runner = threading.Thread(target=tailer.run)
        runner.start()
        try:
            deadline = time.monotonic() + 60
            samples = scrape(endpoint.url)
            while value(samples, "sensorstream_producer_offline") != 1:
                assert time.monotonic() < deadline, "never reported offline"
                stop.wait(0.2)
                samples = scrape(endpoint.url)
            while ("sensorstream_producer_backlog_rows", frozenset()) not in samples or value(
                samples, "sensorstream_producer_backlog_rows"
            ) != 120:
                assert time.monotonic() < deadline, "never reported the backlog"
                stop.wait(0.2)
                samples = scrape(endpoint.url)
        finally:
            stop.set()
            runner.join(60)
    assert value(samples, "sensorstream_producer_outages_total") == 1
    assert value(samples, "sensorstream_records_in_total", stage="producer") == 0


def test_the_produce_command_serves_metrics_on_its_flag_port(
    tmp_path, kafka, schema_registry, unique
):
    db = tmp_path / "edge.db"
    simulate(db, 1500, datetime.now(UTC))
    port = free_port()
    env = cli_environment(kafka, schema_registry, unique)
    env["SENSORSTREAM_PRODUCER_METRICS_PORT"] = str(free_port())  # the flag wins over this
    command = [sys.executable, "-m", "sensorstream", "produce", "--sqlite", str(db)]
    process = subprocess.Popen(
        [*command, "--metrics-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 90
        records_in = -1.0
        while records_in != 1500:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, f"records_in stayed at {records_in}"
            time.sleep(0.2)
            try:
                samples = scrape(url)
            except httpx.TransportError:
                continue  # not listening yet
            records_in = value(samples, "sensorstream_records_in_total", stage="producer")
        assert value(samples, "sensorstream_producer_backlog_rows") == 0
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert stdout.startswith("produced 1500 rows"), stdout
    assert f"metrics at http://127.0.0.1:{port}/metrics" in stderr
