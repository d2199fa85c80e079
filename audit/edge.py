"""Row-level reconciliation at the edge: every source row of a node's SQLite table is in `raw`
exactly once or in the producer's dead letters (with its reason), never both, never neither.

The lake is read for this node only, column-pruned; the database is opened read-only, so the
check runs on a live edge node. Rows after the producer's checkpoint are not yet sent (the
producer is behind, or stopped), and rows a stage still holds are in flight (`audit.in_flight`):
both are counted, not reported, unless the pipeline is said to be settled. Rowids the lake
holds that the database no longer has were pruned at the edge after shipping: counted, not
reported.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from audit.findings import SAMPLE, AuditReport
from audit.in_flight import InFlight
from audit.lake import DEAD_LETTERS, NODE, RAW, ROUTING_VERSION, ROWID, TABLE, LakeTable
from schemas.sqlite_columns import quote_identifier, user_tables

RouteDecision = tuple[set[str], dict[str, str]]
"""The tables a record's routes select, and the routes that dead-letter it (route -> reason)."""
Routing = Callable[[int], Callable[[Mapping[str, Any]], RouteDecision] | None]
"""Routing version -> what that version's rules decide for a record (None: version unknown)."""


class EdgeUsageError(Exception):
    """The database or table cannot be read: a usage error (exit 2), with the remedy."""


@dataclass(frozen=True)
class EdgeRow:
    """One source row that is not where exactly-once says it must be."""

    node_id: str
    source_table: str
    rowid: int
    problem: str  # "missing", "duplicated in raw (xN)", "in raw and dead-lettered: reason"

    def __str__(self) -> str:
        return f"{self.node_id}/{self.source_table} rowid {self.rowid}: {self.problem}"


@dataclass
class EdgeTally:
    node_id: str
    source_table: str
    source_rows: int
    checked: int  # rows up to the checkpoint
    in_raw: int
    dead_lettered: int
    not_yet_sent: int
    pruned_at_edge: int  # rowids in the lake that the database no longer holds
    dead_letter_reasons: dict[str, int]
    route_checked: int = 0  # raw rows whose routes were checked against the routed tables
    route_unknown_version: int = 0  # raw rows without a routing version the audit knows
    route_dead_letters: dict[str, int] = field(default_factory=dict)  # route -> rows
    in_flight: int = 0  # sent, in neither raw nor the dead letters yet, but held by a stage
    route_in_flight: int = 0  # rows not yet in a routed table that selects them, held by a stage


def source_rowids(db: Path, table: str | None) -> dict[str, list[int]]:
    """The rowids of `table` (None: every user table) of the database, read-only."""
    if not db.exists():
        raise EdgeUsageError(f"{db}: no such database; give the edge node's SQLite file")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise EdgeUsageError(f"{db}: cannot open it read-only ({exc})") from None
    try:
        tables = [table] if table else user_tables(conn)
        rowids = {}
        for name in tables:
            try:
                cursor = conn.execute(f"SELECT rowid FROM {quote_identifier(name)} ORDER BY 1")
            except sqlite3.Error as exc:
                raise EdgeUsageError(
                    f"{db}: cannot read table {name} ({exc}); name an existing table with --table"
                ) from None
            rowids[name] = [row[0] for row in cursor]
        return rowids
    finally:
        conn.close()


def _mine(node_id: str, table: str) -> Callable[[pa.Table], pa.Table]:
    def keep(data: pa.Table) -> pa.Table:
        if NODE not in data.column_names or TABLE not in data.column_names:
            return data.slice(0, 0)
        return data.filter(
            pc.and_(
                pc.equal(pc.cast(data[NODE], pa.string()), node_id),
                pc.equal(pc.cast(data[TABLE], pa.string()), table),
            )
        )

    return keep


def _lake_rowids(lake: LakeTable | None, node_id: str, table: str) -> Counter[int]:
    if lake is None:
        return Counter()
    return Counter(lake.read([NODE, TABLE, ROWID], None, _mine(node_id, table))[ROWID].to_pylist())


def _dead_letters(dlq: LakeTable | None, node_id: str, table: str) -> dict[int, list[str]]:
    """This node's producer dead letters of `table`: rowid -> the reason of each letter."""
    if dlq is None:
        return {}
    data = dlq.read(["stage", "error", "source"])
    letters: dict[int, list[str]] = {}
    for stage, error, source in zip(
        *(data[c].to_pylist() for c in ("stage", "error", "source")), strict=True
    ):
        if stage != "producer":
            continue
        try:
            where = json.loads(source or "{}")
            if where.get("node_id") != node_id or where.get("table") != table:
                continue
            letters.setdefault(int(where["rowid"]), []).append(error or "")
        except (ValueError, KeyError):
            continue
    return letters


def _check_routes(
    tables: list[LakeTable],
    node_id: str,
    name: str,
    rowids: set[int],
    routing: Routing,
    tally: EdgeTally,
    in_flight: InFlight | None,
    letters: Counter[tuple[str, int]] | None,
) -> list[EdgeRow]:
    """Each raw row of these rowids is in each routed table exactly when the rules of the
    routing version that routed it (its `_routing_version`) select it; with `letters` (route,
    rowid -> router dead letters), in the dead letters once for each route that refuses it."""
    by_name = {t.name: t for t in tables}
    raw = by_name[RAW]
    expected_letters: set[tuple[str, int]] = set()
    routed = {
        t.name: _lake_rowids(t, node_id, name) for t in tables if t.name not in (RAW, DEAD_LETTERS)
    }
    rows = raw.read(sorted(raw.columns), None, _mine(node_id, name)).to_pylist()
    found: list[EdgeRow] = []
    deciders: dict[int, Callable[[Mapping[str, Any]], RouteDecision] | None] = {}
    for row in rows:
        rowid = row[ROWID]
        if rowid not in rowids:
            continue
        version = row.get(ROUTING_VERSION)
        if version is None:
            tally.route_unknown_version += 1
            continue
        if version not in deciders:
            deciders[version] = routing(version)
        decide = deciders[version]
        if decide is None:
            tally.route_unknown_version += 1
            continue
        selected, failed = decide(row)
        selected = selected - {RAW, DEAD_LETTERS}
        tally.route_checked += 1
        for route in failed:
            tally.route_dead_letters[route] = tally.route_dead_letters.get(route, 0) + 1
            expected_letters.add((route, rowid))
            n = 0 if letters is None else letters.get((route, rowid), 0)
            if letters is None or n == 1:
                continue
            if n == 0 and in_flight and in_flight.holds((node_id, name, rowid), [DEAD_LETTERS]):
                tally.route_in_flight += 1
                continue
            what = "not in the dead letters" if n == 0 else f"dead-lettered {n} times"
            problem = f"{what}, which route {route} of routing version {version} sends it to once"
            found.append(EdgeRow(node_id, name, rowid, problem))
        for table_name, copies in routed.items():
            n = copies.get(rowid, 0)
            late = n == 0 and in_flight is not None
            if (
                table_name in selected
                and late
                and in_flight.holds((node_id, name, rowid), [table_name])
            ):
                tally.route_in_flight += 1
            elif table_name in selected and n != 1:
                what = "missing from" if n == 0 else f"{n} times in"
                problem = f"{what} {table_name}, which routing version {version} selects it for"
                found.append(EdgeRow(node_id, name, rowid, problem))
            elif table_name not in selected and n:
                problem = f"in {table_name}, which routing version {version} does not select it for"
                found.append(EdgeRow(node_id, name, rowid, problem))
        for table_name in selected - set(routed):
            if in_flight and in_flight.holds((node_id, name, rowid), [table_name]):
                tally.route_in_flight += 1
                continue
            problem = f"no table {table_name}, which routing version {version} selects it for"
            found.append(EdgeRow(node_id, name, rowid, problem))
    checked = {row[ROWID] for row in rows if row[ROWID] in rowids}
    for route, rowid in sorted(set(letters or ()) - expected_letters):
        if rowid in checked:
            problem = f"dead-lettered by route {route}, which its routing version does not fail"
            found.append(EdgeRow(node_id, name, rowid, problem))
    return found


Decode = Callable[[bytes | None], Mapping[str, Any] | None]
"""A Kafka message value -> the record it holds (None: not a record of ours)."""


def _router_letters(dlq: LakeTable | None, node_id: str, table: str, decode: Decode):
    """This node's router dead letters of `table`: (route, rowid) -> letters. The letter keeps
    the record as it arrived, so its source row is in the record itself."""
    letters: Counter[tuple[str, int]] = Counter()
    if dlq is None:
        return letters
    data = dlq.read(["stage", "headers", "message_value"])
    for stage, headers, value in zip(
        *(data[c].to_pylist() for c in ("stage", "headers", "message_value")), strict=True
    ):
        if stage != "router":
            continue
        record = decode(value)
        if not record or record.get(NODE) != node_id or record.get(TABLE) != table:
            continue
        try:
            route = json.loads(headers or "{}").get("sensorstream.route")
        except ValueError:
            route = None
        if route and isinstance(record.get(ROWID), int):
            letters[(route, record[ROWID])] += 1
    return letters


def audit_edge(
    report: AuditReport,
    tables: list[LakeTable],
    db: Path,
    node_id: str,
    table: str | None,
    routing: Routing | None = None,
    in_flight: InFlight | None = None,
    decode: Decode | None = None,
) -> list[EdgeTally]:
    """Check every source row of `db` against the lake; findings go to `report.edge`.

    With `routing`, each row of raw is also checked in every routed table, and with `decode`
    (to read the records router dead letters keep) in the dead letters of each route that
    refuses it; `in_flight` tells rows still on their way from missing ones.
    """
    by_name = {t.name: t for t in tables}
    raw, dlq = by_name.get(RAW), by_name.get(DEAD_LETTERS)
    sent = {(t.node_id, t.source_table): t for t in report.tallies}
    tallies = []
    for name, rowids in source_rowids(db, table).items():
        landed = _lake_rowids(raw, node_id, name)
        letters = _dead_letters(dlq, node_id, name)
        tally = sent.get((node_id, name))
        last = tally.last_rowid if tally is not None and tally.last_rowid is not None else None
        checked = [r for r in rowids if last is None or r <= last]
        found: list[EdgeRow] = []
        held = 0
        for rowid in checked:
            copies, dead = landed.get(rowid, 0), letters.get(rowid, [])
            if copies == 1 and not dead:
                continue
            if copies == 0 and len(dead) == 1:
                continue
            key = (node_id, name, rowid)
            if not (copies or dead) and in_flight and in_flight.holds(key, (RAW, DEAD_LETTERS)):
                held += 1
                continue
            if copies == 0 and not dead:
                problem = "missing: neither in raw nor in the dead letters"
            elif copies and dead:
                problem = f"in raw and dead-lettered ({dead[0]})"
            elif copies > 1:
                problem = f"duplicated in raw (x{copies})"
            else:
                problem = f"dead-lettered {len(dead)} times ({dead[0]})"
            found.append(EdgeRow(node_id, name, rowid, problem))
        present = set(rowids)
        reasons = Counter(letters[r][0].split(":", 1)[0] for r in letters if r in present)
        edge_tally = EdgeTally(
            node_id,
            name,
            source_rows=len(rowids),
            checked=len(checked),
            in_raw=sum(1 for r in checked if r in landed),
            dead_lettered=sum(1 for r in checked if r in letters),
            not_yet_sent=len(rowids) - len(checked),
            pruned_at_edge=sum(1 for r in landed if r not in present),
            dead_letter_reasons=dict(reasons),
            in_flight=held,
        )
        if routing is not None and raw is not None:
            router_letters = None if decode is None else _router_letters(dlq, node_id, name, decode)
            found += _check_routes(
                tables, node_id, name, set(checked), routing, edge_tally, in_flight, router_letters
            )
        report.edge_count += len(found)
        room = SAMPLE - len(report.edge)
        report.edge.extend(found[: max(room, 0)])
        report.edge_tallies.append(edge_tally)
        tallies.append(edge_tally)
    return tallies
