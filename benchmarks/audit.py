"""Benchmark of `sensorstream audit` on a lake of 10M rows over 1,000 nodes: seconds and peak
memory of the audit process.

The lake is generated synthetically with the sink's table layout (provenance, Kafka and lake
columns, `event_date` partitions): `raw` with every row, `emergency` with 5 % of them, and a
dead-letter table holding one producer dead letter per node, whose rows are left out of raw,
as the producer would. Each node's producer checkpoint goes to a compacted topic of this run's
own on the local stack's broker (skipped with `--no-checkpoints`), so the audit does all of its
work: per-partition duplicate and routed-row checks and the per-node tally against checkpoints.
A clean lake must come out exact (exit 0); the run fails otherwise.

    uv run python -m benchmarks.audit                      # 10M rows, 1,000 nodes, 10 days
    uv run python -m benchmarks.audit --rows 1000000       # quick mode

The generated lake is cached in benchmarks/.data/ (keyed by its shape) and reused.
Results: benchmarks/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
RESULTS = ROOT / "benchmarks" / "results"
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)
EMERGENCY_EVERY = 20  # 5 %
CHUNK = 1_000_000


def _node_names(nodes: int) -> pa.Array:
    return pa.array([f"edge-{i:04d}" for i in range(nodes)], pa.string())


def _chunk(start: int, n: int, nodes: int, rows_per_day: int) -> pa.Table:
    """Rows start..start+n of the lake: row i is node i % nodes, its rowid i // nodes + 2
    (rowid 1 of every node is its dead letter), its day i // rows_per_day."""
    index = pa.array(range(start, start + n), pa.int64())
    node_index = pc.subtract(index, pc.multiply(pc.divide(index, nodes), nodes))
    rowid = pc.add(pc.divide(index, nodes), 2)
    node = pa.DictionaryArray.from_arrays(node_index.cast(pa.int32()), _node_names(nodes))
    node = node.dictionary_decode()
    micros = pc.add(
        pc.multiply(pc.divide(index, rows_per_day), 86_400_000_000),
        pc.multiply(
            pc.subtract(index, pc.multiply(pc.divide(index, rows_per_day), rows_per_day)), 1000
        ),
    )
    base = int(DAY0.timestamp() * 1_000_000)
    timestamp = pc.add(micros, base).cast(pa.timestamp("us", "UTC"))
    temperature = pc.divide(
        pc.cast(pc.subtract(index, pc.multiply(pc.divide(index, 1000), 1000)), pa.float64()), 10.0
    )
    return pa.table(
        {
            "timestamp": timestamp,
            "sensor_id": pc.binary_join_element_wise(node, pa.scalar("-s1"), ""),
            "temperature": temperature,
            "humidity": pc.divide(temperature, 2.0),
            "vibration": temperature,
            "status_code": pa.repeat(pa.scalar(0, pa.int64()), n),
            "anomaly_flag": pa.repeat(pa.scalar(0, pa.int64()), n),
            "_node_id": node,
            "_region": pa.repeat(pa.scalar("eu-west-1"), n),
            "_source_table": pa.repeat(pa.scalar("sensor_readings"), n),
            "_source_rowid": rowid,
            "_ingested_at": timestamp,
            "_kafka_topic": pa.repeat(pa.scalar("sensors.raw"), n),
            "_kafka_partition": pc.cast(
                pc.subtract(node_index, pc.multiply(pc.divide(node_index, 3), 3)), pa.int32()
            ),
            "_kafka_offset": index,
            "_schema_id": pa.repeat(pa.scalar(1, pa.int32()), n),
            "_route": pa.repeat(pa.scalar("raw"), n),
            "_routing_version": pa.repeat(pa.scalar(1, pa.int64()), n),
            "event_date": pc.cast(timestamp, pa.date32()),
        }
    )


def generate(lake: Path, rows: int, nodes: int, days: int) -> None:
    from deltalake import write_deltalake

    rows_per_day = -(-rows // days)
    for start in range(0, rows, CHUNK):
        data = _chunk(start, min(CHUNK, rows - start), nodes, rows_per_day)
        write_deltalake(str(lake / "raw"), data, mode="append", partition_by=["event_date"])
        every = pc.equal(
            pc.subtract(
                data["_kafka_offset"],
                pc.multiply(pc.divide(data["_kafka_offset"], EMERGENCY_EVERY), EMERGENCY_EVERY),
            ),
            0,
        )
        emergency = data.filter(every)
        emergency = emergency.set_column(
            emergency.column_names.index("_route"),
            "_route",
            pa.repeat(pa.scalar("emergency"), emergency.num_rows),
        )
        emergency = emergency.append_column(
            "severity", pa.repeat(pa.scalar("critical"), emergency.num_rows)
        )
        write_deltalake(
            str(lake / "emergency"), emergency, mode="append", partition_by=["event_date"]
        )
        print(f"  generated {start + data.num_rows:,} of {rows:,} rows", flush=True)
    names = _node_names(nodes).to_pylist()
    when = pa.repeat(pa.scalar(DAY0, pa.timestamp("us", "UTC")), nodes)
    dead = pa.table(
        {
            "stage": pa.repeat(pa.scalar("producer"), nodes),
            "error": pa.repeat(pa.scalar("temperature: text in a numeric column"), nodes),
            "failed_at": pa.repeat(pa.scalar(DAY0.isoformat()), nodes),
            "source": pa.array(
                [
                    json.dumps(
                        {
                            "db": "/data/edge.db",
                            "node_id": n,
                            "rowid": "1",
                            "table": "sensor_readings",
                        },
                        sort_keys=True,
                    )
                    for n in names
                ]
            ),
            "headers": pa.repeat(pa.scalar("{}"), nodes),
            "message_key": pa.repeat(pa.scalar(None, pa.binary()), nodes),
            "message_value": pa.repeat(pa.scalar(b"{}", pa.binary()), nodes),
            "message_time": when,
            "_ingested_at": when,
            "_kafka_topic": pa.repeat(pa.scalar("sensors.dlq"), nodes),
            "_kafka_partition": pa.repeat(pa.scalar(0, pa.int32()), nodes),
            "_kafka_offset": pa.array(range(nodes), pa.int64()),
            "_schema_id": pa.repeat(pa.scalar(None, pa.int32()), nodes),
            "_route": pa.repeat(pa.scalar("dlq"), nodes),
            "_routing_version": pa.repeat(pa.scalar(None, pa.int64()), nodes),
            "event_date": pc.cast(when, pa.date32()),
        }
    )
    write_deltalake(str(lake / "dlq"), dead, partition_by=["event_date"])


def publish_checkpoints(bootstrap: str, topic: str, rows: int, nodes: int) -> None:
    """One checkpoint per node, as the producer writes them: rowids 1..last, rows_total
    counting the dead letter."""
    from confluent_kafka import Producer

    from sensorstream.topics import COMPACTED, TopicSpec, ensure_topics

    config = {"bootstrap.servers": bootstrap}
    ensure_topics(config, [TopicSpec(topic, 1, COMPACTED)])
    producer = Producer(config)
    for i, name in enumerate(_node_names(nodes).to_pylist()):
        count = rows // nodes + (1 if i < rows % nodes else 0)
        value = {
            "format": 1,
            "node_id": name,
            "table": "sensor_readings",
            "db": "/data/edge.db",
            "rowid": count + 1,
            "row_fingerprint": None,
            "schema_id": 1,
            "rows_total": count + 1,
            "committed_at": time.time(),
        }
        producer.produce(
            topic, key=f"{name}/sensor_readings".encode(), value=json.dumps(value).encode()
        )
    assert producer.flush(60) == 0


def run_audit(lake: Path, topic: str | None) -> dict:
    """The audit as an operator runs it, in a process of its own: wall seconds, peak RSS."""
    command = [sys.executable, "-c", _CHILD, str(lake), topic or ""]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"audit failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    measured = json.loads(lines[-1])
    return {"seconds": round(seconds, 1), **measured}


# The child prints the report's exit code and its own peak RSS (VmHWM, reset by exec).
_CHILD = """
import io, json, sys
from sensorstream.cli import main
args = ["audit", "--lake", sys.argv[1], "--json"]
args += ["--checkpoint-topic", sys.argv[2]] if sys.argv[2] else ["--no-checkpoints"]
out = io.StringIO()
real, sys.stdout = sys.stdout, out
code = main(args)
sys.stdout = real
report = json.loads(out.getvalue())
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"exit_code": code, "peak_rss_mb": round(hwm / 1024), "rows_read": report["rows"],
                  "node_tables": len(report["tallies"]), "discrepancies": report["discrepancies"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--no-checkpoints", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "audit.json")
    args = parser.parse_args()
    lake = DATA / f"audit-lake-{args.rows}-{args.nodes}-{args.days}"
    if not (lake / "dlq" / "_delta_log").exists():
        shutil.rmtree(lake, ignore_errors=True)
        print(f"generating {lake} ...", flush=True)
        started = time.monotonic()
        generate(lake, args.rows, args.nodes, args.days)
        print(f"  in {time.monotonic() - started:.0f} s", flush=True)
    topic = None
    if not args.no_checkpoints:
        topic = f"bench.audit.{uuid.uuid4().hex[:8]}.ckpt"
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        publish_checkpoints(bootstrap, topic, args.rows, args.nodes)
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    result = run_audit(lake, topic)
    size = sum(f.stat().st_size for f in lake.rglob("*") if f.is_file())
    record = {
        "benchmark": "audit",
        "date": datetime.now(UTC).isoformat(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_1m": os.getloadavg()[0],
        },
        "lake": {"rows": args.rows, "nodes": args.nodes, "days": args.days, "bytes": size},
        "checkpoints": topic is not None,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if result["exit_code"] != 0:
        raise SystemExit("the clean synthetic lake did not come out exact")


if __name__ == "__main__":
    main()
