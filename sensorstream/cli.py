"""The `sensorstream` command. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config.

Each subcommand parses its flags here and calls into one component; no pipeline logic lives
in this module, so the components stay usable (and testable) without the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sensorstream.errors import ConfigError, PipelineError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

# The extra of pyproject.toml that installs each command's libraries (README.md, "Install"):
# an edge node installs `sensorstream[producer]`, without the hub's.
COMMAND_EXTRAS = {
    "simulate": "producer",
    "produce": "producer",
    "route": "router",
    "routes": "router",
    "sink": "sink",
    "compact": "sink",
    "vacuum": "sink",
    "audit": "audit",
}
ROLE_LIBRARIES = {"httpx", "quixstreams", "deltalake", "polars", "pyarrow"}
# Development tooling: in the source checkout, not in the wheel.
DEV_TOOLING = {"infra", "benchmarks"}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stack_command(args: argparse.Namespace) -> int:
    from infra.local_stack.stack import LocalStack

    stack = LocalStack()
    if args.action == "up":
        statuses = stack.up(progress=lambda line: _stderr(f"stack: {line}"))
        _print_status(statuses)
    elif args.action == "down":
        stopped = stack.down()
        _stderr(f"stack: stopped {', '.join(stopped)}" if stopped else "stack: nothing running")
    elif args.action == "status":
        statuses = stack.status()
        if args.json:
            print(json.dumps([dataclasses.asdict(s) for s in statuses], indent=2))
        else:
            _print_status(statuses)
        return EXIT_OK if all(s.state == "ready" for s in statuses) else 3
    elif args.action == "env":
        for key, value in stack.exports().items():
            print(f"export {key}={shlex.quote(value)}")
    return EXIT_OK


def _print_status(statuses) -> None:
    rows = [("SERVER", "VERSION", "STATE", "PID", "PORT", "RSS", "LOG")]
    for s in statuses:
        rss = f"{s.rss_mb:.0f} MB" if s.rss_mb is not None else "-"
        rows.append((s.name, s.version, s.state, str(s.pid or "-"), str(s.port), rss, s.log))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _demo_command(args: argparse.Namespace) -> int:
    from infra.local_stack.demo import run_demo

    return run_demo(duration_s=args.duration, rate=args.rate, hard_exit=True)


def _simulate_command(args: argparse.Namespace) -> int:
    import threading

    from producers.simulator import SimulatorSettings, run_simulator
    from sensorstream.settings import load_settings
    from sensorstream.shutdown import stop_on_signals

    settings = load_settings(
        SimulatorSettings,
        config_file=args.config,
        section="simulator",
        overrides={
            "db": args.db,
            "sensors": args.sensors,
            "rate": args.rate,
            "count": args.count,
            "duration": args.duration,
            "seed": args.seed,
            "region": args.region,
            "anomaly_probability": args.anomaly_probability,
        },
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        result = run_simulator(
            settings, stop=stop, progress=lambda line: _stderr(f"simulate: {line}")
        )
    print(result.summary(), flush=True)
    return EXIT_OK


def _metrics_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"metrics_port": args.metrics_port, "metrics_host": args.metrics_host}


def _produce_command(args: argparse.Namespace) -> int:
    import threading

    from producers.metrics import ProducerMetrics
    from producers.settings import ProducerSettings
    from producers.tailer import EdgeTailer
    from sensorstream.logs import configure
    from sensorstream.metrics import MetricFamilies, serve_metrics
    from sensorstream.settings import ConnectionSettings, load_settings
    from sensorstream.shutdown import stop_on_signals

    settings = load_settings(
        ProducerSettings,
        config_file=args.config,
        section="producer",
        overrides={
            "sqlite": args.sqlite,
            "table": args.table,
            "timestamp_col": args.timestamp_col,
            "node_id": args.node_id,
            "region": args.region,
            "on_recreated": args.on_recreated,
            "renamed_from": args.renamed_from,
            "distinct_from": args.distinct_from,
            "on_rowid_reuse": args.on_rowid_reuse,
            "once": True if args.once else None,
            **_metrics_overrides(args),
        },
    )
    connection = load_settings(ConnectionSettings, config_file=args.config)
    configure()
    stop = threading.Event()
    families = MetricFamilies()
    with serve_metrics(families.registry, settings), stop_on_signals(stop):
        result = EdgeTailer(settings, connection, stop, ProducerMetrics(families)).run()
    print(
        f"produced {result.rows} rows ({result.dead_letters} to the dead-letter topic) in "
        f"{result.transactions} transactions, through rowid {result.last_rowid}, "
        f"{result.seconds:.1f} s",
        flush=True,
    )
    return EXIT_OK


def _route_command(args: argparse.Namespace) -> int:
    from sensorstream.logs import configure
    from sensorstream.metrics import MetricFamilies, serve_metrics
    from sensorstream.settings import ConnectionSettings, load_settings
    from stream_apps.app import RouterApp
    from stream_apps.metrics import RouterMetrics
    from stream_apps.settings import RouterSettings

    settings = load_settings(
        RouterSettings,
        config_file=args.config,
        section="router",
        overrides={
            "routes": args.routes,
            "once": True if args.once else None,
            **_metrics_overrides(args),
        },
    )
    connection = load_settings(ConnectionSettings, config_file=args.config)
    configure()
    families = MetricFamilies()
    # quixstreams handles SIGINT/SIGTERM itself: it finishes the checkpoint, then returns.
    with serve_metrics(families.registry, settings):
        result = RouterApp(settings, connection, RouterMetrics(families)).run()
    print(
        f"routed {result.routed} records ({result.dead_letters} dead letters) with routing "
        f"version {result.routes_version}, {result.seconds:.1f} s",
        flush=True,
    )
    return EXIT_OK


def _routes_command(args: argparse.Namespace) -> int:
    from sensorstream.settings import ConnectionSettings, load_settings
    from stream_apps.settings import RouterSettings
    from stream_apps.versions import RoutingVersions

    settings = load_settings(RouterSettings, config_file=args.config, section="router")
    connection = load_settings(ConnectionSettings, config_file=args.config)
    versions = RoutingVersions(settings, connection)
    if args.action == "apply":
        if args.target is None:
            raise ConfigError("routes apply needs the routing FILE to apply")
        path = Path(args.target)
        version, new = versions.apply(path)
        if new:
            print(f"applied {path} as routing version {version.version}")
        else:
            print(f"{path} is already routing version {version.version}; nothing applied")
        return EXIT_OK
    if args.action == "rollback":
        number = _version_number(args, required=True)
        version, new = versions.rollback(number)
        if new:
            print(f"rolled back to version {number} as routing version {version.version}")
        else:
            print(
                f"routing version {version.version} is version {number}'s content already; "
                "nothing applied"
            )
        return EXIT_OK
    if args.action == "history":
        print(f"{'VERSION':<8} {'APPLIED AT':<26} {'BY':<16} {'HASH':<13} SOURCE")
        for v in versions.history():
            print(
                f"{v.version:<8} {v.applied_at:<26} {v.applied_by:<16} "
                f"{v.content_hash[:12]:<13} {v.source}"
            )
        return EXIT_OK
    number = _version_number(args, required=False)
    if number is not None:
        shown = versions.version(number)
    else:
        shown = versions.latest()
        if shown is None:
            print("no routing version has been applied yet")
            return EXIT_OK
    print(
        f"# routing version {shown.version}, applied {shown.applied_at} by "
        f"{shown.applied_by} from {shown.source}"
    )
    print(shown.content, end="" if shown.content.endswith("\n") else "\n")
    return EXIT_OK


def _version_number(args: argparse.Namespace, *, required: bool) -> int | None:
    if args.target is None:
        if required:
            raise ConfigError(f"routes {args.action} needs the version N (see `routes history`)")
        return None
    if not args.target.isdigit() or int(args.target) < 1:
        raise ConfigError(
            f"routes {args.action}: '{args.target}' is not a version number (see `routes history`)"
        )
    return int(args.target)


def _sink_command(args: argparse.Namespace) -> int:
    import threading

    from sensorstream.logs import configure
    from sensorstream.metrics import MetricFamilies, serve_metrics
    from sensorstream.settings import ConnectionSettings, load_settings
    from sensorstream.shutdown import stop_on_signals
    from sinks.app import DeltaSink, describe
    from sinks.metrics import SinkMetrics
    from sinks.settings import SinkSettings

    settings = load_settings(
        SinkSettings,
        config_file=args.config,
        section="sink",
        overrides={"once": True if args.once else None, **_metrics_overrides(args)},
    )
    connection = load_settings(ConnectionSettings, config_file=args.config)
    configure()
    stop = threading.Event()
    families = MetricFamilies()
    with serve_metrics(families.registry, settings), stop_on_signals(stop):
        result = DeltaSink(settings, connection, stop, SinkMetrics(families)).run()
    print(describe(result), flush=True)
    return EXIT_OK


def _compact_command(args: argparse.Namespace) -> int:
    from sensorstream.settings import ConnectionSettings, load_settings
    from sinks.maintenance import compact

    connection = load_settings(ConnectionSettings, config_file=args.config)
    result = compact(args.table_uri, connection.storage_options(), target_size=args.target_size)
    print(f"{args.table_uri}: {result.summary()}", flush=True)
    return EXIT_OK


def _maintain_command(args: argparse.Namespace) -> int:
    import threading

    from sensorstream.logs import configure
    from sensorstream.metrics import MetricFamilies, serve_metrics
    from sensorstream.settings import ConnectionSettings, load_settings
    from sensorstream.shutdown import stop_on_signals
    from sinks.maintain_metrics import MaintainMetrics
    from sinks.maintain_settings import MaintainSettings
    from sinks.maintainer import Maintainer

    settings = load_settings(
        MaintainSettings,
        config_file=args.config,
        section="maintain",
        overrides={
            "interval_s": args.interval_s,
            "window_s": args.window_s,
            "vacuum": True if args.vacuum else None,
            "once": True if args.once else None,
            **_metrics_overrides(args),
        },
    )
    connection = load_settings(ConnectionSettings, config_file=args.config)
    configure()
    stop = threading.Event()
    families = MetricFamilies()
    with serve_metrics(families.registry, settings), stop_on_signals(stop):
        result = Maintainer(settings, connection, stop, MaintainMetrics(families)).run()
    print(result.summary(), flush=True)
    return EXIT_OK


def _vacuum_command(args: argparse.Namespace) -> int:
    from sensorstream.settings import ConnectionSettings, load_settings
    from sinks.maintenance import vacuum

    connection = load_settings(ConnectionSettings, config_file=args.config)
    files = vacuum(
        args.table_uri,
        connection.storage_options(),
        retention_hours=args.retention_hours,
        dry_run=args.dry_run,
        allow_short_retention=args.allow_short_retention,
    )
    if args.dry_run:
        for name in files:
            print(name)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{args.table_uri}: {verb} {len(files)} files", flush=True)
    return EXIT_OK


def _audit_command(args: argparse.Namespace) -> int:
    """Exit 0 when the lake is exact (rows in flight aside, unless --settled), 1 when the
    audit found discrepancies (each listed)."""
    from audit.lake import LakeNotFound, discover_tables
    from audit.report import print_json, print_summary
    from audit.run import audit_lake, open_lake, read_pipeline
    from sensorstream.settings import ConnectionSettings, load_settings
    from sensorstream.topics import PRODUCER_CHECKPOINTS

    if (args.sqlite is None) != (args.node_id is None):
        raise ConfigError(
            "audit: --sqlite and --node-id go together: the edge database and the node id its "
            "producer streams under (the _node_id column of the lake)"
        )
    if args.table is not None and args.sqlite is None:
        raise ConfigError("audit: --table names a table of the --sqlite database; give both")
    connection = load_settings(
        ConnectionSettings, config_file=args.config, overrides={"sensorstream_lake_uri": args.lake}
    )
    lake = connection.lake_uri
    try:
        discover_tables(lake, connection.storage_options())
    except LakeNotFound:
        raise ConfigError(
            f"audit: no lake at {lake}: give the lake's URI with --lake or "
            "SENSORSTREAM_LAKE_URI (a local path or s3://bucket/prefix)"
        ) from None
    topic = args.checkpoint_topic or PRODUCER_CHECKPOINTS
    pipeline = None
    if not args.no_checkpoints:
        # Before the tables are opened: what was sent, then what is still on its way.
        stages = None if args.no_in_flight else _in_flight_stages(args, connection)
        pipeline = read_pipeline(
            connection.kafka_client_config(), topic, connection.schema_registry_config(), stages
        )
    tables = open_lake(lake, connection.storage_options())
    report = audit_lake(lake, tables, None, topic, pipeline=pipeline, settled=args.settled)
    if args.sqlite is not None:
        from audit.edge import EdgeUsageError, audit_edge

        routing = None if args.no_checkpoints else _routing_decisions(args, connection, tables)
        from audit.in_flight import record_decoder

        in_flight = None if pipeline is None else pipeline.in_flight
        decode = (
            None if args.no_checkpoints else record_decoder(connection.schema_registry_config())
        )
        try:
            audit_edge(
                report, tables, args.sqlite, args.node_id, args.table, routing, in_flight, decode
            )
        except EdgeUsageError as exc:
            raise ConfigError(f"audit: {exc}") from None
    (print_json if args.json else print_summary)(report, sys.stdout)
    return report.exit_code


def _in_flight_stages(args: argparse.Namespace, connection):
    """Where rows wait on their way to the lake: the router group on its input topic, the sink
    group on each topic it lands (the same settings the router and the sink read)."""
    from audit.in_flight import pipeline_stages
    from sensorstream.settings import load_settings
    from sensorstream.topics import READINGS
    from sinks.settings import SinkSettings
    from sinks.tables import target_for
    from stream_apps.settings import RouterSettings

    router = load_settings(RouterSettings, config_file=args.config, section="router")
    sink = load_settings(SinkSettings, config_file=args.config, section="sink")
    prefix = args.topic_prefix if args.topic_prefix is not None else sink.topic_prefix
    sink = sink.model_copy(update={"topic_prefix": prefix})
    lake = connection.lake_uri
    return pipeline_stages(
        input_topic=args.input_topic or READINGS,
        router_group=router.consumer_group,
        sink_topics=sink.topics,
        sink_group=sink.consumer_group,
        dead_letter_topic=sink.dead_letter_topic,
        table_of=lambda topic: target_for(topic, sink, lake).name,
    )


def _routing_decisions(args: argparse.Namespace, connection, tables):
    """Routing version -> what its rules decide for a record (the Delta tables it selects,
    the routes that dead-letter it), from the routing control topic: for `audit --sqlite`."""
    from sensorstream.settings import load_settings
    from sensorstream.topics import internal_topics
    from sinks.settings import SinkSettings
    from sinks.tables import target_for
    from stream_apps.control import RoutingControl
    from stream_apps.routing.config import parse_routing
    from stream_apps.settings import RouterSettings

    router = load_settings(RouterSettings, config_file=args.config, section="router")
    sink = load_settings(SinkSettings, config_file=args.config, section="sink")
    control_topic = args.control_topic or router.control_topic
    control = RoutingControl(connection.kafka_client_config(), control_topic)
    versions = {v.version: v for v in control.history()}
    # The record's fields: raw holds records unchanged (other tables add route fields).
    fields = next((t.columns for t in tables if t.name == "raw"), set())
    lake = connection.lake_uri

    def decisions(version: int):
        found = versions.get(version)
        if found is None:
            return None
        compiled = parse_routing(
            found.content, f"routing version {version}", fields, internal_topics(control_topic)
        )
        prefix = args.topic_prefix if args.topic_prefix is not None else sink.topic_prefix
        settings = sink.model_copy(update={"topic_prefix": prefix})

        def decide(record):
            result = compiled.route(record)
            selected = {target_for(o.topic, settings, lake).name for o in result.outputs}
            return selected, {f.route: f.reason for f in result.dead_letters}

        return decide

    return decisions


def _add_metrics_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help=f"Prometheus endpoint port; 0 disables it (default {default_port})",
    )
    parser.add_argument(
        "--metrics-host", metavar="ADDR", help="Prometheus endpoint address (default 127.0.0.1)"
    )


def build_parser() -> argparse.ArgumentParser:
    from sensorstream.metrics import (
        MAINTAIN_METRICS_PORT,
        PRODUCER_METRICS_PORT,
        ROUTER_METRICS_PORT,
        SINK_METRICS_PORT,
    )

    parser = argparse.ArgumentParser(
        prog="sensorstream",
        description="Stream sensor readings from edge SQLite into Delta tables, exactly once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser("stack", help="local Kafka + schema registry + S3 server")
    stack.add_argument("action", choices=["up", "down", "status", "env"])
    stack.add_argument("--json", action="store_true", help="status as JSON, for scripts")
    stack.set_defaults(handler=_stack_command)

    demo = sub.add_parser("demo", help="run the pipeline on the local stack and summarise")
    demo.add_argument(
        "--duration", type=float, default=60.0, help="seconds of simulated data (default 60)"
    )
    demo.add_argument(
        "--rate", type=float, default=150.0, help="rows/s per edge node (default 150)"
    )
    demo.set_defaults(handler=_demo_command)

    simulate = sub.add_parser("simulate", help="append simulated sensor readings to SQLite")
    simulate.add_argument("--db", type=Path, help="SQLite database (created if missing)")
    simulate.add_argument("--sensors", type=int, metavar="N", help="sensors (default 5)")
    simulate.add_argument(
        "--rate", type=float, metavar="HZ", help="rows/s across all sensors; 0 = max (default 100)"
    )
    stop_after = simulate.add_mutually_exclusive_group()
    stop_after.add_argument("--count", type=int, metavar="N", help="stop after N rows")
    stop_after.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    simulate.add_argument("--seed", type=int, metavar="N", help="same seed, same rows")
    simulate.add_argument("--region", metavar="R", help="region in sensor ids (default us-east-1)")
    simulate.add_argument(
        "--anomaly-probability", type=float, metavar="P", help="anomalous fraction (default 0.05)"
    )
    simulate.add_argument("--config", type=Path, metavar="FILE", help="YAML, section simulator:")
    simulate.set_defaults(handler=_simulate_command)

    produce = sub.add_parser("produce", help="tail a SQLite table into Kafka, exactly once")
    produce.add_argument("--sqlite", type=Path, metavar="PATH", help="edge SQLite database")
    produce.add_argument("--table", metavar="T", help="table (default: the only user table)")
    produce.add_argument("--timestamp-col", metavar="C", help="event-time column (detected)")
    produce.add_argument("--node-id", metavar="ID", help="this edge node (default: hostname)")
    produce.add_argument("--region", metavar="R", help="region (default: AWS_REGION)")
    produce.add_argument(
        "--on-recreated",
        choices=["fail", "restart"],
        help="a recreated database: stop with an error (default) or stream it from its start",
    )
    produce.add_argument(
        "--renamed-from",
        metavar="OLD_ID",
        help="this node was OLD_ID: continue its checkpoint instead of sending every row again",
    )
    produce.add_argument(
        "--distinct-from",
        metavar="ID",
        help="this database is not node ID's, though it holds a row ID produced",
    )
    produce.add_argument(
        "--on-rowid-reuse",
        choices=["fail", "prune"],
        help="rowids at or below the checkpoint taken by other rows (deleted rows' rowids "
        "reused, VACUUM): stop with an error (default), or, for applications that delete "
        "streamed rows oldest first, stream the new rows once",
    )
    produce.add_argument("--once", action="store_true", help="produce what is there, then exit")
    _add_metrics_flags(produce, PRODUCER_METRICS_PORT)
    produce.add_argument("--config", type=Path, metavar="FILE", help="YAML, section producer:")
    produce.set_defaults(handler=_produce_command)

    route = sub.add_parser("route", help="route readings to their topics (quixstreams)")
    route.add_argument("--routes", type=Path, metavar="FILE", help="routing file to apply first")
    route.add_argument("--once", action="store_true", help="route what is there, then exit")
    _add_metrics_flags(route, ROUTER_METRICS_PORT)
    route.add_argument("--config", type=Path, metavar="FILE", help="YAML, section router:")
    route.set_defaults(handler=_route_command)

    routes = sub.add_parser("routes", help="show, apply, list or roll back routing versions")
    routes.add_argument("action", choices=["show", "apply", "history", "rollback"])
    routes.add_argument(
        "target",
        nargs="?",
        metavar="FILE|N",
        help="apply: the routing FILE; show: version N (default the latest); rollback: "
        "version N, published again as a new version",
    )
    routes.add_argument("--config", type=Path, metavar="FILE", help="YAML, section router:")
    routes.set_defaults(handler=_routes_command)

    sink = sub.add_parser("sink", help="land routed topics in Delta tables, exactly once")
    sink.add_argument(
        "--once",
        action="store_true",
        help="land what is there when it starts (each partition up to its end at "
        "assignment), then exit",
    )
    _add_metrics_flags(sink, SINK_METRICS_PORT)
    sink.add_argument("--config", type=Path, metavar="FILE", help="YAML, section sink:")
    sink.set_defaults(handler=_sink_command, hard_exit=True)

    compact = sub.add_parser("compact", help="merge a Delta table's small files")
    compact.add_argument("table_uri", metavar="TABLE_URI", help="local path or s3://bucket/path")
    compact.add_argument(
        "--target-size", type=int, metavar="BYTES", help="file size to aim for (default 100 MB)"
    )
    compact.add_argument("--config", type=Path, metavar="FILE", help="YAML, connection settings")
    compact.set_defaults(handler=_compact_command)

    maintain = sub.add_parser(
        "maintain", help="compact (and optionally vacuum) every Delta table of the lake, always"
    )
    maintain.add_argument(
        "--interval-s", type=float, metavar="S", help="seconds between passes (default 10)"
    )
    maintain.add_argument(
        "--window-s",
        type=float,
        metavar="S",
        help="a partition unwritten this long is closed and merged into big files (default 600)",
    )
    maintain.add_argument(
        "--vacuum", action="store_true", help="also vacuum each table (hourly, 168 h retention)"
    )
    maintain.add_argument(
        "--once", action="store_true", help="compact until the tables meet the targets, then exit"
    )
    _add_metrics_flags(maintain, MAINTAIN_METRICS_PORT)
    maintain.add_argument("--config", type=Path, metavar="FILE", help="YAML, section maintain:")
    maintain.set_defaults(handler=_maintain_command, hard_exit=True)

    vacuum = sub.add_parser("vacuum", help="delete files a Delta table no longer references")
    vacuum.add_argument("table_uri", metavar="TABLE_URI", help="local path or s3://bucket/path")
    vacuum.add_argument(
        "--retention-hours",
        type=int,
        default=168,
        metavar="H",
        help="keep files replaced less than H hours ago (default and minimum 168)",
    )
    vacuum.add_argument("--dry-run", action="store_true", help="list the files, delete nothing")
    vacuum.add_argument(
        "--allow-short-retention",
        action="store_true",
        help="allow under 168 h: breaks readers of older versions and slow writers",
    )
    vacuum.add_argument("--config", type=Path, metavar="FILE", help="YAML, connection settings")
    vacuum.set_defaults(handler=_vacuum_command)

    audit = sub.add_parser(
        "audit", help="prove exactly-once: reconcile what the edge sent with what the lake holds"
    )
    audit.add_argument("--lake", metavar="URI", help="the lake (default: SENSORSTREAM_LAKE_URI)")
    audit.add_argument(
        "--sqlite", type=Path, metavar="PATH", help="check every row of this edge db"
    )
    audit.add_argument("--node-id", metavar="ID", help="the node the --sqlite database belongs to")
    audit.add_argument("--table", metavar="T", help="source table (default: every user table)")
    audit.add_argument("--json", action="store_true", help="the findings as JSON, for scripts")
    audit.add_argument(
        "--checkpoint-topic", metavar="TOPIC", help="producers' checkpoints (default: the usual)"
    )
    audit.add_argument(
        "--control-topic", metavar="TOPIC", help="routing versions, for --sqlite (default: usual)"
    )
    audit.add_argument(
        "--topic-prefix", metavar="P", help="routed topics' prefix, for --sqlite (default: sink's)"
    )
    audit.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="audit the lake alone, without the broker (no per-node counts of rows sent)",
    )
    audit.add_argument(
        "--settled",
        action="store_true",
        help="the pipeline is stopped or drained: rows still in flight or not yet sent are "
        "findings (exit 1); for CI and after a drain",
    )
    audit.add_argument(
        "--no-in-flight",
        action="store_true",
        help="do not read what the router and sink groups have not committed yet: every "
        "absent row is then reported as missing",
    )
    audit.add_argument(
        "--input-topic",
        metavar="TOPIC",
        help="the router's input, for rows in flight (default: usual)",
    )
    audit.add_argument("--config", type=Path, metavar="FILE", help="YAML, connection settings")
    audit.set_defaults(handler=_audit_command)
    return parser


def _check_config_file(path: Path) -> None:
    """Every key of a `--config` file must mean something to some command: one file may
    serve them all, but a typo must stop the command instead of leaving a default in force."""
    from producers.settings import ProducerSettings
    from producers.simulator.settings import SimulatorSettings
    from sensorstream.config_file import read_yaml
    from sensorstream.settings import ConnectionSettings, check_config_keys
    from sinks.maintain_settings import MaintainSettings
    from sinks.settings import SinkSettings
    from stream_apps.settings import RouterSettings

    sections = {
        "simulator": SimulatorSettings,
        "producer": ProducerSettings,
        "router": RouterSettings,
        "sink": SinkSettings,
        "maintain": MaintainSettings,
    }
    check_config_keys(
        read_yaml(path), top_level=[ConnectionSettings, *sections.values()], sections=sections
    )


def _hard_exit(code: int) -> None:
    """End the process with `code` once the logs and output are out, skipping interpreter
    teardown.

    A sink that failed after its object-store retry budget leaves the abandoned attempt on a
    daemon thread inside deltalake's native code, and deltalake's runtime can abort the
    interpreter at exit after reading tables over S3 (delta-rs issue 2184): either turned
    the sink's exit 1 (or 0) into a crash (SIGSEGV, exit 139; SIGABRT, exit 134) whose code
    no longer says what happened. Everything the command owns is closed by then.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Called as the program (no `argv`: the console script
    or `python -m sensorstream`), a command that holds native threads (`sink`) ends the
    process itself (`_hard_exit`); called with `argv` (in-process), it returns."""
    from sensorstream.logs import silence_known_warnings

    silence_known_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    code = _run(handler, args)
    if argv is None and getattr(args, "hard_exit", False):
        _hard_exit(code)
    return code


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        if getattr(args, "config", None) is not None:
            _check_config_file(args.config)
        return handler(args)
    except ConfigError as exc:
        _stderr(f"sensorstream: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _stderr("sensorstream: interrupted")
        return 130
    except PipelineError as exc:
        _stderr(f"sensorstream {args.command}: {exc}")
        return EXIT_RUNTIME
    except ModuleNotFoundError as exc:
        remedy = _missing_install(args.command, exc)
        if remedy is None:
            raise
        _stderr(f"sensorstream {args.command}: {remedy}")
        return EXIT_USAGE


def _missing_install(command: str, exc: ModuleNotFoundError) -> str | None:
    """What to install when a command's libraries are not in this install (bad usage: exit
    2); None for any other missing module, which is a bug and stays a traceback."""
    top = (exc.name or "").split(".")[0]
    if top in DEV_TOOLING:
        return (
            f"`{command}` is development tooling (the local stack, the demo), not part of the "
            "installed package: from a source checkout of sensorstream run `make demo`, or "
            f"`uv run sensorstream {command}`"
        )
    if top in ROLE_LIBRARIES and command in COMMAND_EXTRAS:
        return (
            f"this install lacks {top}, which `{command}` needs: "
            f"pip install 'sensorstream[{COMMAND_EXTRAS[command]}]'"
        )
    return None
