"""Producer benchmark (issue 3): SQLite rows to Avro records in Kafka, against its serial limit.

    uv run python -m benchmarks.producer [--rows 1000000] [--out benchmarks/results/producer.json]

The machine is shared and noisy, so absolute figures are reported beside a baseline measured in
the same run, on the same rows, and judged as a ratio:

1. End to end: `EdgeTailer(once=True)` produces the whole `--rows` database to fresh topics, in
   a fresh subprocess, so its peak RSS (VmHWM) is the producer's alone. Throughput is rows over the
   tail loop (after connecting and registering the schema); the whole-run figure is reported too.
2. Baseline: each step alone, on the same rows: (a) SQLite read with `SQLiteSource.rows_after`
   in chunks, (b) `AvroEncoder.encode` over records converted beforehand from a sample spread
   over the whole table, (c) confluent-kafka `produce` of those encoded messages (cycled to the
   full row count) with the tailer's own producer configuration, one transaction per chunk.
   The serial limit is 1 / (1/read + 1/encode + 1/produce). The baseline runs before and after
   the end-to-end run and the faster of the two is kept per step (convert and encode: the
   fastest of 3 passes in each round), so noise on the machine makes the ratio pessimistic
   rather than flattering. `RowConverter.convert` is measured alone too: it is per-row work the
   limit leaves out.
3. Latency at a steady write rate (default 2000 rows/s for 20 s): a writer paced like the
   simulator (one transaction per 50 ms tick, same table, WAL, synchronous=FULL) stamps
   time.time() into the `timestamp` column right before COMMIT; the tailer runs continuously in
   a subprocess; a read_committed consumer assigned to every partition from the end takes
   (receive time - timestamp) per record. The same figure measured from the moment COMMIT
   returned is reported beside it (it leaves out the writer's own fsync).

`--profile` runs only the end-to-end part under cProfile (100k rows unless --rows is given) and
writes the top functions next to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / ".data"
DEFAULT_OUT = BENCH_DIR / "results" / "producer.json"
DEFAULT_ROWS = 1_000_000
PROFILE_ROWS = 100_000

TARGETS = {
    "ratio_vs_limit": 0.6,  # end to end / serial limit, at least
    "rows_per_s": 15_000,  # end to end, at least
    "peak_rss_mb": 120,  # producer process, at most
    "latency_p99_ms": 500,  # at 2000 rows/s, at most
}


# -- shared helpers ------------------------------------------------------------------------


_log = harness.logger("producer-bench")


def _topics(run_id: str, name: str) -> dict[str, str]:
    base = f"bench.{run_id}.{name}"
    return {
        "topic": f"{base}.readings",
        "dead_letter_topic": f"{base}.dlq",
        "checkpoint_topic": f"{base}.checkpoints",
    }


def _producer_settings(db: Path, run_id: str, name: str, *, once: bool):
    from producers.settings import ProducerSettings

    return ProducerSettings(
        sqlite=db,
        node_id=f"bench-{run_id}-{name}",
        region="us-east-1",
        once=once,
        **_topics(run_id, name),
    )


# -- workers (run in a fresh subprocess) ----------------------------------------------------


def _worker_end_to_end(db: Path, run_id: str, profile_out: Path | None) -> None:
    from producers.tailer import EdgeTailer
    from sensorstream.logs import configure

    configure("WARNING")
    tailer = EdgeTailer(_producer_settings(db, run_id, "e2e", once=True), harness.connection())
    marks: dict[str, float] = {}
    profiler = cProfile.Profile() if profile_out else None
    if profiler:
        profiler.enable()
    tailer.start()  # connecting and registering the schema: left out of the timing
    # the loop alone (and closing the producer, nothing left in flight)
    marks["rss_before_tail_mb"] = harness.peak_rss_mb()
    marks["cpu_start"] = harness.cpu_seconds()
    marks["start"] = time.perf_counter()
    result = tailer.run()
    marks["end"] = time.perf_counter()
    marks["cpu_end"] = harness.cpu_seconds()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile_out)
    tail_seconds = marks["end"] - marks["start"]
    cpu = marks["cpu_end"] - marks["cpu_start"]
    harness.emit(
        {
            "rows": result.rows,
            "dead_letters": result.dead_letters,
            "transactions": result.transactions,
            "last_rowid": result.last_rowid,
            "seconds_total": result.seconds,
            "seconds_tail": tail_seconds,
            "rows_per_s": result.rows / tail_seconds if tail_seconds else 0.0,
            "rows_per_s_total": result.rows / result.seconds if result.seconds else 0.0,
            "cpu_seconds_tail": cpu,
            "cpu_cores_busy_tail": cpu / tail_seconds if tail_seconds else 0.0,
            "cpu_us_per_row": 1e6 * cpu / result.rows if result.rows else 0.0,
            "rss_before_tail_mb": marks["rss_before_tail_mb"],
            "peak_rss_mb": harness.peak_rss_mb(),
            "ru_maxrss_mb": harness.ru_maxrss_mb(),
        }
    )


def run_end_to_end(db: Path, run_id: str, timeout: float, *extra: str) -> dict[str, Any]:
    """`_worker_end_to_end` in a fresh process (`extra`: more of its flags); its result."""
    return harness.run_worker(
        "benchmarks.producer", "e2e", "--db", str(db), "--run-id", run_id, *extra, timeout=timeout
    )


def _worker_tail(db: Path, run_id: str) -> None:
    from producers.tailer import EdgeTailer
    from sensorstream.logs import configure
    from sensorstream.shutdown import stop_on_signals

    configure("WARNING")
    stop = threading.Event()
    with stop_on_signals(stop):
        result = EdgeTailer(
            _producer_settings(db, run_id, "latency", once=False), harness.connection(), stop
        ).run()
    harness.emit(
        {
            "rows": result.rows,
            "dead_letters": result.dead_letters,
            "transactions": result.transactions,
            "peak_rss_mb": harness.peak_rss_mb(),
        }
    )


def _worker_imports() -> None:
    """RSS of the interpreter with the producer's imports and nothing else: the fixed part."""
    import producers.tailer  # noqa: F401

    harness.emit({"peak_rss_mb": harness.peak_rss_mb()})


# -- the test database ----------------------------------------------------------------------


def ensure_database(rows: int) -> tuple[Path, dict[str, Any]]:
    """The cached simulator database of `rows` rows; generated once (seed 1, 20 sensors)."""
    from producers.simulator import SimulatorSettings, SteppingClock, run_simulator

    # "-bar": pressure in bar, the default routes' unit. A cache from before (hPa) would send
    # every reading to the dead-letter topic in the schematized route of the router benchmark.
    path = DATA_DIR / f"readings-{rows}-bar.db"
    if path.exists():
        return path, {"path": str(path), "cached": True, "bytes": path.stat().st_size}
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    _log(f"generating {rows} rows into {path} (once; reused by later runs)")
    started = time.perf_counter()
    run_simulator(
        SimulatorSettings(db=tmp, count=rows, rate=0, seed=1, sensors=20),
        clock=SteppingClock(datetime(2026, 1, 1, tzinfo=UTC)),
        progress=lambda line: _log(f"simulate: {line}"),
    )
    with contextlib.closing(sqlite3.connect(tmp)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (count,) = conn.execute("SELECT count(*) FROM sensor_readings").fetchone()
    if count != rows:
        raise RuntimeError(f"{tmp}: expected {rows} rows, found {count}")
    for leftover in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(tmp, path)
    seconds = time.perf_counter() - started
    return path, {
        "path": str(path),
        "cached": False,
        "generate_seconds": seconds,
        "bytes": path.stat().st_size,
    }


# -- baseline: each step alone ---------------------------------------------------------------


def measure_read(db: Path, chunk_rows: int, stride: int | None) -> tuple[dict, list[tuple]]:
    """All rows, read like the tailer reads them; every `stride`-th row is kept as the sample."""
    from producers.source import SQLiteSource

    source = SQLiteSource(db).open()
    sample: list[tuple] = []
    try:
        last, count = 0, 0
        started = time.perf_counter()
        while True:
            rows = source.rows_after(last, chunk_rows)
            if not rows:
                break
            last = rows[-1][0]
            if stride:
                sample += rows[(-count) % stride :: stride]
            count += len(rows)
        seconds = time.perf_counter() - started
    finally:
        source.close()
    return harness.rate(count, seconds), sample


def _converter_and_schema(db: Path, settings):
    from producers.source import SQLiteSource
    from schemas.coercions import RowConverter
    from schemas.value_schema import value_schema_for

    source = SQLiteSource(db, settings.table, settings.timestamp_col).open()
    try:
        schema = value_schema_for(source.table, source.columns, source.timestamp_column)
        converter = RowConverter(
            schema,
            source.columns,
            node_id=settings.node_id,
            region=settings.effective_region,
            source_table=source.table,
            max_row_bytes=settings.max_row_bytes,
        )
        return converter, schema, source.table
    finally:
        source.close()


PASSES = 3  # convert and encode are short CPU loops: the fastest of a few passes is kept


def _best_of(passes: list[float], rows: int) -> dict[str, Any]:
    return {**harness.rate(rows, min(passes)), "passes_seconds": passes}


def measure_convert(converter, sample: list[tuple]) -> tuple[dict, list[dict]]:
    from schemas.coercions import BadRow

    convert = converter.convert
    passes = []
    for _ in range(PASSES):
        records: list[dict] = []
        append = records.append
        bad = 0
        started = time.perf_counter()
        for row in sample:
            try:
                append(convert(row[1:], row[0]))
            except BadRow:
                bad += 1
        passes.append(time.perf_counter() - started)
    return {**_best_of(passes, len(sample)), "bad_rows": bad}, records


def measure_encode(encoder, records: list[dict]) -> tuple[dict, list[tuple[bytes, bytes]]]:
    encode = encoder.encode
    passes = []
    for _ in range(PASSES):
        started = time.perf_counter()
        values = [encode(record) for record in records]
        passes.append(time.perf_counter() - started)
    keys = [record["sensor_id"].encode() for record in records]
    messages = list(zip(keys, values, strict=True))
    mean_bytes = sum(len(v) for v in values) / len(values) if values else 0.0
    return {**_best_of(passes, len(records)), "mean_value_bytes": mean_bytes}, messages


def measure_produce(
    db: Path, run_id: str, name: str, table: str, messages: list[tuple[bytes, bytes]], total: int
) -> dict:
    """`total` pre-encoded messages (cycling through `messages`), one transaction per chunk,
    with exactly the producer the tailer builds (its `producer_config`), under a
    transactional id of `table`'s own."""
    from confluent_kafka import Producer

    from producers.tailer import TRANSACTION_TIMEOUT_S, EdgeTailer
    from sensorstream.topics import TopicSpec, ensure_topics

    settings = _producer_settings(db, run_id, name, once=True)
    tailer = EdgeTailer(settings, harness.connection())
    ensure_topics(tailer.kafka_config, [TopicSpec(settings.topic, settings.partitions)])
    config = tailer.producer_config(settings.node_id)
    producer = Producer({**config, "transactional.id": f"{config['transactional.id']}.{table}"})
    producer.init_transactions(TRANSACTION_TIMEOUT_S)
    seconds, transactions = harness.produce_in_transactions(
        producer,
        settings.topic,
        messages,
        total,
        settings.chunk_rows,
        lambda: producer.commit_transaction(TRANSACTION_TIMEOUT_S),
    )
    producer.flush(5)
    return {**harness.rate(total, seconds), "transactions": transactions, "topic": settings.topic}


def limit(*rates: float) -> float:
    """Rows/s of steps done one after the other for each row: 1 / sum(1/rate)."""
    return 1.0 / sum(1.0 / r for r in rates)


def run_baseline_round(
    db: Path, run_id: str, round_no: int, rows: int, sample: list[tuple] | None, sample_rows: int
) -> tuple[dict, list[tuple]]:
    from schemas.avro_codec import AvroEncoder
    from schemas.registry import SchemaRegistry

    settings = _producer_settings(db, run_id, f"baseline{round_no}", once=True)
    stride = max(1, rows // sample_rows) if sample is None else None
    _log(f"baseline round {round_no}: SQLite read of {rows} rows")
    read, collected = measure_read(db, settings.chunk_rows, stride)
    sample = collected if sample is None else sample
    converter, schema, table = _converter_and_schema(db, settings)
    _log(f"baseline round {round_no}: convert + encode of a {len(sample)}-row sample")
    convert, records = measure_convert(converter, sample)
    schema_id = SchemaRegistry(harness.connection().schema_registry_config()).register_value_schema(
        settings.topic, schema
    )
    encode, messages = measure_encode(AvroEncoder(schema, schema_id), records)
    del records
    _log(f"baseline round {round_no}: produce of {rows} pre-encoded messages")
    produce = measure_produce(db, run_id, f"baseline{round_no}", table, messages, rows)
    result = {"read": read, "convert": convert, "encode": encode, "produce": produce}
    return result, sample


# -- latency ----------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "count": len(ordered),
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


class _PacedWriter:
    """Writes readings like the simulator (rows due = rate x elapsed, at most 1000 per
    transaction, one transaction per tick, WAL, synchronous=FULL), but stamps the `timestamp`
    column with time.time() right before COMMIT, and notes when COMMIT returned."""

    def __init__(self, db: Path, seed: int = 1, sensors: int = 20) -> None:
        from producers.simulator import INSERT_COLUMNS, build_fleet
        from producers.simulator.database import TABLE, ReadingsDatabase
        from producers.simulator.readings import ReadingModel

        ReadingsDatabase.open(db).close()  # creates the file and table exactly as the simulator
        self.conn = sqlite3.connect(db, timeout=5.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.model = ReadingModel(
            build_fleet(seed, "us-east-1", sensors),
            seed=seed,
            region="us-east-1",
            anomaly_probability=0.05,
        )
        columns = ", ".join(INSERT_COLUMNS)
        marks = ", ".join("?" for _ in INSERT_COLUMNS)
        self._insert = f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})"
        self._stamp = f"UPDATE {TABLE} SET timestamp = ? WHERE id BETWEEN ? AND ?"
        self.committed_at: dict[int, float] = {}
        self.last_rowid = 0
        self.commit_seconds: list[float] = []

    def append(self, count: int) -> None:
        now = datetime.now(UTC)
        rows = [self.model.next_row(now) for _ in range(count)]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(self._insert, rows)
        (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
        first = last - count + 1
        stamp = time.time()
        text = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds")
        conn.execute(self._stamp, (text, first, last))
        conn.execute("COMMIT")
        done = time.time()
        self.commit_seconds.append(done - stamp)
        for rowid in range(first, last + 1):
            self.committed_at[rowid] = done
        self.last_rowid = last

    def run(self, rate: float, seconds: float, tick_s: float = 0.05) -> int:
        started = time.monotonic()
        deadline = started + seconds
        written = 0
        while True:
            now = time.monotonic()
            horizon = min(now, deadline)
            due = min(math.floor((horizon - started) * rate + 1e-9) - written, 1000)
            if due > 0:
                self.append(due)
                written += due
            now = time.monotonic()
            if now >= deadline:
                return written
            next_due = started + (written + 1) / rate
            if next_due > now:
                time.sleep(max(0.0, min(max(next_due, now + tick_s), deadline) - now))

    def close(self) -> None:
        self.conn.close()


class _Receiver(threading.Thread):
    """A read_committed consumer on every partition from the end; notes (receive time, value)."""

    def __init__(self, kafka_config: dict[str, str], topic: str, group: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        super().__init__(name="latency-consumer", daemon=True)
        self.consumer = Consumer(
            {
                **kafka_config,
                "group.id": group,  # assign() only, never commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        metadata_ = self.consumer.list_topics(topic, timeout=30).topics[topic]
        assignment = []
        for partition in metadata_.partitions:
            high = self._end_offset(TopicPartition(topic, partition))
            assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)
        self.received: list[tuple[float, bytes]] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def _end_offset(self, tp) -> int:
        """The partition's end; retried while a just-created topic has no leader yet."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + 60
        while True:
            try:
                return self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self) -> None:
        poll, clock, received = self.consumer.poll, time.time, self.received
        while not self.done.is_set():
            message = poll(0.1)
            if message is None:
                continue
            now = clock()
            if message.error():
                self.errors.append(message.error().str())
                continue
            received.append((now, message.value()))
        self.consumer.close()


def _decode_all(received: list[tuple[float, bytes]]) -> list[tuple[float, int, float]]:
    """(receive time, rowid, event time) per record; writer schemas come from the registry."""
    import fastavro

    from schemas.registry import SchemaRegistry, read_wire_header

    client = SchemaRegistry(harness.connection().schema_registry_config()).client
    parsed: dict[int, Any] = {}
    out = []
    for received_at, value in received:
        schema_id = read_wire_header(value)
        if schema_id not in parsed:
            text = client.get_schema(schema_id).schema_str
            parsed[schema_id] = fastavro.parse_schema(json.loads(text))
        record = fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed[schema_id], None)
        out.append((received_at, record["_source_rowid"], record["timestamp"].timestamp()))
    return out


def run_latency(run_id: str, rate: float, seconds: float) -> dict:
    from producers.settings import ProducerSettings
    from sensorstream.topics import COMPACTED, TopicSpec, ensure_topics

    workdir = Path(tempfile.mkdtemp(prefix="sensorstream-latency-"))
    db = workdir / "readings.db"
    names = _topics(run_id, "latency")
    partitions = ProducerSettings.model_fields["partitions"].default
    kafka_config = harness.connection().kafka_client_config()
    # Created here, as the tailer would, so the consumer can be assigned before rows flow.
    ensure_topics(
        kafka_config,
        [
            TopicSpec(names["topic"], partitions),
            TopicSpec(names["dead_letter_topic"], 1),
            TopicSpec(names["checkpoint_topic"], 1, COMPACTED),
        ],
    )
    writer = _PacedWriter(db)
    receiver: _Receiver | None = None
    process: subprocess.Popen | None = None
    stdout = ""
    try:
        receiver = _Receiver(kafka_config, names["topic"], f"bench-{run_id}-latency")
        receiver.start()
        process = subprocess.Popen(
            harness.worker_command(
                "benchmarks.producer", "tail", "--db", str(db), "--run-id", run_id
            ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        _log("latency: waiting for the tailer to deliver a first (warm-up) row")
        deadline = time.monotonic() + 120
        while not receiver.received:
            if process.poll() is not None:
                raise RuntimeError(f"the tailer exited early with code {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the tailer delivered nothing within 120 s")
            writer.append(1)
            time.sleep(0.25)
        time.sleep(1.0)  # let the warm-up rows drain
        warm_last = writer.last_rowid
        _log(f"latency: writing {rate:.0f} rows/s for {seconds:.0f} s")
        started = time.monotonic()
        written = writer.run(rate, seconds)
        write_seconds = time.monotonic() - started
        deadline = time.monotonic() + 60
        while len(receiver.received) < writer.last_rowid and time.monotonic() < deadline:
            time.sleep(0.05)
        drained_after = time.monotonic() - started - write_seconds
    finally:
        if receiver is not None:
            receiver.done.set()
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                stdout, _ = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, _ = process.communicate()
        if receiver is not None:
            receiver.join(10)
        writer.close()
        shutil.rmtree(workdir, ignore_errors=True)
    tailer = harness.parse_worker_output(stdout)
    decoded = _decode_all(receiver.received)
    measured = [d for d in decoded if d[1] > warm_last]
    seen = {d[1] for d in measured}
    from_stamp = [1000 * (at - event) for at, _, event in measured]
    from_commit = [1000 * (at - writer.committed_at[rowid]) for at, rowid, _ in measured]
    result = {
        "rate_target": rate,
        "seconds": write_seconds,
        "rows_written": written,
        "rate_achieved": written / write_seconds if write_seconds else 0.0,
        "rows_received": len(seen),
        "rows_missing": written - len(seen),
        "duplicates": len(measured) - len(seen),
        "drained_after_writes_s": drained_after,
        "consumer_errors": receiver.errors[:5],
        "from_stamp_ms": _percentiles(from_stamp),
        "from_commit_return_ms": _percentiles(from_commit),
        "writer_commit_ms": _percentiles([1000 * s for s in writer.commit_seconds]),
        "tailer": tailer,
        "tailer_rows_per_transaction_incl_warmup": (
            tailer["rows"] / tailer["transactions"] if tailer.get("transactions") else 0.0
        ),
    }
    return result


# -- orchestration --------------------------------------------------------------------------


def _best(rounds: list[dict], step: str) -> dict:
    return max((r[step] for r in rounds), key=lambda m: m["rows_per_s"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = harness.new_run_id()
    info = harness.machine_info()
    db, data = ensure_database(args.rows)
    created: list[str] = []
    results: dict[str, Any] = {
        "benchmark": "producer",
        "run_id": run_id,
        "machine": info,
        "params": {
            "rows": args.rows,
            "sample_rows": min(args.sample, args.rows),
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "producer_settings": _producer_settings(db, run_id, "e2e", once=True).model_dump(
                mode="json", include={"chunk_rows", "compression", "linger_ms", "partitions"}
            ),
        },
        "data": data,
    }
    started = time.perf_counter()
    try:
        imports = harness.run_worker("benchmarks.producer", "imports", timeout=120)
        round1, sample = run_baseline_round(db, run_id, 1, args.rows, None, args.sample)
        created.append(round1["produce"]["topic"])
        _log(f"end to end: EdgeTailer(once=True) over {args.rows} rows in a subprocess")
        e2e = run_end_to_end(db, run_id, args.rows / 1000 + 300)
        created += list(_topics(run_id, "e2e").values())
        if e2e["rows"] != args.rows:
            raise RuntimeError(f"end to end produced {e2e['rows']} rows, not {args.rows}")
        round2, _ = run_baseline_round(db, run_id, 2, args.rows, sample, args.sample)
        created.append(round2["produce"]["topic"])
        del sample
        latency = None
        if args.latency_seconds > 0:
            created += list(_topics(run_id, "latency").values())
            try:
                latency = run_latency(run_id, args.latency_rate, args.latency_seconds)
            except Exception as exc:  # keep the throughput figures; say why latency is missing
                _log(f"latency measurement failed: {exc!r}")
                latency = {"error": repr(exc)}
    finally:
        if not args.keep_topics:
            harness.delete_topics(created)
    rounds = [round1, round2]
    best = {step: _best(rounds, step) for step in ("read", "convert", "encode", "produce")}
    serial = limit(
        best["read"]["rows_per_s"], best["encode"]["rows_per_s"], best["produce"]["rows_per_s"]
    )
    serial_with_convert = limit(*(best[s]["rows_per_s"] for s in best))
    ratio = e2e["rows_per_s"] / serial
    measured = latency and "error" not in latency
    p99 = latency["from_stamp_ms"].get("p99") if measured else None
    p99_commit = latency["from_commit_return_ms"].get("p99") if measured else None
    results.update(
        {
            "baseline": {
                "rounds": rounds,
                "best": {step: best[step]["rows_per_s"] for step in best},
                "limit_rows_per_s": serial,
                "limit_with_convert_rows_per_s": serial_with_convert,
                "note": "limit = 1/(1/read + 1/encode + 1/produce), best of two rounds per step "
                "(before and after the end-to-end run); convert is not part of the limit",
            },
            "end_to_end": e2e,
            "imports_only_rss_mb": imports["peak_rss_mb"],
            "latency": latency,
            "ratios": {
                "end_to_end_vs_limit": ratio,
                "end_to_end_vs_limit_with_convert": e2e["rows_per_s"] / serial_with_convert,
            },
            "targets": {
                "ratio_vs_limit": {
                    "target": f">= {TARGETS['ratio_vs_limit']}",
                    "value": ratio,
                    "met": harness.met(ratio, TARGETS["ratio_vs_limit"], True),
                },
                "rows_per_s": {
                    "target": f">= {TARGETS['rows_per_s']}",
                    "value": e2e["rows_per_s"],
                    "met": harness.met(e2e["rows_per_s"], TARGETS["rows_per_s"], True),
                },
                "peak_rss_mb": {
                    "target": f"<= {TARGETS['peak_rss_mb']}",
                    "value": e2e["peak_rss_mb"],
                    "met": harness.met(e2e["peak_rss_mb"], TARGETS["peak_rss_mb"], False),
                },
                "latency_p99_ms": {
                    "target": f"<= {TARGETS['latency_p99_ms']}",
                    "value": p99,
                    "met": harness.met(p99, TARGETS["latency_p99_ms"], False),
                    "measured_from": "timestamp stamped right before the writer's COMMIT",
                },
                "latency_p99_ms_from_commit_return": {
                    "target": f"<= {TARGETS['latency_p99_ms']}",
                    "value": p99_commit,
                    "met": harness.met(p99_commit, TARGETS["latency_p99_ms"], False),
                    "measured_from": "the moment the writer's COMMIT returned (row visible)",
                },
            },
            "wall_seconds": time.perf_counter() - started,
        }
    )
    return results


def table(results: dict[str, Any]) -> str:
    e2e, base, targets = results["end_to_end"], results["baseline"], results["targets"]
    best = base["best"]

    def mark(name: str) -> str:
        met = targets[name]["met"]
        return "n/a" if met is None else ("met" if met else "MISSED")

    lines = [
        f"producer benchmark, {results['params']['rows']} rows, run {results['run_id']}",
        f"{'measurement':<44}{'figure':>16}  target",
        f"{'end to end (tail loop)':<44}{e2e['rows_per_s']:>12,.0f} r/s  "
        f">= {TARGETS['rows_per_s']:,} {mark('rows_per_s')}",
        f"{'end to end (whole run, incl. start-up)':<44}{e2e['rows_per_s_total']:>12,.0f} r/s",
        f"{'  baseline: SQLite read alone':<44}{best['read']:>12,.0f} r/s",
        f"{'  baseline: Avro encode alone':<44}{best['encode']:>12,.0f} r/s",
        f"{'  baseline: Kafka produce alone':<44}{best['produce']:>12,.0f} r/s",
        f"{'  serial limit (read+encode+produce)':<44}{base['limit_rows_per_s']:>12,.0f} r/s",
        f"{'ratio end to end / limit':<44}{results['ratios']['end_to_end_vs_limit']:>16.2f}  "
        f">= {TARGETS['ratio_vs_limit']} {mark('ratio_vs_limit')}",
        f"{'  conversion alone (not in the limit)':<44}{best['convert']:>12,.0f} r/s",
        f"{'  limit incl. conversion':<44}{base['limit_with_convert_rows_per_s']:>12,.0f} r/s",
        f"{'  ratio vs limit incl. conversion':<44}"
        f"{results['ratios']['end_to_end_vs_limit_with_convert']:>16.2f}",
        f"{'producer CPU (cores busy, us/row)':<44}"
        f"{e2e['cpu_cores_busy_tail']:>9.2f} {e2e['cpu_us_per_row']:>6.1f}",
        f"{'peak RSS of the producer process':<44}{e2e['peak_rss_mb']:>13.1f} MB  "
        f"<= {TARGETS['peak_rss_mb']} {mark('peak_rss_mb')}",
        f"{'  RSS after imports only':<44}{results['imports_only_rss_mb']:>13.1f} MB",
    ]
    latency = results.get("latency")
    if latency and "error" in latency:
        lines.append(f"latency: not measured ({latency['error']})")
    elif latency:
        stamp, commit = latency["from_stamp_ms"], latency["from_commit_return_ms"]
        writer = latency["writer_commit_ms"]
        label = f"latency at {latency['rate_target']:.0f} rows/s, p50 / p99 / max"
        lines += [
            f"{label:<44}"
            f"{stamp['p50']:>5.0f}/{stamp['p99']:>4.0f}/{stamp['max']:>5.0f} ms  "
            f"p99 <= {TARGETS['latency_p99_ms']} {mark('latency_p99_ms')}",
            f"{'  same, from COMMIT returned':<44}"
            f"{commit['p50']:>5.0f}/{commit['p99']:>4.0f}/{commit['max']:>5.0f} ms  "
            f"p99 <= {TARGETS['latency_p99_ms']} {mark('latency_p99_ms_from_commit_return')}",
            f"{'  writer COMMIT itself, p50 / p99 / max':<44}"
            f"{writer['p50']:>5.0f}/{writer['p99']:>4.0f}/{writer['max']:>5.0f} ms",
            f"{'  rows measured / missing':<44}"
            f"{latency['rows_received']:>9} / {latency['rows_missing']}",
        ]
    return "\n".join(lines)


def profile(args: argparse.Namespace) -> None:
    run_id = harness.new_run_id()
    db, _ = ensure_database(args.rows)
    out = harness.profile_path(args.out)
    _log(f"profiling EdgeTailer(once=True) over {args.rows} rows under cProfile")
    try:
        e2e = run_end_to_end(db, run_id, args.rows / 500 + 300, "--profile-out", str(out))
    finally:
        if not args.keep_topics:
            harness.delete_topics(list(_topics(run_id, "e2e").values()))
    harness.write_profile_report(
        out,
        f"rows {e2e['rows']}, tail loop {e2e['seconds_tail']:.1f} s under the profiler "
        f"({e2e['rows_per_s']:,.0f} rows/s), CPU {e2e['cpu_cores_busy_tail']:.2f} cores",
        top=30,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.producer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=None, help=f"default {DEFAULT_ROWS:,}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sample", type=int, default=100_000, help="rows converted/encoded")
    parser.add_argument("--latency-rate", type=float, default=2000.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0 skips it")
    parser.add_argument("--keep-topics", action="store_true", help="leave the bench topics")
    parser.add_argument("--profile", action="store_true", help="cProfile the end-to-end run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "e2e":
        _worker_end_to_end(args.db, args.run_id, args.profile_out)
        return 0
    if args.worker == "tail":
        _worker_tail(args.db, args.run_id)
        return 0
    if args.worker == "imports":
        _worker_imports()
        return 0
    if args.profile:
        args.rows = args.rows or PROFILE_ROWS
        profile(args)
        return 0
    args.rows = args.rows or DEFAULT_ROWS
    if args.rows < 1:
        parser.error("--rows must be positive")
    results = run(args)
    return harness.finish(args.out, results, table(results))


if __name__ == "__main__":
    sys.exit(main())
