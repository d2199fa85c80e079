"""`sensorstream demo`: bring the local stack up, push readings through it, summarise.

For now the round trip is the smoke path (registry -> Kafka transaction -> Delta on S3); the
producer, router and sink replace it as they land.
"""

from __future__ import annotations

import sys
import time
import uuid

from infra.local_stack.smoke import run_round_trip
from infra.local_stack.stack import LocalStack
from sensorstream.settings import ConnectionSettings


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def run_demo(duration_s: float) -> int:
    started = time.monotonic()
    stack = LocalStack()
    _say("starting the local stack (first run downloads pinned servers into the cache)")
    statuses = stack.up(progress=_say)
    connection = ConnectionSettings(**{k.lower(): v for k, v in stack.exports().items()})
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    result = run_round_trip(connection, run_id, count=max(100, int(duration_s * 50)), progress=_say)

    print()
    print("sensorstream demo: summary")
    print(f"  {'server':<16}{'version':<18}{'port':<7}{'memory':>8}")
    for s in statuses:
        rss = f"{s.rss_mb:.0f} MB" if s.rss_mb else "-"
        print(f"  {s.name:<16}{s.version:<18}{s.port:<7}{rss:>8}")
    print()
    print(f"  topic            {result.topic} (schema id {result.schema_id})")
    print(f"  produced         {result.produced} readings, one Kafka transaction")
    print(f"  consumed         {result.consumed} readings, read_committed")
    print(f"  delta table      {result.table_uri} (version {result.table_version})")
    print(f"  rows in table    {result.table_rows}")
    print(
        f"  round trip       {result.seconds:.1f} s; whole demo {time.monotonic() - started:.1f} s"
    )
    print()
    print(
        '  query it:  uv run python -c "from deltalake import DeltaTable; import os; '
        f"print(DeltaTable('{result.table_uri}', storage_options={{k: os.environ[k] for k in "
        "os.environ if k.startswith('AWS_')}).to_pyarrow_table().slice(0, 5))\""
    )
    print('  (after: eval "$(uv run sensorstream stack env)"; stop with: make stack-down)')
    ok = result.produced == result.consumed == result.table_rows
    if not ok:
        print("  MISMATCH: produced, consumed and landed counts differ", file=sys.stderr)
    return 0 if ok else 1
