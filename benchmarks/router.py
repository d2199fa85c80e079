"""Router benchmark (issue 4): the quixstreams router against a bare confluent-kafka loop.

    uv run python -m benchmarks.router [--records 1000000] [--out benchmarks/results/router.json]

The machine is shared and noisy, so the router is judged as a ratio to a baseline measured in
the same run, on the same input:

- Input: `--records` real sensor readings, produced once per run by the real producer
  (`EdgeTailer(once=True)`) into `bench.<run>.readings` (3 partitions). The producer
  benchmark's cached simulator database is split into three id ranges, each tailed as its own
  node with its own region, so the records carry three regions' provenance.
- Router: `RouterApp(...).run()` with `once=True` in a fresh subprocess (its peak RSS, VmHWM,
  is its own), on a copy of `stream_apps/routes.yaml` whose topics are renamed per run and
  variant, with its own consumer group and control topic; exactly-once, then at-least-once.
- Baseline: the same per-message work in a bare confluent-kafka loop, also in a subprocess:
  the same consumer settings (the ones quixstreams sets: range assignment, no auto commit,
  `fetch.queue.backoff.ms` 100, read_committed), one `poll()` per message, the product's own
  `MessageRouter.route` (Avro decode once with the registry-cached `AvroDecoder`, the routing
  engine, one `OutputEncoders` encode per re-encoding output - the same plan-based Avro
  writer/reader, and the same forwarding of an unchanged schematized body, as the router -
  raw/regional bytes passed through, headers and dead letters exactly as the router makes
  them), and a produce per output with the router's producer settings (murmur2, idempotence,
  linger 5 ms, lz4, delivery reports for failures only, the input key and timestamp). The
  router produces the same way: one `produce()` per output on quixstreams' checkpoint
  producer, from one callback per input (no per-output rows). Exactly-once: a transactional
  producer, flush + `send_offsets_to_transaction` + commit every `commit_interval_s`;
  at-least-once: flush + synchronous consumer commit, same interval. The
  ratio router/baseline is therefore what quixstreams adds around the same work.
- Timing, the same for all four: from the start of the first `route()` call to the end of
  the last `route()` call, plus the duration of the commit that covers the last record. It
  leaves out start-up (connecting, the group join, publishing the routing version) and the
  time after the backlog (the baseline's `--idle-timeout` and the up to 1 s the router's
  poll waits before that last commit), which are not throughput. Time spent inside `route()` is
  summed as well, so the time outside it (Kafka clients, and for the router quixstreams) is
  reported per record, and so is CPU time (user + system, all threads) per record, which
  other load on the machine disturbs much less than wall time.
- route() alone (`--components`, 20k records fetched from the input): `MessageRouter.route`
  and its parts (decode, routing engine, re-encodes) in tight loops without Kafka, thread CPU
  time, the fastest of 5 interleaved passes: the ceiling of the per-record work itself.

The four runs go in the order baseline, router, router, baseline (exactly-once first, then
at-least-once) so a drift in machine load falls on both sides; `--rounds N` repeats them and
keeps the fastest run of each. `--profile` runs only the exactly-once router under cProfile
(100k records unless --records is given) and writes where the time goes next to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.producer import ensure_database

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results" / "router.json"
DEFAULT_RECORDS = 1_000_000
PROFILE_RECORDS = 100_000
ROUTES = REPO / "stream_apps" / "routes.yaml"
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
GUARANTEES = {"eos": "exactly-once", "alo": "at-least-once"}
# Per round: a drift in load during the round falls on both sides of each ratio.
ORDER = (("baseline", "eos"), ("router", "eos"), ("router", "alo"), ("baseline", "alo"))

TARGETS = {
    "ratio_vs_baseline": 0.6,  # router / bare loop, same guarantee, at least
    "records_per_s": 8_000,  # router input records/s per process, at least
}


_log = harness.logger("router-bench")


def _input_topic(run_id: str) -> str:
    return f"bench.{run_id}.readings"


# -- the routing file: the default routes, with topics of this run ----------------------------


def write_routes(run_id: str, variant: str, directory: Path) -> Path:
    """routes.yaml with input `bench.<run>.readings` and every output and the dead-letter
    topic renamed `bench.<run>.<variant>.<name>` (regional keeps its `{_region}` template)."""
    import yaml

    document = yaml.safe_load(ROUTES.read_text(encoding="utf-8"))
    prefix = f"bench.{run_id}.{variant}."

    def rename(topic: str) -> str:
        if not topic.startswith("sensors."):
            raise RuntimeError(f"{ROUTES}: unexpected topic {topic!r}")
        return prefix + topic.removeprefix("sensors.")

    document["input"] = _input_topic(run_id)
    document["dead_letter_topic"] = rename(document["dead_letter_topic"])
    for route in document["routes"]:
        route["topic"] = rename(route["topic"])
    path = directory / f"routes-{variant}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# -- workers (each in a fresh subprocess) -----------------------------------------------------


class _Probe:
    """Per-message marks: first/last route() call, time inside route(), the last commit."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.cpu_first = 0.0
        self.last = 0.0
        self.records = 0
        self.outputs = 0
        self.route_seconds = 0.0
        self.commits = 0
        self.commit_end = 0.0
        self.commit_seconds = 0.0  # of the last commit
        self.commit_records = 0  # records covered by the commits so far
        self.cpu_commit = 0.0

    def timed(self, route):
        clock = time.perf_counter

        def timed_route(value, source):
            started = clock()
            out = route(value, source)
            ended = clock()
            if self.first is None:
                self.first, self.cpu_first = started, harness.cpu_seconds()
            self.last = ended
            self.records += 1
            self.outputs += len(out)
            self.route_seconds += ended - started
            return out

        return timed_route

    def committed(self, started: float) -> None:
        self.commit_end = time.perf_counter()
        self.commit_seconds = self.commit_end - started
        self.commits += 1
        self.commit_records = self.records
        self.cpu_commit = harness.cpu_seconds()

    def result(self) -> dict[str, Any]:
        if self.first is None:
            return {"records": 0}
        busy = self.last - self.first + self.commit_seconds
        to_commit = self.commit_end - self.first
        cpu = self.cpu_commit - self.cpu_first
        n = self.records
        return {
            "records": n,
            "outputs": self.outputs,
            "outputs_per_record": self.outputs / n,
            "records_committed": self.commit_records,
            "commits": self.commits,
            "seconds": busy,
            "records_per_s": n / busy if busy > 0 else 0.0,
            "seconds_to_last_commit_end": to_commit,
            "last_commit_seconds": self.commit_seconds,
            "us_per_record": 1e6 * busy / n,
            "route_us_per_record": 1e6 * self.route_seconds / n,
            "outside_route_us_per_record": 1e6 * (busy - self.route_seconds) / n,
            "cpu_seconds": cpu,
            "cpu_cores_busy": cpu / to_commit if to_commit > 0 else 0.0,
            "cpu_us_per_record": 1e6 * cpu / n,
        }


def _worker_router(spec: dict[str, Any], profile_out: Path | None) -> None:
    from sensorstream.logs import configure
    from stream_apps.app import RouterApp
    from stream_apps.dispatch import MessageRouter
    from stream_apps.metrics import RouterMetrics
    from stream_apps.settings import RouterSettings

    probe = _Probe()

    class TimedRouter(MessageRouter):
        """The product's router, its route() timed per message."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timed_route = probe.timed(super().route)

        def route(self, value, source):
            return self.timed_route(value, source)

    class CommitTiming(RouterMetrics):
        """The router's own checkpoint timing: called after each commit of a checkpoint that
        held offsets, with how long the commit took."""

        def checkpoint_committed(self, commit_s: float) -> None:
            probe.committed(time.perf_counter() - commit_s)
            super().checkpoint_committed(commit_s)

    configure("WARNING")
    settings = RouterSettings(
        routes=Path(spec["routes"]),
        consumer_group=spec["group"],
        control_topic=spec["control_topic"],
        processing_guarantee=GUARANTEES[spec["guarantee"]],
        commit_interval_s=spec["commit_interval_s"],
        once=True,
    )
    router_app = RouterApp(settings, harness.connection(), CommitTiming(), TimedRouter)
    started = time.perf_counter()
    router_app.build()
    build_seconds = time.perf_counter() - started
    rss_before = harness.peak_rss_mb()
    profiler = cProfile.Profile() if profile_out else None
    if profiler:
        profiler.enable()
    result = router_app.run()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_out)
    harness.emit(
        {
            **probe.result(),
            "routed": result.routed,
            "dead_letters": result.dead_letters,
            "build_seconds": build_seconds,
            "run_seconds": result.seconds,
            "rss_after_build_mb": rss_before,
            "peak_rss_mb": harness.peak_rss_mb(),
            "ru_maxrss_mb": harness.ru_maxrss_mb(),
        }
    )


def _worker_baseline(spec: dict[str, Any]) -> None:
    from confluent_kafka import Consumer, Producer

    from schemas.avro_codec import AvroDecoder
    from schemas.registry import SchemaRegistry
    from sensorstream.logs import configure
    from sensorstream.topics import READINGS, TopicSpec, ensure_topics
    from stream_apps.dispatch import ActiveRouting, MessageRouter
    from stream_apps.outputs import OutputEncoders
    from stream_apps.routing.config import parse_routing
    from stream_apps.versions import known_fields

    configure("WARNING")
    started = time.perf_counter()
    connection = harness.connection()
    kafka_config = connection.kafka_client_config()
    registry = SchemaRegistry(connection.schema_registry_config())
    path = Path(spec["routes"])
    routing = parse_routing(
        path.read_text(encoding="utf-8"), str(path), known_fields(registry, READINGS)
    )
    config = routing.config
    decoder = AvroDecoder(registry)
    router = MessageRouter(
        ActiveRouting(1, routing),
        decoder,
        OutputEncoders(registry, decoder),
        config.dead_letter_topic,
    )
    exactly_once = spec["guarantee"] == "eos"
    partitions = spec["output_partitions"]
    ensure_topics(kafka_config, [TopicSpec(config.dead_letter_topic, 1)])
    known = {config.dead_letter_topic}
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": spec["group"],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "range",
            "fetch.queue.backoff.ms": 100,
            "isolation.level": "read_committed",
        }
    )
    failures: list[str] = []
    producer_config = {
        **kafka_config,
        "partitioner": "murmur2",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        # A correct at-least-once loop must notice failed deliveries before committing
        # offsets; reporting failures only keeps that check off the per-message path.
        "delivery.report.only.error": True,
        "on_delivery": lambda err, msg: failures.append(str(err)),
    }
    if exactly_once:
        producer_config["transactional.id"] = f"{spec['group']}-tx"
    producer = Producer(producer_config)
    if exactly_once:
        producer.init_transactions(30)
        producer.begin_transaction()
    consumer.subscribe([config.input])
    build_seconds = time.perf_counter() - started

    def commit() -> None:
        begun = time.perf_counter()
        producer.flush()
        if failures:
            raise RuntimeError(f"{len(failures)} deliveries failed, first: {failures[0]}")
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if exactly_once:
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
            producer.begin_transaction()
        else:
            consumer.commit(offsets=offsets, asynchronous=False)
        probe.committed(begun)

    probe = _Probe()
    route = probe.timed(router.route)
    produce, poll_producer, poll = producer.produce, producer.poll, consumer.poll
    clock, interval = time.monotonic, spec["commit_interval_s"]
    expected, idle_timeout = spec["expected"], spec["idle_timeout_s"]
    rss_before = harness.peak_rss_mb()
    run_started = clock()
    checkpoint_started = clock()
    last_message = clock()
    count = 0
    while count < expected:
        message = poll(1.0)
        if message is None:
            waited = clock() - last_message
            if (count and waited > idle_timeout) or waited > 120:
                break  # short of `expected`: the orchestrator reports it
            continue
        if message.error():
            raise RuntimeError(f"consumer error: {message.error().str()}")
        last_message = clock()
        key, timestamp = message.key(), message.timestamp()[1]
        for out in route(message.value(), (message.topic(), message.partition(), message.offset())):
            topic = out.topic
            if topic not in known:  # as the router's _OutputTopics: created on first use
                ensure_topics(kafka_config, [TopicSpec(topic, partitions)])
                known.add(topic)
            while True:
                try:
                    produce(topic, out.value, key, headers=out.headers, timestamp=timestamp)
                    break
                except BufferError:
                    poll_producer(0.05)
        poll_producer(0)
        count += 1
        if count == expected or clock() - checkpoint_started >= interval:
            commit()
            checkpoint_started = clock()
    run_seconds = clock() - run_started
    if exactly_once:
        producer.abort_transaction(10)  # the empty one begun after the last commit
    consumer.close()
    harness.emit(
        {
            **probe.result(),
            "routed": router.routed,
            "dead_letters": router.dead_letters,
            "build_seconds": build_seconds,
            "run_seconds": run_seconds,
            "rss_after_build_mb": rss_before,
            "peak_rss_mb": harness.peak_rss_mb(),
            "ru_maxrss_mb": harness.ru_maxrss_mb(),
        }
    )


# -- input: real readings from three edge nodes -----------------------------------------------


def split_database(db: Path, parts: int, directory: Path) -> list[Path]:
    """`parts` databases holding consecutive id ranges of `db`'s sensor_readings (ids kept)."""
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as src:
        (create,) = src.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'sensor_readings'"
        ).fetchone()
        low, high = src.execute("SELECT min(id), max(id) FROM sensor_readings").fetchone()
    bounds = [low + (high - low + 1) * i // parts for i in range(parts + 1)]
    paths = []
    for i in range(parts):
        path = directory / f"node{i}.db"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(create)
            conn.execute("ATTACH DATABASE ? AS src", (f"{db.resolve().as_uri()}?mode=ro",))
            conn.execute(
                "INSERT INTO main.sensor_readings SELECT * FROM src.sensor_readings "
                "WHERE id >= ? AND id < ?",
                (bounds[i], bounds[i + 1]),
            )
            conn.commit()
            conn.execute("DETACH DATABASE src")
        paths.append(path)
    return paths


def produce_input(db: Path, run_id: str, directory: Path) -> dict[str, Any]:
    """The database, split in three nodes (one region each), tailed into the input topic."""
    from producers.settings import ProducerSettings
    from producers.tailer import EdgeTailer

    started = time.perf_counter()
    parts = split_database(db, len(REGIONS), directory)
    split_seconds = time.perf_counter() - started
    nodes = []
    for i, (part, region) in enumerate(zip(parts, REGIONS, strict=True)):
        settings = ProducerSettings(
            sqlite=part,
            node_id=f"bench-{run_id}-node{i}",
            region=region,
            once=True,
            topic=_input_topic(run_id),
            dead_letter_topic=f"bench.{run_id}.input.dlq",
            checkpoint_topic=f"bench.{run_id}.node{i}.checkpoints",
        )
        _log(f"input: tailing node {i} ({region}) into {settings.topic}")
        result = EdgeTailer(settings, harness.connection()).run()
        nodes.append(
            {
                "region": region,
                "rows": result.rows,
                "dead_letters": result.dead_letters,
                "seconds": result.seconds,
            }
        )
        part.unlink()
    seconds = time.perf_counter() - started
    rows = sum(n["rows"] for n in nodes)
    records = rows - sum(n["dead_letters"] for n in nodes)
    return {
        "topic": _input_topic(run_id),
        "records": records,
        "rows": rows,
        "nodes": nodes,
        "split_seconds": split_seconds,
        "seconds": seconds,
        "rows_per_s": rows / (seconds - split_seconds),
    }


# -- route() and its parts alone, without Kafka ----------------------------------------------

PASSES = 5  # short CPU loops: the fastest pass of each is kept


def _fetch_input(topic: str, count: int) -> list[tuple[bytes, bytes, tuple[str, int, int]]]:
    """The first `count` committed input messages (key, value, source), spread over partitions."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **harness.connection().kafka_client_config(),
            "group.id": f"unused-{uuid.uuid4().hex[:8]}",  # assign() only, never commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[tuple[bytes, bytes, tuple[str, int, int]]] = []
        deadline = time.monotonic() + 120
        while len(messages) < count and time.monotonic() < deadline:
            for m in consumer.consume(1000, 1.0):
                if not m.error():
                    messages.append((m.key(), m.value(), (m.topic(), m.partition(), m.offset())))
        return messages[:count]
    finally:
        consumer.close()


def measure_components(run_id: str, routes: Path, sample: int) -> dict[str, Any]:
    """us per input record of MessageRouter.route and of its parts, each alone on a sample:
    decode, the routing engine, the re-encodes (per record), headers and tuples (the rest)."""
    from schemas.avro_codec import AvroDecoder
    from schemas.registry import SchemaRegistry
    from sensorstream.topics import READINGS
    from stream_apps.dispatch import ActiveRouting, MessageRouter
    from stream_apps.outputs import OutputEncoders
    from stream_apps.routing.config import parse_routing
    from stream_apps.versions import known_fields

    messages = _fetch_input(_input_topic(run_id), sample)
    registry = SchemaRegistry(harness.connection().schema_registry_config())
    routing = parse_routing(
        routes.read_text(encoding="utf-8"), str(routes), known_fields(registry, READINGS)
    )
    decoder = AvroDecoder(registry)
    encoders = OutputEncoders(registry, decoder)
    router = MessageRouter(ActiveRouting(1, routing), decoder, encoders, "unused")
    values = [value for _, value, _ in messages]
    decoded = [decoder.decode(v) for v in values]
    results = [routing.route(record) for _, record in decoded]
    to_encode = [
        (o, schema_id, value)
        for value, (schema_id, _), result in zip(values, decoded, results, strict=True)
        for o in result.outputs
        if not o.passthrough
    ]
    router.route(values[0], messages[0][2])  # registers the output schemas before timing

    decode, route_engine, encode = decoder.decode, routing.route, encoders.encode
    records = [record for _, record in decoded]
    loops = {
        "decode": lambda: [decode(v) for v in values],
        "routing_engine": lambda: [route_engine(r) for r in records],
        "encode": lambda: [encode(routing, 1, *item) for item in to_encode],
        "route_whole": lambda: [router.route(v, src) for _, v, src in messages],
    }
    # Thread CPU time, interleaved passes, fastest kept: other load on the machine takes the
    # core away between passes but does not count against this thread's CPU time.
    # The cyclic GC is off while timing (as timeit does): the lists kept here would otherwise
    # make every collection walk ~100k dicts, a cost the running router does not have.
    passes: dict[str, list[float]] = {name: [] for name in loops}
    gc.collect()
    gc.disable()
    try:
        for _ in range(PASSES):
            for name, loop in loops.items():
                started = time.thread_time()
                loop()
                passes[name].append(time.thread_time() - started)
    finally:
        gc.enable()
    figures = {name: 1e6 * min(p) / len(values) for name, p in passes.items()}
    parts = figures["decode"] + figures["routing_engine"] + figures["encode"]
    return {
        "sample_records": len(values),
        "encodes_per_record": len(to_encode) / len(values),
        "us_per_record": {**figures, "route_glue": figures["route_whole"] - parts},
        "route_alone_records_per_s": 1e6 / figures["route_whole"],
    }


# -- orchestration ----------------------------------------------------------------------------


def _run_worker(kind: str, spec: dict[str, Any], timeout: float, *extra: str) -> dict[str, Any]:
    return harness.run_worker(
        "benchmarks.router", kind, "--spec", json.dumps(spec), *extra, timeout=timeout
    )


def _spec(run_id: str, variant: str, guarantee: str, expected: int, routes: Path, args) -> dict:
    return {
        "routes": str(routes),
        "group": f"bench-{run_id}-{variant}",
        "control_topic": f"bench.{run_id}.{variant}.control",
        "guarantee": guarantee,
        "expected": expected,
        "commit_interval_s": args.commit_interval,
        "idle_timeout_s": args.idle_timeout,
        "output_partitions": 3,
    }


def _cleanup(run_id: str, groups: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    from schemas.registry import SchemaRegistry

    prefix = f"bench.{run_id}."
    admin = AdminClient(harness.connection().kafka_client_config())
    with contextlib.suppress(Exception):
        topics = admin.list_topics(timeout=30).topics
        harness.delete_topics(sorted(t for t in topics if t.startswith(prefix)))  # + their subjects
    with contextlib.suppress(Exception):  # subjects of topics never created (components)
        client = SchemaRegistry(harness.connection().schema_registry_config()).client
        for subject in client.get_subjects():
            if subject.startswith(prefix):
                with contextlib.suppress(Exception):
                    client.delete_subject(subject)
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = harness.new_run_id()
    info = harness.machine_info()
    db, data = ensure_database(args.records)
    workdir = Path(tempfile.mkdtemp(prefix="sensorstream-router-bench-"))
    groups: list[str] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    components = None
    started = time.perf_counter()
    try:
        source = produce_input(db, run_id, workdir)
        expected = source["records"]
        _log(f"input: {expected} records in {source['seconds']:.1f} s")
        if args.components:
            _log(f"route() and its parts alone on {min(args.components, expected)} records")
            components = measure_components(
                run_id, write_routes(run_id, "components", workdir), min(args.components, expected)
            )
        for round_no in range(1, args.rounds + 1):
            for kind, guarantee in ORDER:
                variant = f"r{round_no}-{kind}-{guarantee}"
                routes = write_routes(run_id, variant, workdir)
                spec = _spec(run_id, variant, guarantee, expected, routes, args)
                groups.append(spec["group"])
                _log(f"round {round_no}: {kind} {GUARANTEES[guarantee]} over {expected} records")
                result = _run_worker(kind, spec, timeout=expected / 500 + 300)
                result["variant"] = variant
                if result["records"] != expected:
                    raise RuntimeError(f"{variant} routed {result['records']} of {expected}")
                _log(
                    f"  {result['records_per_s']:,.0f} records/s, "
                    f"{result['outputs_per_record']:.2f} outputs/record, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB"
                )
                runs.setdefault(f"{kind}-{guarantee}", []).append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep_topics:
            _log("cleanup: deleting this run's topics, subjects and consumer groups")
            _cleanup(run_id, groups)
    best = {name: max(rs, key=lambda r: r["records_per_s"]) for name, rs in runs.items()}
    outputs = {name: r["outputs"] for name, r in best.items()}
    ratios = {
        g: best[f"router-{g}"]["records_per_s"] / best[f"baseline-{g}"]["records_per_s"]
        for g in GUARANTEES
    }
    targets: dict[str, Any] = {}
    for g in GUARANTEES:
        rate = best[f"router-{g}"]["records_per_s"]
        targets[f"ratio_vs_baseline_{g}"] = {
            "target": f">= {TARGETS['ratio_vs_baseline']}",
            "value": ratios[g],
            "met": harness.met(ratios[g], TARGETS["ratio_vs_baseline"], True),
        }
        targets[f"records_per_s_{g}"] = {
            "target": f">= {TARGETS['records_per_s']}",
            "value": rate,
            "met": harness.met(rate, TARGETS["records_per_s"], True),
        }
    return {
        "benchmark": "router",
        "run_id": run_id,
        "machine": info,
        "params": {
            "records": args.records,
            "rounds": args.rounds,
            "commit_interval_s": args.commit_interval,
            "idle_timeout_s": args.idle_timeout,
            "regions": list(REGIONS),
            "order_per_round": [f"{k}-{g}" for k, g in ORDER],
        },
        "data": data,
        "input": source,
        "runs": runs,
        "best": {name: r["records_per_s"] for name, r in best.items()},
        "components": components,
        "outputs_identical": len(set(outputs.values())) == 1,
        "outputs": outputs,
        "ratios": {f"router_vs_baseline_{g}": ratios[g] for g in GUARANTEES},
        # each round's router and baseline ran next to each other (ORDER): ratios per round
        "ratios_per_round": {
            g: [
                r["records_per_s"] / b["records_per_s"]
                for r, b in zip(runs[f"router-{g}"], runs[f"baseline-{g}"], strict=True)
            ]
            for g in GUARANTEES
        },
        # CPU time per record is less sensitive than wall time to other load on the machine
        "cpu_ratios": {
            f"baseline_vs_router_cpu_per_record_{g}": best[f"baseline-{g}"]["cpu_us_per_record"]
            / best[f"router-{g}"]["cpu_us_per_record"]
            for g in GUARANTEES
        },
        # what quixstreams adds per input record: time outside route() (the route() work is
        # the same on both sides), and CPU time per record, router minus baseline
        "quixstreams_overhead_us_per_record": {
            g: {
                "outside_route": best[f"router-{g}"]["outside_route_us_per_record"]
                - best[f"baseline-{g}"]["outside_route_us_per_record"],
                "cpu": best[f"router-{g}"]["cpu_us_per_record"]
                - best[f"baseline-{g}"]["cpu_us_per_record"],
            }
            for g in GUARANTEES
        },
        "targets": targets,
        "timing_note": "seconds = first route() start to last route() end + the duration of "
        "the commit covering the last record; start-up and idle time are left out",
        "wall_seconds": time.perf_counter() - started,
    }


def table(results: dict[str, Any]) -> str:
    runs, targets = results["runs"], results["targets"]

    def best(name: str) -> dict[str, Any]:
        return max(runs[name], key=lambda r: r["records_per_s"])

    def mark(name: str) -> str:
        met = targets[name]["met"]
        return "n/a" if met is None else ("met" if met else "MISSED")

    lines = [
        f"router benchmark, {results['input']['records']:,} records "
        f"({best('router-eos')['outputs_per_record']:.2f} outputs each), "
        f"run {results['run_id']}",
        f"{'measurement':<28}{'records/s':>11}{'us/rec':>8}{'in route':>9}{'outside':>9}"
        f"{'CPU us':>8}{'cores':>7}{'RSS MB':>8}",
    ]
    for g in GUARANTEES:
        for kind in ("router", "baseline"):
            r = best(f"{kind}-{g}")
            label = f"{kind} {GUARANTEES[g]}"
            lines.append(
                f"{label:<28}{r['records_per_s']:>11,.0f}{r['us_per_record']:>8.1f}"
                f"{r['route_us_per_record']:>9.1f}{r['outside_route_us_per_record']:>9.1f}"
                f"{r['cpu_us_per_record']:>8.1f}{r['cpu_cores_busy']:>7.2f}{r['peak_rss_mb']:>8.1f}"
            )
        ratio = results["ratios"][f"router_vs_baseline_{g}"]
        cpu_ratio = results["cpu_ratios"][f"baseline_vs_router_cpu_per_record_{g}"]
        rounds = ", ".join(f"{x:.2f}" for x in results["ratios_per_round"][g])
        lines.append(
            f"{'  ratio router / baseline':<28}{ratio:>11.2f}  "
            f">= {TARGETS['ratio_vs_baseline']} {mark(f'ratio_vs_baseline_{g}')}; "
            f"router >= {TARGETS['records_per_s']:,}/s {mark(f'records_per_s_{g}')}"
        )
        lines.append(f"    per round {rounds}; by CPU per record {cpu_ratio:.2f}")
    parts = results.get("components")
    if parts:
        us = parts["us_per_record"]
        lines.append(
            f"route() alone, us/record: {us['route_whole']:.1f} = decode {us['decode']:.1f} "
            f"+ engine {us['routing_engine']:.1f} + {parts['encodes_per_record']:.2f} encodes "
            f"{us['encode']:.1f} + glue {us['route_glue']:.1f} "
            f"({parts['route_alone_records_per_s']:,.0f} records/s)"
        )
    lines.append(
        f"outputs identical in all runs: {results['outputs_identical']}; "
        f"input produced at {results['input']['rows_per_s']:,.0f} rows/s"
    )
    return "\n".join(lines)


# -- profile ----------------------------------------------------------------------------------

_BUILTINS = {
    "consumer poll": "<method 'poll' of 'cimpl.Consumer' objects>",
    "producer produce (librdkafka call)": "<method 'produce' of 'cimpl.Producer' objects>",
    "producer poll": "<method 'poll' of 'cimpl.Producer' objects>",
    "producer flush": "<method 'flush' of 'cimpl.Producer' objects>",
    "commit_transaction": "<method 'commit_transaction' of 'cimpl.Producer' objects>",
    "send_offsets_to_transaction": "<method 'send_offsets_to_transaction' of 'cimpl.Producer' "
    "objects>",
    "begin_transaction": "<method 'begin_transaction' of 'cimpl.Producer' objects>",
    "copy_context": "<built-in method _contextvars.copy_context>",
    "Context.run (own)": "<method 'run' of '_contextvars.Context' objects>",
}
_OURS = {
    "MessageRouter.route": ("stream_apps/dispatch.py", "route"),
    "AvroDecoder.decode": ("schemas/avro_codec.py", "decode"),
    "CompiledRouting.route": ("stream_apps/routing/compiled.py", "route"),
    "OutputEncoders.encode": ("stream_apps/outputs.py", "encode"),
    "Application._process_message": ("quixstreams/app.py", "_process_message"),
    "ProcessingContext.commit_checkpoint": (
        "quixstreams/processing/context.py",
        "commit_checkpoint",
    ),
    "ensure_topics": ("sensorstream/topics.py", "ensure_topics"),
}


def summarize_profile(path: Path, records: int) -> tuple[dict[str, Any], str]:
    """Where the time goes, per input record (profiled time, so Python calls are inflated)."""
    stats = pstats.Stats(str(path)).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, ..)
    own: dict[str, float] = {}
    cum: dict[str, float] = {}
    calls: dict[str, int] = {}
    quix_own: dict[str, float] = {}
    for (file, line, name), (_cc, nc, tottime, cumtime, _callers) in stats.items():
        for label, builtin in _BUILTINS.items():
            if file == "~" and name == builtin:
                own[label] = own.get(label, 0.0) + tottime
                calls[label] = calls.get(label, 0) + nc
        for label, (suffix, func) in _OURS.items():
            if file.endswith(suffix) and name == func:
                cum[label] = cum.get(label, 0.0) + cumtime
                calls[label] = calls.get(label, 0) + nc
        if "/quixstreams/" in file:
            short = f"{file.split('/quixstreams/')[1]}:{line}({name})"
            quix_own[short] = tottime
    per = {k: 1e6 * v / records for k, v in {**own, **cum}.items()}
    route = cum.get("MessageRouter.route", 0.0)
    parts = ("AvroDecoder.decode", "CompiledRouting.route", "OutputEncoders.encode")
    route_own = route - sum(cum.get(p, 0.0) for p in parts)
    processing = cum.get("Application._process_message", 0.0)
    librdkafka = sum(
        own.get(k, 0.0) for k in ("producer produce (librdkafka call)", "producer poll")
    )
    quix_in_processing = (
        processing
        - own.get("consumer poll", 0.0)
        - librdkafka
        - route
        - cum.get("ensure_topics", 0.0)
    )
    quix_total = sum(quix_own.values())
    summary = {
        "records": records,
        "us_per_record": per,
        "route_own_us_per_record": 1e6 * route_own / records,
        "quixstreams_python_in_processing_us_per_record": 1e6 * quix_in_processing / records,
        "quixstreams_own_time_us_per_record": 1e6 * quix_total / records,
        "calls": calls,
        "top_quixstreams_own_us_per_record": {
            k: 1e6 * v / records for k, v in sorted(quix_own.items(), key=lambda kv: -kv[1])[:25]
        },
    }
    lines = [f"per input record, under cProfile ({records:,} records):"]
    for label, value in sorted(per.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {label:<44}{value:>8.1f} us  ({calls.get(label, 0):,} calls)")
    lines.append(
        f"  {'MessageRouter.route own (headers, tuples)':<44}"
        f"{summary['route_own_us_per_record']:>8.1f} us"
    )
    lines.append(
        f"  {'quixstreams Python per message (derived)':<44}"
        f"{summary['quixstreams_python_in_processing_us_per_record']:>8.1f} us"
    )
    lines.append("top quixstreams functions by own time, us per input record:")
    for k, v in summary["top_quixstreams_own_us_per_record"].items():
        lines.append(f"  {v:>7.2f}  {k}")
    return summary, "\n".join(lines)


def profile(args: argparse.Namespace) -> None:
    run_id = harness.new_run_id()
    db, _ = ensure_database(args.records)
    out = harness.profile_path(args.out)
    workdir = Path(tempfile.mkdtemp(prefix="sensorstream-router-bench-"))
    group = None
    try:
        source = produce_input(db, run_id, workdir)
        routes = write_routes(run_id, "profile", workdir)
        spec = _spec(run_id, "profile", "eos", source["records"], routes, args)
        group = spec["group"]
        _log(f"profiling the exactly-once router over {source['records']} records under cProfile")
        result = _run_worker(
            "router", spec, source["records"] / 200 + 300, "--profile-out", str(out)
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep_topics:
            _cleanup(run_id, [group] if group else [])
    summary, text = summarize_profile(out, result["records"])
    head = (
        f"router exactly-once under cProfile: {result['records']:,} records, "
        f"{result['records_per_s']:,.0f} records/s profiled, "
        f"{result['outputs_per_record']:.2f} outputs per record\n"
    )
    harness.write_profile_report(out, head + text)
    harness.write_results(out.with_suffix(".json"), {"run": result, **summary})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.router", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=None, help=f"default {DEFAULT_RECORDS:,}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the four runs; best kept")
    parser.add_argument("--commit-interval", type=float, default=0.5, help="seconds")
    parser.add_argument(
        "--idle-timeout", type=float, default=3.0, help="the baseline loop's exit when idle"
    )
    parser.add_argument(
        "--components", type=int, default=20_000, help="records for route() alone; 0 skips"
    )
    parser.add_argument("--keep-topics", action="store_true", help="leave the bench topics")
    parser.add_argument("--profile", action="store_true", help="cProfile the router (EOS)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()  # before anything imports the registry client
    if args.worker == "router":
        _worker_router(args.spec, args.profile_out)
        return 0
    if args.worker == "baseline":
        _worker_baseline(args.spec)
        return 0
    if args.profile:
        args.records = args.records or PROFILE_RECORDS
        profile(args)
        return 0
    args.records = args.records or DEFAULT_RECORDS
    if args.records < len(REGIONS) or args.rounds < 1:
        parser.error("--records must be at least 3 and --rounds at least 1")
    results = run(args)
    return harness.finish(args.out, results, table(results))


if __name__ == "__main__":
    sys.exit(main())
