"""Sink benchmark (issue 5): a Kafka backlog of Avro readings into one Delta table on S3.

    uv run python -m benchmarks.sink [--records 1000000] [--out benchmarks/results/sink.json]

The machine is shared and noisy, so the sink is judged as a ratio to a baseline measured in
the same run, on the same records, and CPU time per row (all threads of the process) is
reported beside every wall-clock rate, as it moves much less with the machine's other load:

- Input: `--records` curated sensor readings (the simulator's `ReadingModel`, seed 1, 20
  sensors, timestamps spread evenly over 2.5 days from 2026-01-01, i.e. three `event_date`
  partitions, provenance fields set), Avro-encoded with `AvroEncoder` in the Confluent wire
  format under the id the registry gives the topic's subject, produced once per run into
  `bench.<run>.raw` (3 partitions) the way the tailer produces (transactions of 5000, lz4,
  idempotent, key = sensor id): a backlog. The encoded bodies are cached in benchmarks/.data.
- Sink: `DeltaSink(once=True).run()` in a fresh subprocess (its peak RSS, VmHWM, is its own)
  into ONE Delta table `s3://sensorstream-bench/<run>/<variant>/lake/raw` on the stack's S3
  server, with its own consumer group: with flush settings for throughput (`--max-rows`,
  default 250k rows per commit; the headline) and with the product defaults. Timing: from the
  end of the partition assignment to the end of the last Delta commit, minus the wait before
  the final flush: the time from the last message (or the end of the last flush before it) to
  that final flush, which `once=True` starts when every partition is read to its end, is
  taken out. Start-up (clients, the group join) is left out too; the whole-run
  figure, which includes it, is reported beside. Checked afterwards: the table holds exactly
  `--records` rows with unique (_kafka_partition, _kafka_offset); commits (`history()`) and
  data files (`file_uris()`) are counted. The time spent in the cyclic GC is measured
  (gc.callbacks), and a what-if run repeats the throughput run with the GC disabled
  (benchmark only; `--no-what-if` skips it).
- Baseline, the I/O floor: the same records, consumed and decoded beforehand into one Arrow
  table with exactly the sink's columns (`sinks.records.readings_table` per batch,
  concatenated), written with a single `write_deltalake` call (append, partitioned by
  event_date) to another table on the same S3 server, in a fresh subprocess. It runs before and
  after the sink runs and the faster round is kept, so noise makes the ratio sink / floor
  pessimistic rather than flattering.
- Where the time goes, each step alone on the same records: decode alone (`decode_bodies` over
  the bodies grouped as the sink groups them: one group per flush batch of `--max-rows`
  messages in consumption order), the sink's whole per-batch Arrow step (`readings_table`:
  decode plus the metadata and partition columns), and consume alone (a read_committed
  confluent-kafka consumer with the sink's own configuration, assigned from the beginning,
  `consume(5000)` batches), then the same with the sink's own columnar
  buffering (`TableBatch`) per consume result.
  serial limit = 1 / (1/consume + 1/readings_table + 1/floor): the sink does these one after
  the other (only librdkafka's prefetch overlaps), so sink / serial limit says what its loop,
  flush bookkeeping and per-commit costs add.
- Memory: the sink with `max_buffered_rows` at its default on a backlog of `--memory-records`
  (2,000,000 by default, 1,000,000 in quick mode, i.e. --records under 1M: the generated
  records produced again as often as needed, each copy at new offsets) with the table's own
  limits set out of reach, so that only `max_buffered_rows` decides when to flush; then the
  same with twice the limit. Peak RSS should follow the limit, not the backlog.

`--profile` runs only the throughput-settings sink under cProfile (200k records unless
--records is given) and writes where the time goes next to --out. cProfile sees one thread, so
that run flushes on the loop's thread (`background_flush` off); the measured runs overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pickle
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.machine_cpu import CpuSnapshot, stack_server_pids

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / ".data"
DEFAULT_OUT = BENCH_DIR / "results" / "sink.json"
DEFAULT_RECORDS = 1_000_000
PROFILE_RECORDS = 200_000
DEFAULT_MEMORY_RECORDS = 2_000_000
QUICK_MEMORY_RECORDS = 1_000_000
BUCKET = "sensorstream-bench"
PARTITIONS = 3
CHUNK = 5000  # records per producer transaction, as the tailer's chunk_rows
SEED, SENSORS, REGION = 1, 20, "us-east-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=2.5)  # event times of the backlog: three event_date partitions
DECODE_PASSES = 2  # decode is a short CPU loop: the faster pass is kept
NO_LIMIT_ROWS = 1_000_000_000
NO_LIMIT_BYTES = 2**40
CACHE_VERSION = 1  # of the generated readings; bump when generate_messages changes

TARGETS = {
    "ratio_vs_floor": 0.5,  # sink rows/s / single write_deltalake rows/s, at least
    "rows_per_s": 50_000,  # sink, throughput settings, at least
}


_log = harness.logger("sink-bench")


# -- connection: the running local stack, unless the environment says otherwise ---------------


def use_stack_environment() -> dict[str, str]:
    """Fill in what `sensorstream stack env` exports for every variable not already set, so
    this process and its workers reach the running stack. Starts nothing."""
    from infra.local_stack.stack import LocalStack

    for key, value in LocalStack().exports().items():
        os.environ.setdefault(key, value)
    return {
        "kafka": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        "schema_registry": os.environ["SCHEMA_REGISTRY_URL"],
        "s3": os.environ.get("AWS_ENDPOINT_URL", ""),
    }


def _lake_connection(lake: str):
    from sensorstream.settings import ConnectionSettings, load_settings

    return load_settings(ConnectionSettings, overrides={"sensorstream_lake_uri": lake})


def _s3_filesystem():
    from infra.local_stack.object_store import s3_filesystem

    env = os.environ
    return s3_filesystem(
        env["AWS_ENDPOINT_URL"],
        env["AWS_ACCESS_KEY_ID"],
        env["AWS_SECRET_ACCESS_KEY"],
        env.get("AWS_REGION", "us-east-1"),
    )


def ensure_bucket() -> None:
    from infra.local_stack.object_store import create_bucket

    env = os.environ
    create_bucket(
        env["AWS_ENDPOINT_URL"],
        env["AWS_ACCESS_KEY_ID"],
        env["AWS_SECRET_ACCESS_KEY"],
        env.get("AWS_REGION", "us-east-1"),
        BUCKET,
    )


def _names(run_id: str, variant: str = "") -> dict[str, str]:
    """Topic, prefix and dead-letter topic: `bench.<run>.[<variant>.]raw` lands in route raw."""
    prefix = f"bench.{run_id}." + (f"{variant}." if variant else "")
    return {"topic": f"{prefix}raw", "prefix": prefix, "dead_letter_topic": f"{prefix}dlq"}


def lake_uri(run_id: str, variant: str) -> str:
    return f"s3://{BUCKET}/{run_id}/{variant}/lake"


def sink_settings(
    run_id: str,
    variant: str,
    topic_variant: str,
    *,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_latency_s: float | None = None,
    max_buffered_rows: int | None = None,
) -> dict[str, Any]:
    """SinkSettings fields (JSON) for one run; None keeps the product default."""
    names = _names(run_id, topic_variant)
    table = {
        k: v
        for k, v in (
            ("max_rows", max_rows),
            ("max_bytes", max_bytes),
            ("max_latency_s", max_latency_s),
        )
        if v is not None
    }
    settings: dict[str, Any] = {
        "consumer_group": f"bench-{run_id}-{variant}",
        "topics": [names["topic"]],
        "topic_prefix": names["prefix"],
        "dead_letter_topic": names["dead_letter_topic"],
        "defaults": table,
        "once": True,
    }
    if max_buffered_rows is not None:
        settings["max_buffered_rows"] = max_buffered_rows
    return settings


def _effective(settings: dict[str, Any]) -> dict[str, Any]:
    from sinks.settings import SinkSettings

    s = SinkSettings(**settings)
    return {
        **s.defaults.model_dump(include={"max_rows", "max_bytes", "max_latency_s"}),
        "max_buffered_rows": s.max_buffered_rows,
        "poll_batch": s.poll_batch,
        "checkpoint_interval": s.checkpoint_interval,
    }


# -- the input: readings, encoded once, produced into the backlog topic ------------------------


def generate_messages(records: int, schema: dict, schema_id: int) -> list[tuple[bytes, bytes]]:
    """(key, Confluent-framed Avro value) for `records` readings, deterministic for a count.

    The bodies are cached in benchmarks/.data (without the 5-byte wire header, which depends
    on the registry's id) and reused by later runs; delete the file to regenerate them.
    """
    from schemas.registry import WIRE_HEADER_SIZE, wire_prefix

    path = DATA_DIR / f"sink-readings-v{CACHE_VERSION}-{records}.pickle"
    prefix = wire_prefix(schema_id)
    if path.exists():
        with path.open("rb") as file:
            keys, bodies = pickle.load(file)
        return [(k, prefix + b) for k, b in zip(keys, bodies, strict=True)]
    _log(f"generating and encoding {records:,} readings into {path} (once; reused later)")
    messages = _encode_readings(records, schema, schema_id)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as file:
        keys = [k for k, _ in messages]
        pickle.dump((keys, [v[WIRE_HEADER_SIZE:] for _, v in messages]), file, protocol=5)
    os.replace(tmp, path)
    return messages


def _encode_readings(records: int, schema: dict, schema_id: int) -> list[tuple[bytes, bytes]]:
    from producers.simulator import INSERT_COLUMNS, build_fleet
    from producers.simulator.readings import ReadingModel
    from schemas.avro_codec import AvroEncoder

    model = ReadingModel(
        build_fleet(SEED, REGION, SENSORS), seed=SEED, region=REGION, anomaly_probability=0.05
    )
    encode = AvroEncoder(schema, schema_id).encode
    columns = INSERT_COLUMNS[1:]  # after the ISO `timestamp` text, which becomes a datetime
    step = SPAN / records
    messages = []
    for i in range(records):
        at = T0 + step * i
        row = model.next_row(at)
        record = dict(zip(columns, row[1:], strict=True))
        record["id"] = i + 1
        record["timestamp"] = at
        record["_node_id"] = "edge-bench"
        record["_region"] = REGION
        record["_source_table"] = "sensor_readings"
        record["_source_rowid"] = i + 1
        messages.append((record["sensor_id"].encode(), encode(record)))
    return messages


def _retrying(call, what: str, attempts: int = 5) -> None:
    """`call()`, again after a retriable Kafka error (a time-out or a coordinator moving on a
    loaded broker), as librdkafka's transactional API allows."""
    from confluent_kafka import KafkaException

    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts - 1:
                raise
            _log(f"{what}: {exc.args[0].str()}; retrying")
            time.sleep(1)


def produce_backlog(topic: str, messages: list[tuple[bytes, bytes]], total: int) -> dict:
    """`total` messages (cycling through `messages`) into `topic`, as the tailer produces."""
    from confluent_kafka import Producer

    from sensorstream.logs import kafka_logger
    from sensorstream.topics import TopicSpec, ensure_topics

    kafka = harness.connection().kafka_client_config()
    ensure_topics(kafka, [TopicSpec(topic, PARTITIONS)])
    producer = Producer(
        {
            **kafka,
            "transactional.id": f"{topic}.bench-producer",
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "logger": kafka_logger(),
        }
    )
    _retrying(lambda: producer.init_transactions(60), "initialising the backlog producer")
    seconds, _ = harness.produce_in_transactions(
        producer,
        topic,
        messages,
        total,
        CHUNK,
        lambda: _retrying(
            lambda: producer.commit_transaction(60), "committing a backlog transaction"
        ),
    )
    return {**harness.rate(total, seconds), "topic": topic, "partitions": PARTITIONS}


def build_backlog(run_id: str, records: int) -> tuple[dict, int, list[tuple[bytes, bytes]]]:
    """The benchmark's input: `records` readings registered and produced into the run's
    routed topic `bench.<run>.raw`. Returns the backlog's description (topic, produce rate),
    the writer schema's registry id and the messages (to produce again elsewhere)."""
    topic = _names(run_id)["topic"]
    schema, schema_id = register_schema(topic)
    _log(f"input: {records:,} readings (schema id {schema_id})")
    t = time.perf_counter()
    messages = generate_messages(records, schema, schema_id)
    input_s = time.perf_counter() - t
    _log(f"producing the backlog into {topic}")
    backlog = produce_backlog(topic, messages, records)
    backlog["input_seconds"] = input_s
    backlog["mean_value_bytes"] = sum(len(v) for _, v in messages) / len(messages)
    return backlog, schema_id, messages


# -- workers (each in a fresh subprocess) -----------------------------------------------------


def _cpu(rows: int, cpu: float) -> dict[str, float]:
    """CPU seconds of the process (all threads) for a step; less sensitive to the machine's
    other load than wall time (CPU of the broker and of the S3 server is not included)."""
    return {"cpu_seconds": cpu, "cpu_us_per_row": 1e6 * cpu / rows if rows else 0.0}


class _GcTimer:
    """Time spent in the cyclic garbage collector (gc.callbacks), and full collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self.collections = 0
        self._started = 0.0
        self._on = True

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._on:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1
            self.full += info["generation"] == 2

    def reset(self) -> None:  # count from here on (resume after pause)
        self._on = True

    def pause(self) -> None:
        self._on = False

    def __enter__(self) -> _GcTimer:
        import gc

        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        import gc

        gc.callbacks.remove(self._callback)


def _worker_sink(spec: dict[str, Any], profile_out: Path | None) -> None:
    """DeltaSink(once=True).run() timed by the sink's own observer hooks (`sinks.observer`)."""
    from sensorstream.logs import configure
    from sinks.app import DeltaSink
    from sinks.observer import BatchTiming, SinkObserver
    from sinks.settings import SinkSettings

    configure("WARNING")
    clock = time.perf_counter
    calls: list[tuple[float, float, int]] = []
    flushes: list[dict[str, float]] = []
    marks: dict[str, float] = {}
    pids = spec.get("server_pids", {})
    machine: dict[str, CpuSnapshot] = {}
    waits: list[tuple[float, float]] = []  # the loop blocked on a lane: full, or memory bound
    rss_at_commit: dict[str, float] = {}

    class Timing(SinkObserver):
        def consumed(self, started: float, ended: float, messages: int) -> None:
            calls.append((started, ended, messages))

        def assigned(self, partitions) -> None:
            marks.setdefault("assigned", clock())
            marks.setdefault("cpu_assigned", harness.cpu_seconds())
            machine.setdefault("assigned", CpuSnapshot.take(pids))

        def batch_committing(self, route: str, records: int) -> None:
            rss_at_commit[route] = harness.vm_mb("VmRSS")

        def batch_committed(self, timing: BatchTiming) -> None:
            flushes.append(
                {
                    "rows": timing.records,
                    # decoding ran on the flush thread just before, or while the table's
                    # previous batch was committing
                    "start": timing.commit_started - timing.decode_s,
                    "commit_start": timing.commit_started,
                    "end": timing.commit_ended,
                    "readings_table_s": timing.decode_s,
                    "write_s": timing.delta_write_s,
                    "rss_at_start_mb": rss_at_commit.get(timing.route, 0.0),
                    "peak_rss_so_far_mb": harness.vm_mb("VmHWM"),
                }
            )
            machine["last_flush"] = CpuSnapshot.take(pids)

        def lanes_waited(self, started: float, ended: float) -> None:
            waits.append((started, ended))

        def landing_all(self) -> None:
            marks["break"] = clock()

    sink = DeltaSink(
        SinkSettings(**spec["settings"]), _lake_connection(spec["lake"]), observer=Timing()
    )
    rss_before = harness.peak_rss_mb()
    if spec.get("gc_off"):  # what-if, benchmark only: no cyclic GC during the run
        import gc

        gc.disable()
    run_started = clock()
    profiler = cProfile.Profile() if profile_out else None
    with _GcTimer() as gc_timer:
        if profiler:
            profiler.enable()
        result = sink.run()
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile_out)
    cpu_end = harness.cpu_seconds()

    rows = sum(result.rows.values())
    spent = {
        "readings_table": sum(f["readings_table_s"] for f in flushes),
        "write": sum(f["write_s"] for f in flushes),
    }
    busy = [c for c in calls if c[2]]
    start = marks["assigned"]
    last_message = busy[-1][1] if busy else start
    last_end = flushes[-1]["end"] if flushes else last_message
    idle = 0.0
    if "break" in marks and flushes and flushes[-1]["start"] >= marks["break"]:
        before_break = [f["end"] for f in flushes if f["end"] <= marks["break"]]
        idle = marks["break"] - max([last_message, *before_break])
    seconds = last_end - start - idle
    consume_s = sum(e - s for s, e, _ in calls if s >= start and e <= last_message)
    flush_s = sum(f["end"] - f["start"] for f in flushes)
    cpu = cpu_end - marks["cpu_assigned"]
    whole = result.seconds - idle
    harness.emit(
        {
            "rows": rows,
            "rows_by_table": result.rows,
            "dead_letters": result.dead_letters,
            "commits": result.commits,
            "flushes": len(flushes),
            "flush_rows": [f["rows"] for f in flushes],
            "seconds": seconds,
            "rows_per_s": rows / seconds if seconds > 0 else 0.0,
            "idle_subtracted_s": idle,
            "seconds_whole_run": whole,
            "rows_per_s_whole_run": rows / whole if whole > 0 else 0.0,
            "startup_s": start - run_started,
            "first_message_after_assign_s": (busy[0][1] - start) if busy else None,
            "breakdown_s": {
                "consume_calls": consume_s,
                "flushes": flush_s,
                "readings_table": spent["readings_table"],
                "delta_write": spent["write"],
                "flush_other": flush_s - spent["readings_table"] - spent["write"],
                "loop_other": seconds - consume_s - flush_s,
                "loop_waiting_for_lanes": sum(
                    e - s for s, e in waits if s >= start and e <= marks.get("break", e)
                ),
                "gc_anywhere": gc_timer.seconds,
            },
            "gc": {
                "off": bool(spec.get("gc_off")),
                "seconds": gc_timer.seconds,
                "collections": gc_timer.collections,
                "full_collections": gc_timer.full,
            },
            "per_flush": [
                {
                    "rows": f["rows"],
                    "seconds": f["end"] - f["start"],
                    # on the loop's clock, from the assignment: decode start, commit step
                    # start (after the table's previous batch landed), end
                    "timeline_s": [
                        round(f[k] - start, 3) for k in ("start", "commit_start", "end")
                    ],
                    "readings_table_s": f["readings_table_s"],
                    "write_s": f["write_s"],
                    "rss_at_start_mb": f["rss_at_start_mb"],
                    "peak_rss_so_far_mb": f["peak_rss_so_far_mb"],
                }
                for f in flushes
            ],
            "cpu_seconds": cpu,
            "cpu_cores_busy": cpu / seconds if seconds > 0 else 0.0,
            "cpu_us_per_row": 1e6 * cpu / rows if rows else 0.0,
            # from assignment to the end of the last flush, per second of the loop's time
            # (the idle wait, when the last flush came after it, is nearly idle CPU)
            **machine.get("last_flush", machine["assigned"]).since(
                machine["assigned"], rows, seconds
            ),
            "rss_before_run_mb": rss_before,
            "peak_rss_mb": harness.peak_rss_mb(),
            "ru_maxrss_mb": harness.ru_maxrss_mb(),
        }
    )


def _assigned_consumer(sink, topic: str):
    """A consumer with the sink's own configuration, assigned every partition from the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(sink.consumer_config())
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def _consume_all(consumer, expected: int, on_messages) -> float:
    """consume(5000) until `expected` records arrived; seconds from the first call to the last."""
    deadline = time.monotonic() + expected / 1000 + 120
    received = 0
    started = time.perf_counter()
    ended = started
    while received < expected:
        messages = consumer.consume(5000, timeout=0.2)
        if messages:
            good = [m for m in messages if m.error() is None]
            received += len(good)
            on_messages(good)
            ended = time.perf_counter()
        elif time.monotonic() > deadline:
            raise RuntimeError(f"only {received} of {expected} records within the deadline")
    return ended - started


def _worker_consume(spec: dict[str, Any]) -> None:
    """Consume alone (no per-message work beyond touching the value), then consume with the
    sink's own columnar buffering (a `TableBatch` per table, as the sink groups each consume
    result by topic; batches dropped every max_rows)."""
    from sensorstream.logs import configure
    from sinks.app import DeltaSink
    from sinks.batch import TableBatch
    from sinks.settings import SinkSettings

    configure("WARNING")
    sink = DeltaSink(SinkSettings(**spec["settings"]), _lake_connection(spec["lake"]))
    topic, expected = spec["topic"], spec["records"]
    size = [0]

    def touch(messages) -> None:
        for m in messages:
            size[0] += len(m.value())

    pids = spec.get("server_pids", {})
    consumer = _assigned_consumer(sink, topic)
    machine = CpuSnapshot.take(pids)
    cpu_started = harness.cpu_seconds()
    try:
        alone = _consume_all(consumer, expected, touch)
    finally:
        cpu_alone = harness.cpu_seconds() - cpu_started
        machine_alone = CpuSnapshot.take(pids).since(machine, expected, alone)
        consumer.close()
    limit = sink.settings.defaults.max_rows

    batches: dict[str, TableBatch] = {}

    def buffer(messages) -> None:
        by_topic: dict[str, list] = {}
        for topic, message in zip([m.topic() for m in messages], messages, strict=True):
            by_topic.setdefault(topic, []).append(message)
        for topic, group in by_topic.items():
            batch = batches.get(topic)
            if batch is None:
                batch = batches[topic] = TableBatch(sink.target(topic))
            batch.add(topic, group)
            if len(batch) >= limit:
                batch.take()

    consumer = _assigned_consumer(sink, topic)
    cpu_started = harness.cpu_seconds()
    with _GcTimer() as gc_timer:
        try:
            buffered = _consume_all(consumer, expected, buffer)
        finally:
            cpu_buffered = harness.cpu_seconds() - cpu_started
            consumer.close()
    harness.emit(
        {
            "consume": {
                **harness.rate(expected, alone),
                **_cpu(expected, cpu_alone),
                **machine_alone,
                "mean_value_bytes": size[0] / expected,
            },
            "consume_and_buffer": {
                **harness.rate(expected, buffered),
                **_cpu(expected, cpu_buffered),
                "gc_seconds": gc_timer.seconds,
            },
            "peak_rss_mb": harness.peak_rss_mb(),
        }
    )


def _worker_floor(spec: dict[str, Any]) -> None:
    """Consume the backlog (untimed); decode alone and `readings_table` (timed, per batch as
    the sink groups them); then ONE write_deltalake of the whole table (timed): the floor.

    The consumed records are kept as plain columns (lists of ints and bytes, which the cyclic
    GC does not track) and turned into `SinkMessage`s one batch at a time, so while a batch is
    decoded the process holds about what the sink holds, not the whole backlog as objects.
    """
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from schemas.avro_arrow import decode_bodies
    from schemas.registry import WIRE_HEADER_SIZE, read_wire_header
    from sensorstream.logs import configure
    from sinks.app import DeltaSink
    from sinks.batch import BufferedRecords
    from sinks.records import readings_table
    from sinks.settings import SinkSettings

    configure("WARNING")
    lake = spec["lake"]
    sink = DeltaSink(SinkSettings(**spec["settings"]), _lake_connection(lake))
    topic, expected, batch_rows = spec["topic"], spec["records"], spec["batch_rows"]
    partitions: list[int] = []
    offsets: list[int] = []
    stamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes] = []

    def keep(batch) -> None:
        for m in batch:
            partitions.append(m.partition())
            offsets.append(m.offset())
            stamps.append(m.timestamp()[1])
            keys.append(m.key())
            values.append(m.value())

    consumer = _assigned_consumer(sink, topic)
    try:
        _consume_all(consumer, expected, keep)
    finally:
        consumer.close()
    ranges = [(i, min(i + batch_rows, expected)) for i in range(0, expected, batch_rows)]
    headers = {v[:WIRE_HEADER_SIZE] for v in values}
    if len(headers) != 1:
        raise RuntimeError(f"expected one writer schema, found headers {sorted(headers)}")
    header = headers.pop()
    schema = sink.decoder.writer_schema(read_wire_header(header))

    passes, cpu_passes = [], []
    for _ in range(DECODE_PASSES):
        seconds = cpu = 0.0
        for lo, hi in ranges:
            bodies = values[lo:hi]  # whole values, as the sink decodes them
            started, cpu_started = time.perf_counter(), harness.cpu_seconds()
            decode_bodies(schema, bodies, prefix=header)
            seconds += time.perf_counter() - started
            cpu += harness.cpu_seconds() - cpu_started
            del bodies
        passes.append(seconds)
        cpu_passes.append(cpu)
    best = passes.index(min(passes))
    decode = {
        **harness.rate(expected, passes[best]),
        **_cpu(expected, cpu_passes[best]),
        "passes_seconds": passes,
        "groups": len(ranges),
    }

    target = sink.target(topic)
    now = datetime.now(UTC)
    seconds = cpu = 0.0
    tables = []
    with _GcTimer() as gc_timer:
        for lo, hi in ranges:
            group = BufferedRecords(
                topics=[topic] * (hi - lo),
                partitions=partitions[lo:hi],
                offsets=offsets[lo:hi],
                values=values[lo:hi],
                keys=keys[lo:hi],
                timestamps=stamps[lo:hi],
                headers=[None] * (hi - lo),
            )
            started, cpu_started = time.perf_counter(), harness.cpu_seconds()
            gc_timer.reset()
            table, dead = readings_table(target, group, sink.decoder, now)
            seconds += time.perf_counter() - started
            cpu += harness.cpu_seconds() - cpu_started
            gc_timer.pause()
            if dead:
                raise RuntimeError(f"{len(dead)} dead rows while building the floor's table")
            tables.append(table)
            del group
    build = {
        **harness.rate(expected, seconds),
        **_cpu(expected, cpu),
        "gc_seconds": gc_timer.seconds,
        "groups": len(ranges),
    }
    for column in (partitions, offsets, stamps, keys, values):
        column.clear()
    table = pa.concat_tables(tables)
    del tables

    options = sink.storage_options
    uri = f"{lake.rstrip('/')}/floor"
    rss_before_write = harness.peak_rss_mb()
    pids = spec.get("server_pids", {})
    machine = CpuSnapshot.take(pids)
    started, cpu_started = time.perf_counter(), harness.cpu_seconds()
    write_deltalake(uri, table, mode="append", partition_by=["event_date"], storage_options=options)
    seconds = time.perf_counter() - started
    cpu = harness.cpu_seconds() - cpu_started
    machine_use = CpuSnapshot.take(pids).since(machine, table.num_rows, seconds)
    written = DeltaTable(uri, storage_options=options)
    harness.emit(
        {
            "decode": decode,
            "readings_table": build,
            "floor": {
                **harness.rate(table.num_rows, seconds),
                **_cpu(table.num_rows, cpu),
                "uri": uri,
                "columns": table.num_columns,
                "arrow_bytes": table.nbytes,
                "files": len(written.file_uris()),
                "rows_in_table": written.count(),
                **machine_use,
            },
            "rss_before_write_mb": rss_before_write,
            "peak_rss_mb": harness.peak_rss_mb(),
        }
    )


def _worker_imports() -> None:
    """RSS of the interpreter with the sink's imports and nothing else: the fixed part."""
    import sinks.app  # noqa: F401

    harness.emit({"peak_rss_mb": harness.peak_rss_mb()})


# -- checking a table ------------------------------------------------------------------------


def check_table(uri: str, expected: int) -> dict[str, Any]:
    """Rows, unique (partition, offset) pairs, commits, data files and their sizes."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from sensorstream.settings import ConnectionSettings, load_settings

    options = load_settings(ConnectionSettings).storage_options() or None
    table = DeltaTable(uri, storage_options=options)
    data = table.to_pyarrow_table(columns=["_kafka_partition", "_kafka_offset", "event_date"])
    pairs = data.group_by(["_kafka_partition", "_kafka_offset"]).aggregate([]).num_rows
    sizes = table.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    dates = pc.unique(data.column("event_date")).to_pylist()
    return {
        "uri": uri,
        "rows": data.num_rows,
        "unique_partition_offset": pairs,
        "exact": data.num_rows == expected and pairs == expected,
        "version": table.version(),
        "commits": len(table.history()),
        "files": len(table.file_uris()),
        "file_mb_mean": sum(sizes) / len(sizes) / 2**20 if sizes else 0.0,
        "bytes": sum(sizes),
        "event_dates": sorted(str(d) for d in dates),
    }


# -- orchestration --------------------------------------------------------------------------


def _run_worker(kind: str, spec: dict[str, Any], timeout: float, *extra: str) -> dict[str, Any]:
    return harness.run_worker(
        "benchmarks.sink", kind, "--spec", json.dumps(spec), *extra, timeout=timeout
    )


def cleanup(run_id: str, groups: list[str], keep: bool) -> None:
    from confluent_kafka.admin import AdminClient

    if keep:
        _log(f"kept topics bench.{run_id}.*, groups and s3://{BUCKET}/{run_id}/ (--keep)")
        return
    _log("cleanup: this run's topics, registry subjects, consumer groups and S3 objects")
    prefix = f"bench.{run_id}."
    admin = AdminClient(harness.connection().kafka_client_config())
    with contextlib.suppress(Exception):
        topics = admin.list_topics(timeout=30).topics
        harness.delete_topics(sorted(t for t in topics if t.startswith(prefix)))  # + their subjects
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)
    try:
        _s3_filesystem().delete_dir(f"{BUCKET}/{run_id}")
    except Exception as exc:  # leave a note rather than hide the figures
        _log(f"cleanup: deleting s3://{BUCKET}/{run_id}/ failed: {exc!r}")


def register_schema(topic: str) -> tuple[dict, int]:
    from schemas.registry import SchemaRegistry
    from schemas.value_schema import curated_schema

    schema = curated_schema()
    registry = SchemaRegistry(harness.connection().schema_registry_config())
    return schema, registry.register_value_schema(topic, schema)


def _timeout(records: int) -> float:
    return records / 2000 + 300


def _sink_run(
    run_id: str, variant: str, expected: int, settings: dict, *extra: str, gc_off: bool = False
) -> dict:
    lake = lake_uri(run_id, variant)
    _log(f"sink [{variant}]: {expected:,} records, settings {_effective(settings)}")
    spec = {"settings": settings, "lake": lake, "gc_off": gc_off}
    spec["server_pids"] = stack_server_pids()
    result = _run_worker("sink", spec, _timeout(expected), *extra)
    result["settings"] = _effective(settings)
    result["table"] = check_table(f"{lake}/raw", expected)
    if not result["table"]["exact"] or result["dead_letters"]:
        raise RuntimeError(f"sink [{variant}] table check failed: {result['table']}")
    _log(
        f"sink [{variant}]: {result['rows_per_s']:,.0f} rows/s, peak RSS "
        f"{result['peak_rss_mb']:.0f} MB, {result['table']['commits']} commits, "
        f"{result['table']['files']} files"
    )
    return result


def _floor_run(run_id: str, round_no: int, records: int, batch_rows: int) -> dict:
    variant = f"floor{round_no}"
    names = _names(run_id)
    spec = {
        "settings": sink_settings(run_id, variant, ""),
        "lake": lake_uri(run_id, variant),
        "topic": names["topic"],
        "records": records,
        "batch_rows": batch_rows,
        "server_pids": stack_server_pids(),
    }
    _log(f"floor round {round_no}: decode and one write_deltalake of {records:,} rows")
    result = _run_worker("floor", spec, _timeout(records) + records / 1000)
    if result["floor"]["rows_in_table"] != records:
        raise RuntimeError(f"floor round {round_no} wrote {result['floor']}")
    _log(
        f"floor round {round_no}: write {result['floor']['rows_per_s']:,.0f} rows/s, "
        f"decode {result['decode']['rows_per_s']:,.0f} rows/s"
    )
    return result


def limit(*rates: float) -> float:
    """Rows/s of steps done one after the other for each row: 1 / sum(1/rate)."""
    return 1.0 / sum(1.0 / r for r in rates)


def _tuned(run_id: str, args: argparse.Namespace, variant: str = "tuned") -> dict[str, Any]:
    return sink_settings(
        run_id,
        variant,
        "",
        max_rows=args.max_rows,
        max_bytes=args.max_bytes,
        max_latency_s=60.0,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = harness.new_run_id()
    info = harness.machine_info("deltalake", "polars", "pyarrow")
    endpoints = use_stack_environment()
    ensure_bucket()
    results: dict[str, Any] = {
        "benchmark": "sink",
        "run_id": run_id,
        "machine": info,
        "endpoints": endpoints,
        "params": {
            "records": args.records,
            "memory_records": args.memory_records,
            "what_if_gc_off": not args.no_what_if,
            "bucket": BUCKET,
            "input": {
                "seed": SEED,
                "sensors": SENSORS,
                "event_time_start": T0.isoformat(),
                "event_time_span_days": SPAN / timedelta(days=1),
                "partitions": PARTITIONS,
                "producer": "transactions of 5000, lz4, idempotent, acks=all, key=sensor_id",
            },
        },
    }
    groups: list[str] = []
    started = time.perf_counter()
    what_if = None
    memory = None
    try:
        backlog, schema_id, messages = build_backlog(run_id, args.records)
        memory_backlog = None
        if args.memory_records:
            mem_topic = _names(run_id, "mem")["topic"]
            if register_schema(mem_topic)[1] != schema_id:
                raise RuntimeError("the registry gave another id for the same schema")
            _log(f"producing the memory backlog: {args.memory_records:,} records")
            memory_backlog = produce_backlog(mem_topic, messages, args.memory_records)
            memory_backlog["distinct_records"] = len(messages)
        del messages
        results["backlog"] = backlog
        results["memory_backlog"] = memory_backlog

        imports = _run_worker("imports", {}, 120)
        floor1 = _floor_run(run_id, 1, args.records, args.max_rows)
        _log("consume alone")
        consume = _run_worker(
            "consume",
            {
                "settings": _tuned(run_id, args, "consume"),
                "lake": lake_uri(run_id, "consume"),
                "topic": backlog["topic"],
                "records": args.records,
                "server_pids": stack_server_pids(),
            },
            _timeout(args.records) * 2,
        )
        tuned_settings = _tuned(run_id, args)
        groups.append(tuned_settings["consumer_group"])
        tuned = _sink_run(run_id, "tuned", args.records, tuned_settings)
        default_settings = sink_settings(run_id, "default", "")
        groups.append(default_settings["consumer_group"])
        default = _sink_run(run_id, "default", args.records, default_settings)
        if not args.no_what_if:
            gc_settings = _tuned(run_id, args, "tuned-gc-off")
            groups.append(gc_settings["consumer_group"])
            what_if = _sink_run(run_id, "tuned-gc-off", args.records, gc_settings, gc_off=True)
        floor2 = _floor_run(run_id, 2, args.records, args.max_rows)

        if args.memory_records:
            memory = {}
            default_limit = _effective(sink_settings(run_id, "x", "mem"))["max_buffered_rows"]
            for factor in (1, 2):
                variant = f"mem{factor}x"
                settings = sink_settings(
                    run_id,
                    variant,
                    "mem",
                    max_rows=NO_LIMIT_ROWS,
                    max_bytes=NO_LIMIT_BYTES,
                    max_latency_s=3600.0,
                    # 1x: max_buffered_rows left at the product default
                    max_buffered_rows=None if factor == 1 else default_limit * factor,
                )
                groups.append(settings["consumer_group"])
                memory[f"limit_{factor}x"] = _sink_run(
                    run_id, variant, args.memory_records, settings
                )
    finally:
        cleanup(run_id, groups, args.keep)

    floors = [floor1, floor2]

    def best(step: str) -> dict[str, Any]:
        return max((f[step] for f in floors), key=lambda m: m["rows_per_s"])

    floor, decode, build = best("floor"), best("decode"), best("readings_table")
    alone = consume["consume"]
    serial = limit(alone["rows_per_s"], build["rows_per_s"], floor["rows_per_s"])
    serial_cpu = alone["cpu_us_per_row"] + build["cpu_us_per_row"] + floor["cpu_us_per_row"]
    ratio = tuned["rows_per_s"] / floor["rows_per_s"]
    # Every core busy all the time at the run's CPU per row (its own and the servers'): the
    # most that overlapping work could give without making any of it cheaper.
    cores = info["cpus_usable"] or info["cpu_count"]
    ceiling = 1e6 * cores / tuned["machine_cpu_us_per_row"]
    results.update(
        {
            "imports_only_rss_mb": imports["peak_rss_mb"],
            "sink": {"tuned": tuned, "default": default, "what_if_gc_off": what_if},
            "baseline": {
                "floor_rounds": floors,
                "floor": floor,
                "decode": decode,
                "readings_table": build,
                "consume": consume,
                "serial_limit_rows_per_s": serial,
                "serial_cpu_us_per_row": serial_cpu,
                "note": "floor = one write_deltalake of the decoded table; each step the "
                "faster of the rounds before and after the sink runs; serial limit = "
                "1/(1/consume + 1/readings_table + 1/floor)",
            },
            "memory": memory,
            "ratios": {
                "tuned_vs_floor": ratio,
                "default_vs_floor": default["rows_per_s"] / floor["rows_per_s"],
                "tuned_vs_serial_limit": tuned["rows_per_s"] / serial,
                "default_vs_tuned": default["rows_per_s"] / tuned["rows_per_s"],
                "serial_cpu_vs_tuned_cpu": serial_cpu / tuned["cpu_us_per_row"],
                "cpu_ceiling_rows_per_s": ceiling,
                "cpu_ceiling_vs_floor": ceiling / floor["rows_per_s"],
                "tuned_vs_cpu_ceiling": tuned["rows_per_s"] / ceiling,
                "gc_off_vs_tuned": what_if["rows_per_s"] / tuned["rows_per_s"] if what_if else None,
                "gc_off_cpu_vs_tuned_cpu": what_if["cpu_us_per_row"] / tuned["cpu_us_per_row"]
                if what_if
                else None,
            },
            "targets": {
                "ratio_vs_floor": {
                    "target": f">= {TARGETS['ratio_vs_floor']}",
                    "value": ratio,
                    "met": harness.met(ratio, TARGETS["ratio_vs_floor"], True),
                },
                "rows_per_s": {
                    "target": f">= {TARGETS['rows_per_s']}",
                    "value": tuned["rows_per_s"],
                    "met": harness.met(tuned["rows_per_s"], TARGETS["rows_per_s"], True),
                },
            },
            "wall_seconds": time.perf_counter() - started,
        }
    )
    if memory:
        one, two = memory["limit_1x"], memory["limit_2x"]
        limit_rows = one["settings"]["max_buffered_rows"]
        fixed = results["imports_only_rss_mb"]
        per_row = (two["peak_rss_mb"] - one["peak_rss_mb"]) * 2**20 / limit_rows
        memory["summary"] = {
            "backlog": args.memory_records,
            "limit_rows": limit_rows,
            "peak_rss_mb_1x": one["peak_rss_mb"],
            "peak_rss_mb_2x": two["peak_rss_mb"],
            "rss_ratio_2x_vs_1x": two["peak_rss_mb"] / one["peak_rss_mb"],
            "above_imports_ratio_2x_vs_1x": (two["peak_rss_mb"] - fixed)
            / (one["peak_rss_mb"] - fixed),
            "peak_bytes_per_buffered_row": per_row,
            "unbounded_estimate_mb": one["peak_rss_mb"]
            + per_row * (args.memory_records - limit_rows) / 2**20,
            "tuned_run": {"backlog": args.records, "max_rows": args.max_rows},
            "tuned_run_peak_rss_mb": tuned["peak_rss_mb"],
            "default_run_peak_rss_mb": default["peak_rss_mb"],
        }
    return results


def table(results: dict[str, Any]) -> str:
    sink, base = results["sink"], results["baseline"]
    tuned, default, what_if = sink["tuned"], sink["default"], sink["what_if_gc_off"]
    targets, ratios = results["targets"], results["ratios"]
    consume = base["consume"]

    def mark(name: str) -> str:
        met = targets[name]["met"]
        return "n/a" if met is None else ("met" if met else "MISSED")

    def row(label: str, rate: float, cpu: float | None = None, note: str = "") -> str:
        cpu_text = f"{cpu:>7.1f}" if cpu is not None else " " * 7
        return f"{label:<44}{rate:>10,.0f}  {cpu_text}   {note}".rstrip()

    def sink_note(r: dict[str, Any]) -> str:
        t = r["table"]
        return (
            f"{t['commits']} commits, {t['files']} files, RSS {r['peak_rss_mb']:,.0f} MB, "
            f"GC {r['gc']['seconds']:.1f}s, {r['cpu_cores_busy']:.2f} cores"
        )

    lines = [
        f"sink benchmark, {results['params']['records']:,} records, run {results['run_id']}",
        f"{'measurement':<44}{'rows/s':>10}  {'CPU us/row':>7}  note",
        row(
            f"sink, max_rows {tuned['settings']['max_rows']:,} (loop)",
            tuned["rows_per_s"],
            tuned["cpu_us_per_row"],
            f">= {TARGETS['rows_per_s']:,} {mark('rows_per_s')}; {sink_note(tuned)}",
        ),
        row("  same, whole run incl. start-up", tuned["rows_per_s_whole_run"]),
        row(
            "sink, default settings (loop)",
            default["rows_per_s"],
            default["cpu_us_per_row"],
            sink_note(default),
        ),
    ]
    if what_if:
        lines.append(
            row(
                "what-if: tuned with the cyclic GC off",
                what_if["rows_per_s"],
                what_if["cpu_us_per_row"],
                f"x{ratios['gc_off_vs_tuned']:.2f} rows/s, "
                f"x{ratios['gc_off_cpu_vs_tuned_cpu']:.2f} CPU; RSS "
                f"{what_if['peak_rss_mb']:,.0f} MB",
            )
        )
    lines += [
        row(
            "floor: one write_deltalake (best round)",
            base["floor"]["rows_per_s"],
            base["floor"]["cpu_us_per_row"],
            f"ratio sink/floor {ratios['tuned_vs_floor']:.2f} >= {TARGETS['ratio_vs_floor']} "
            f"{mark('ratio_vs_floor')}; default {ratios['default_vs_floor']:.2f}",
        ),
        row(
            "  decode alone (decode_bodies)",
            base["decode"]["rows_per_s"],
            base["decode"]["cpu_us_per_row"],
        ),
        row(
            "  readings_table (decode + columns)",
            base["readings_table"]["rows_per_s"],
            base["readings_table"]["cpu_us_per_row"],
            f"GC {base['readings_table']['gc_seconds']:.1f}s",
        ),
        row(
            "  consume alone (consume(5000))",
            consume["consume"]["rows_per_s"],
            consume["consume"]["cpu_us_per_row"],
        ),
        row(
            "  consume + the sink's TableBatch",
            consume["consume_and_buffer"]["rows_per_s"],
            consume["consume_and_buffer"]["cpu_us_per_row"],
            f"GC {consume['consume_and_buffer']['gc_seconds']:.1f}s",
        ),
        row(
            "  serial limit (consume + table + floor)",
            base["serial_limit_rows_per_s"],
            base["serial_cpu_us_per_row"],
            f"sink / limit {ratios['tuned_vs_serial_limit']:.2f}",
        ),
    ]

    def servers(r: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["servers_cpu_us_per_row"].items()))

    machine_runs = (
        ("  machine during the sink run", tuned),
        ("  machine during the floor's write", base["floor"]),
        ("  machine during consume alone", consume["consume"]),
    )
    lines += [
        row(
            label,
            run["rows_per_s"],
            run["machine_cpu_us_per_row"],
            f"{run['machine_cores_busy']:.2f} cores busy; servers us/row: {servers(run)}",
        )
        for label, run in machine_runs
    ]
    lines += [
        row(
            "  CPU ceiling (all cores, sink run's CPU/row)",
            ratios["cpu_ceiling_rows_per_s"],
            tuned["machine_cpu_us_per_row"],
            f"ceiling / floor {ratios['cpu_ceiling_vs_floor']:.2f}; "
            f"sink / ceiling {ratios['tuned_vs_cpu_ceiling']:.2f}",
        ),
    ]
    b = tuned["breakdown_s"]
    lines.append(
        "  sink loop, s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in b.items())
        + f" (loop {tuned['seconds']:.1f})"
    )
    memory = results.get("memory")
    if memory:
        m = memory["summary"]
        lines += [
            f"memory, backlog {m['backlog']:,}, only max_buffered_rows binding: peak RSS "
            f"{m['peak_rss_mb_1x']:,.0f} MB at the default {m['limit_rows']:,}, "
            f"{m['peak_rss_mb_2x']:,.0f} MB at {2 * m['limit_rows']:,} "
            f"(x{m['rss_ratio_2x_vs_1x']:.2f}; {m['peak_bytes_per_buffered_row']:,.0f} B "
            "per buffered row)",
            f"  whole backlog at once would be ~{m['unbounded_estimate_mb']:,.0f} MB; flushes "
            f"{memory['limit_1x']['flush_rows']}",
        ]
    lines.append(
        f"RSS after imports only {results['imports_only_rss_mb']:,.0f} MB; "
        f"wall time {results['wall_seconds']:.0f} s"
    )
    return "\n".join(lines)


# (label, file suffix, function): cumulative time per row, in call order of the sink's loop
_PROFILED = (
    ("Consumer.consume (librdkafka, C)", "~", "<method 'consume' of 'cimpl.Consumer' objects>"),
    ("DeltaSink._buffer (per consume result)", "sinks/app.py", "_buffer"),
    ("  TableBatch.add (columns)", "sinks/batch.py", "add"),
    ("readings_table", "sinks/records.py", "readings_table"),
    ("  _by_header (schema id groups)", "sinks/records.py", "_by_header"),
    ("  KafkaColumns.of", "sinks/records.py", "of"),
    ("  decode_bodies_checked", "schemas/avro_arrow.py", "decode_bodies_checked"),
    ("    polars read_avro", "~", "<built-in method read_avro>"),
    ("  _metadata (Kafka columns)", "sinks/records.py", "_metadata"),
    ("DeltaTableWriter.misfits", "sinks/delta_writer.py", "misfits"),
    ("DeltaTableWriter.write", "sinks/delta_writer.py", "write"),
    ("  write_deltalake", "deltalake/writer/writer.py", "write_deltalake"),
    ("  _unwritten (txn filter)", "sinks/delta_writer.py", "_unwritten"),
    ("_commit_offsets", "sinks/app.py", "_commit_offsets"),
)


def _source_line(file: str, line: int) -> str:
    with contextlib.suppress(OSError, IndexError):
        return Path(file).read_text(encoding="utf-8").splitlines()[line - 1]
    return ""


def summarize_profile(path: Path, rows: int) -> str:
    """Cumulative time per row of the sink's steps (profiled, so Python calls are inflated)."""
    stats = pstats.Stats(str(path)).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    lines = [f"per row, cumulative, under cProfile ({rows:,} rows):"]
    for label, suffix, spec in _PROFILED:
        name, _, marker = spec.partition(":")  # "<listcomp>:text": the one on a line with text
        cum = calls = 0
        for (file, line, func), (_cc, nc, _tt, ct, _callers) in stats.items():
            if func != name or not (file == suffix if suffix == "~" else file.endswith(suffix)):
                continue
            if marker and marker not in _source_line(file, line):
                continue
            cum += ct
            calls += nc
        lines.append(f"  {label:<44}{1e6 * cum / rows:>7.2f} us  ({calls:,} calls)")
    return "\n".join(lines)


def profile(args: argparse.Namespace) -> None:
    run_id = harness.new_run_id()
    use_stack_environment()
    ensure_bucket()
    out = harness.profile_path(args.out)
    settings = _tuned(run_id, args, "profile")
    # cProfile sees one thread: flush on the loop's thread so decode and write are profiled
    settings["background_flush"] = False
    try:
        topic = _names(run_id)["topic"]
        schema, schema_id = register_schema(topic)
        _log(f"generating and producing {args.records:,} readings")
        produce_backlog(topic, generate_messages(args.records, schema, schema_id), args.records)
        _log(f"profiling the sink over {args.records:,} records under cProfile")
        result = _sink_run(run_id, "profile", args.records, settings, "--profile-out", str(out))
    finally:
        cleanup(run_id, [settings["consumer_group"]], args.keep)
    summary = summarize_profile(out, result["rows"])
    b = result["breakdown_s"]
    head = (
        f"sink under cProfile: {result['rows']:,} rows, {result['rows_per_s']:,.0f} rows/s "
        f"profiled, {result['flushes']} flushes of {result['flush_rows']}\n"
        "loop breakdown (s): " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()) + "\n"
    )
    harness.write_profile_report(out, head + summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sink", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=None, help=f"default {DEFAULT_RECORDS:,}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--max-rows", type=int, default=250_000, help="rows per flush of the throughput run"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=1 << 30, help="bytes per flush of the throughput run"
    )
    parser.add_argument(
        "--memory-records",
        type=int,
        default=None,
        help=f"backlog of the memory runs, default {DEFAULT_MEMORY_RECORDS:,} "
        f"({QUICK_MEMORY_RECORDS:,} when --records is under {DEFAULT_RECORDS:,}); 0 skips them",
    )
    parser.add_argument(
        "--no-what-if", action="store_true", help="skip the run with the cyclic GC off"
    )
    parser.add_argument("--keep", action="store_true", help="leave topics, groups and tables")
    parser.add_argument("--profile", action="store_true", help="cProfile the sink only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()  # before anything imports the registry client
    workers = {
        "sink": lambda: _worker_sink(args.spec, args.profile_out),
        "consume": lambda: _worker_consume(args.spec),
        "floor": lambda: _worker_floor(args.spec),
        "imports": _worker_imports,
    }
    if args.worker:
        workers[args.worker]()
        return 0
    if args.profile:
        args.records = args.records or PROFILE_RECORDS
        profile(args)
        return 0
    args.records = args.records or DEFAULT_RECORDS
    if args.memory_records is None:
        quick = args.records < DEFAULT_RECORDS
        args.memory_records = QUICK_MEMORY_RECORDS if quick else DEFAULT_MEMORY_RECORDS
    if args.records < 1 or args.max_rows < 1 or args.memory_records < 0:
        parser.error("--records and --max-rows must be positive, --memory-records >= 0")
    results = run(args)
    return harness.finish(args.out, results, table(results))


if __name__ == "__main__":
    sys.exit(main())
