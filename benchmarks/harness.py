"""What every benchmark here shares: the worker protocol, process and machine figures, results.

Each benchmark measures in fresh subprocesses ("workers") so that a measurement's peak RSS and
CPU are its own: a worker prints one result line (`emit`), the orchestrator finds it
(`run_worker`). Every result file records the machine it was measured on (`machine_info`) and
goes out through `write_results`. Kept here, once, so that a fix to any of them reaches every
benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.process_tree import status_kb

REPO = Path(__file__).resolve().parent.parent
RESULT_MARK = "BENCH-RESULT "


def logger(name: str) -> Callable[[str], None]:
    """A progress line printer for benchmark `name`, on stderr (stdout carries results)."""

    def log(text: str) -> None:
        print(f"[{name}] {text}", file=sys.stderr, flush=True)

    return log


def new_run_id() -> str:
    """Names this run's topics, groups and tables apart from every other run's."""
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


# -- workers -----------------------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """A worker's result, as the one line `run_worker` looks for."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def parse_worker_output(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise RuntimeError(f"worker printed no result; its stdout was:\n{stdout[-2000:]}")


def worker_command(module: str, *args: str) -> list[str]:
    """`python -m <module> --worker <args>`: a worker of benchmark `module`."""
    return [sys.executable, "-m", module, "--worker", *args]


def run_worker(module: str, *args: str, timeout: float) -> dict[str, Any]:
    """A worker in a fresh process, to its end; its `emit`ted result."""
    completed = subprocess.run(
        worker_command(module, *args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed with exit code {completed.returncode}")
    return parse_worker_output(completed.stdout)


# -- this process ------------------------------------------------------------------------------


def vm_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc/self/status, in MB; 0 without."""
    with contextlib.suppress(OSError):
        return status_kb(Path("/proc/self/status").read_text(), field) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MB (VmHWM).

    getrusage's ru_maxrss is the same figure on a process that was not spawned by a larger
    one, but Linux carries the parent's peak into a child across fork + exec (checked: a child
    of a 500 MB parent reports 510 MB), so in a worker it would report the orchestrator's
    peak. VmHWM is reset by exec; ru_maxrss is reported beside it.
    """
    return vm_mb("VmHWM") or ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    times = os.times()
    return times.user + times.system


# -- figures and results ------------------------------------------------------------------------


def rate(rows: int, seconds: float) -> dict[str, float]:
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds > 0 else 0.0,
        "us_per_row": 1e6 * seconds / rows if rows else 0.0,
    }


def met(value: float | None, target: float, at_least: bool) -> bool | None:
    """Whether `value` meets `target` (None when there is no value)."""
    if value is None:
        return None
    return value >= target if at_least else value <= target


def _git(*args: str) -> str:
    """What `git args` prints in this checkout, stripped."""
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def machine_info(*packages: str) -> dict[str, Any]:
    """The machine, Python and library versions (and `packages`'), the commit, the load."""
    import confluent_kafka

    versions = {}
    for name in ("confluent-kafka", "fastavro", "pydantic", "quixstreams", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    versions["sqlite"] = sqlite3.sqlite_version
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "git_uncommitted_changes": dirty,
    }


def write_results(out: Path, results: dict[str, Any]) -> None:
    """The run's JSON result file (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")


def profile_path(out: Path) -> Path:
    """Where a `--profile` run keeps its pstats, beside the results file `out`."""
    path = out.with_name(out.stem + "-profile.pstats")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_profile_report(pstats_path: Path, head: str, top: int = 40) -> Path:
    """`head`, then the `top` functions by own and by cumulative time, in a .txt beside the
    pstats file; prints `head` and where both are."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(pstats_path), stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    report = pstats_path.with_suffix(".txt")
    report.write_text(head + "\n\n" + text.getvalue())
    print(head)
    print(f"profile: {pstats_path} (pstats) and {report} (summary, top {top} functions)")
    return report


def finish(out: Path, results: dict[str, Any], summary: str) -> int:
    """Write the results, print the run's summary table and where the results went."""
    write_results(out, results)
    print(summary)
    print(f"results: {out}")
    return 0


def produce_in_transactions(
    producer: Any,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    total: int,
    chunk: int,
    commit: Callable[[], None],
) -> tuple[float, int]:
    """`total` messages (cycling through `messages`) on a transactional `producer`, `chunk`
    per transaction ended by `commit()`, as the tailer produces: a full queue is drained by
    polling, never dropped. Seconds taken and transactions committed."""
    produce, poll, count = producer.produce, producer.poll, len(messages)
    started = time.perf_counter()
    sent = transactions = 0
    while sent < total:
        end = min(sent + chunk, total)
        producer.begin_transaction()
        for i in range(sent, end):
            key, value = messages[i % count]
            while True:
                try:
                    produce(topic, value=value, key=key)
                    break
                except BufferError:
                    poll(0.05)
        commit()
        transactions += 1
        sent = end
    return time.perf_counter() - started, transactions


# -- the local stack -----------------------------------------------------------------------------


def connection():
    """Connection settings as the components load them (environment, then defaults)."""
    from sensorstream.settings import ConnectionSettings, load_settings

    return load_settings(ConnectionSettings)


def delete_topics(topics: list[str]) -> None:
    """Delete a run's topics and their value subjects; what fails to go is left."""
    from confluent_kafka.admin import AdminClient

    from schemas.registry import SchemaRegistry

    if not topics:
        return
    admin = AdminClient(connection().kafka_client_config())
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(30)
    client = SchemaRegistry(connection().schema_registry_config()).client
    for topic in topics:
        with contextlib.suppress(Exception):
            client.delete_subject(f"{topic}-value")
