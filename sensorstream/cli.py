"""The `sensorstream` command. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config.

Each subcommand parses its flags here and calls into one component; no pipeline logic lives
in this module, so the components stay usable (and testable) without the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable, Sequence

from sensorstream.errors import ConfigError, PipelineError

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


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

    return run_demo(duration_s=args.duration)


def build_parser() -> argparse.ArgumentParser:
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
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.set_defaults(handler=_demo_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
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
