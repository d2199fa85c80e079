"""Which rows each Delta table must hold, derived from the SQLite sources, and what it holds.

The expectation is computed the way the product would route each row, but without Kafka: every
source row is converted by the producer's own `RowConverter`, passed through an Avro round trip
(so the record is what a consumer decodes), then routed by the product's routing engine with
the routing file, and mapped to its table by the sink's own topic-to-table rule. A route
failure is a dead letter the DLQ table must hold. Each row is identified by what the lake keeps
of its source, (`_node_id`, `_source_rowid`), so the comparison is exact: a missing row, a
duplicated row and a row that should not be there are each named.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from infra.local_stack.pipeline import EdgeNode

DLQ_TABLE = "dlq"
CHUNK_ROWS = 5000

# (node id, rowid); in the DLQ table (route, node id, rowid), or (stage, node id, rowid) for
# what the producer or the sink dead-lettered themselves.
Identity = tuple[Any, ...]


@dataclass
class TableCheck:
    """One table: how many rows it must hold, how many it holds, and what is wrong."""

    table: str
    expected: int
    landed: int
    missing: list[Identity] = field(default_factory=list)
    duplicated: list[Identity] = field(default_factory=list)
    unexpected: list[Identity] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def describe(self, sample: int = 5) -> str:
        line = f"{self.table:<24} expected {self.expected:>8,}  landed {self.landed:>8,}"
        if self.ok:
            return line + "  OK"
        parts = []
        for label, items in (
            ("missing", self.missing),
            ("duplicated", self.duplicated),
            ("unexpected", self.unexpected),
        ):
            if items:
                parts.append(f"{len(items):,} {label} (e.g. {sorted(items)[:sample]})")
        return line + "  " + "; ".join(parts)

    def counts(self) -> dict[str, object]:
        """The check as numbers, for a benchmark's JSON result."""
        return {
            "table": self.table,
            "expected": self.expected,
            "landed": self.landed,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
            "ok": self.ok,
        }


def _routing(path: Path, schema: dict[str, Any]) -> Any:
    from schemas.value_schema import PROVENANCE_NAMES, curated_schema
    from stream_apps.routing.config import load_routing

    fields = {f["name"] for f in curated_schema()["fields"]} | set(PROVENANCE_NAMES)
    fields |= {f["name"] for f in schema["fields"]}
    return load_routing(path, fields)


def expected_rows(nodes: Iterable[EdgeNode], routes_file: Path) -> dict[str, set[Identity]]:
    """Table name (as the sink names it: `raw`, `regional/<region>`, `dlq`) -> the identities
    of the rows it must hold, for every row of every node's database."""
    from fastavro import schemaless_reader, schemaless_writer

    from producers.source import SQLiteSource
    from schemas.coercions import BadRow, RowConverter
    from schemas.value_schema import parsed_schema, value_schema_for
    from sinks.settings import SinkSettings
    from sinks.tables import target_for

    sink_settings = SinkSettings()
    tables: dict[str, set[Identity]] = defaultdict(set)
    table_of: dict[str, str] = {}
    for node in nodes:
        source = SQLiteSource(node.db).open()
        try:
            schema = value_schema_for(source.table, source.columns, source.timestamp_column)
            parsed = parsed_schema(schema)
            routing = _routing(routes_file, schema)
            converter = RowConverter(
                schema,
                source.columns,
                node_id=node.node_id,
                region=node.region,
                source_table=source.table,
            )
            rowid = 0
            while rows := source.rows_after(rowid, CHUNK_ROWS):
                for row in rows:
                    rowid = row[0]
                    try:
                        record = converter.convert(row[1:], rowid)
                    except BadRow:
                        tables[DLQ_TABLE].add(("producer", node.node_id, rowid))
                        continue
                    buffer = BytesIO()
                    schemaless_writer(buffer, parsed, record)
                    buffer.seek(0)
                    decoded = schemaless_reader(buffer, parsed, None)
                    result = routing.route(decoded)
                    for output in result.outputs:
                        name = table_of.get(output.topic)
                        if name is None:
                            name = target_for(output.topic, sink_settings, "lake").name
                            table_of[output.topic] = name
                        tables[name].add((node.node_id, rowid))
                    for failure in result.dead_letters:
                        tables[DLQ_TABLE].add((failure.route, node.node_id, rowid))
        finally:
            source.close()
    return dict(tables)


def _table(uri: str, options: dict[str, str] | None, columns: list[str]) -> Any | None:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        return None
    return table.to_pyarrow_dataset().to_table(columns=columns)


def landed_rows(
    lake_uri: str, options: dict[str, str] | None, tables: Iterable[str], registry_url: str
) -> dict[str, Counter[Identity]]:
    """Table name -> how often each identity is in it (a Counter, so duplicates show).

    DLQ rows are identified by the route that failed (a header) and the source record,
    decoded from the original message bytes the dead letter keeps.
    """
    lake = lake_uri.rstrip("/")
    landed: dict[str, Counter[Identity]] = {}
    for name in tables:
        if name == DLQ_TABLE:
            landed[name] = _dead_letters(f"{lake}/{name}", options, registry_url)
            continue
        table = _table(f"{lake}/{name}", options, ["_node_id", "_source_rowid"])
        if table is None:
            landed[name] = Counter()
            continue
        landed[name] = Counter(
            zip(table["_node_id"].to_pylist(), table["_source_rowid"].to_pylist(), strict=True)
        )
    return landed


def _dead_letters(uri: str, options: dict[str, str] | None, registry_url: str) -> Counter[Identity]:
    from schemas.avro_codec import AvroDecoder, UndecodableMessage
    from schemas.registry import SchemaRegistry

    table = _table(uri, options, ["stage", "headers", "message_value"])
    found: Counter[Identity] = Counter()
    if table is None:
        return found
    decoder = AvroDecoder(SchemaRegistry({"url": registry_url}))
    for stage, headers, value in zip(
        table["stage"].to_pylist(),
        table["headers"].to_pylist(),
        table["message_value"].to_pylist(),
        strict=True,
    ):
        names = json.loads(headers or "{}")
        if stage != "router":  # the producer's rows it could not convert; the sink's own
            rowid = names.get("dlq.source.rowid") or "0"
            found[(stage, names.get("dlq.source.node_id") or "", int(rowid))] += 1
            continue
        route = names.get("sensorstream.route", "")
        try:
            _, record = decoder.decode(value)
        except UndecodableMessage:
            found[(route, "?", 0)] += 1
            continue
        found[(route, record.get("_node_id"), record.get("_source_rowid"))] += 1
    return found


def compare(
    expected: dict[str, set[Identity]], landed: dict[str, Counter[Identity]]
) -> list[TableCheck]:
    """Per table, in name order: expected against landed, identity by identity."""
    checks = []
    for name in sorted(set(expected) | set(landed)):
        want = expected.get(name, set())
        have = landed.get(name, Counter())
        checks.append(
            TableCheck(
                table=name,
                expected=len(want),
                landed=sum(have.values()),
                missing=[i for i in want if i not in have],
                duplicated=[i for i, n in have.items() if n > 1],
                unexpected=[i for i in have if i not in want],
            )
        )
    return checks
