"""The lake audit: duplicates in every table, routed rows that are not rows of `raw`, and per
node and source table the producer's own count against the rows the lake holds.

One event-date partition at a time (see `audit.lake`): per partition the keys of `raw` are read
once, checked for duplicates, tallied per node, and every routed table's keys of the same
partition are checked against them. Only what has to be remembered across partitions is kept:
a few numbers per node and the findings themselves.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from audit.checkpoints import SentRows
from audit.findings import (
    SAMPLE,
    AuditReport,
    Copy,
    DeadLetterCount,
    Duplicate,
    NotInRaw,
    Span,
    Tally,
)
from audit.in_flight import InFlight
from audit.lake import (
    DEAD_LETTER_COLUMNS,
    DEAD_LETTERS,
    FILE_INDEX,
    KAFKA,
    KEY,
    NODE,
    RAW,
    ROWID,
    TABLE,
    LakeTable,
)

PRODUCER_STAGE = "producer"
MAX_RANGES = 20


@dataclass
class DeadLetters:
    """The producer's dead letters as (node, table, rowid) keys, and every letter's tally."""

    keys: pa.Table
    counts: list[DeadLetterCount]
    duplicates: list[Duplicate]
    extra_copies: int


def reason_of(error: str | None) -> str:
    """A dead letter's reason without the values that make each one different: the error up to
    its first colon (the column, route or decode step named first), numbers as N."""
    if not error:
        return "(no reason given)"
    head = error.split(":", 1)[0].strip()
    return re.sub(r"\d+", "N", head)[:120]


def read_dead_letters(table: LakeTable | None) -> DeadLetters:
    empty = pa.table(
        {
            NODE: pa.array([], pa.string()),
            TABLE: pa.array([], pa.string()),
            ROWID: pa.array([], pa.int64()),
        }
    )
    if table is None:
        return DeadLetters(empty, [], [], 0)
    data = table.read(DEAD_LETTER_COLUMNS)
    counts: Counter[tuple[str, str]] = Counter()
    producer_keys: dict[tuple[str, str, int], list[Copy]] = defaultdict(list)
    others: Counter[tuple] = Counter()
    columns = {name: data.column(name).to_pylist() for name in data.column_names}
    n = data.num_rows
    for i in range(n):
        stage = columns["stage"][i] or "(unknown)"
        counts[(stage, reason_of(columns["error"][i]))] += 1
        try:
            source = json.loads(columns["source"][i] or "{}")
        except ValueError:
            source = {}
        copy = Copy(
            columns.get("_kafka_topic", [None] * n)[i],
            columns.get("_kafka_partition", [None] * n)[i],
            columns.get("_kafka_offset", [None] * n)[i],
            None,
        )
        if stage == PRODUCER_STAGE and {"node_id", "table", "rowid"} <= set(source):
            try:
                key = (source["node_id"], source["table"], int(source["rowid"]))
            except ValueError:
                continue
            producer_keys[key].append(copy)
        else:
            try:
                headers = json.loads(columns["headers"][i] or "{}")
            except ValueError:
                headers = {}
            others[
                (stage, json.dumps(source, sort_keys=True), headers.get("sensorstream.route"))
            ] += 1
    duplicates = [
        Duplicate(DEAD_LETTERS, node, tbl, rowid, copies)
        for (node, tbl, rowid), copies in producer_keys.items()
        if len(copies) > 1
    ]
    extra = sum(len(d.copies) - 1 for d in duplicates) + sum(c - 1 for c in others.values())
    keys = pa.table(
        {
            NODE: pa.array([k[0] for k in producer_keys], pa.string()),
            TABLE: pa.array([k[1] for k in producer_keys], pa.string()),
            ROWID: pa.array([k[2] for k in producer_keys], pa.int64()),
        }
    )
    tally = [DeadLetterCount(s, r, c) for (s, r), c in sorted(counts.items())]
    return DeadLetters(keys, tally, duplicates, extra)


def _keys_only(data: pa.Table) -> pa.Table:
    """The rows of `data` that name their source row; the cast makes keys of every table
    (and of every schema version) join with one another."""
    data = data.select(KEY).cast(
        pa.schema([(NODE, pa.string()), (TABLE, pa.string()), (ROWID, pa.int64())])
    )
    return data


def _identified(data: pa.Table) -> tuple[pa.Table, int]:
    if not all(c in data.column_names for c in KEY):
        return data.slice(0, 0), data.num_rows
    valid = pc.and_(
        pc.and_(pc.is_valid(data[NODE]), pc.is_valid(data[TABLE])), pc.is_valid(data[ROWID])
    )
    kept = data.filter(valid)
    return kept, data.num_rows - kept.num_rows


def spans(name: str, rows: pa.Table, weight: str | None = None) -> list[Span]:
    """Per node and source table of `rows` (keys, with a `weight` column counting each row
    that many times; None: once): how many rows and their lowest and highest rowid."""
    aggregates = [(ROWID, "min"), (ROWID, "max")]
    aggregates.append((weight, "sum") if weight else (ROWID, "count"))
    grouped = rows.group_by([NODE, TABLE]).aggregate(aggregates)
    total = f"{weight}_sum" if weight else f"{ROWID}_count"
    return [
        Span(name, r[NODE], r[TABLE], r[total], r[f"{ROWID}_min"], r[f"{ROWID}_max"])
        for r in grouped.to_pylist()
    ]


def find_duplicates(table: LakeTable, data: pa.Table) -> tuple[list[Duplicate], int, list[Span]]:
    """Rows of `data` (one partition of `table`) whose key appears more than once."""
    counted = _keys_only(data).group_by(KEY).aggregate([(ROWID, "count")])
    repeated = counted.filter(pc.greater(counted[f"{ROWID}_count"], 1))
    if not repeated.num_rows:
        return [], 0, []
    extra_copies = pc.subtract(repeated[f"{ROWID}_count"], 1)
    found_spans = spans(table.name, repeated.append_column("_extra", extra_copies), "_extra")
    extra = pc.sum(repeated[f"{ROWID}_count"]).as_py() - repeated.num_rows
    wanted = repeated.slice(0, SAMPLE).select(KEY)
    rows = _with_keys_cast(data).join(wanted, keys=KEY, join_type="inner")
    versions = table.commit_versions(set(rows[FILE_INDEX].to_pylist()))
    copies: dict[tuple, list[Copy]] = defaultdict(list)
    for row in rows.to_pylist():
        copies[(row[NODE], row[TABLE], row[ROWID])].append(
            Copy(
                row.get("_kafka_topic"),
                row.get("_kafka_partition"),
                row.get("_kafka_offset"),
                versions.get(row[FILE_INDEX]),
            )
        )
    found = [
        Duplicate(
            table.name, node, tbl, rowid, sorted(c, key=lambda x: (x.version or -1, x.offset or -1))
        )
        for (node, tbl, rowid), c in sorted(copies.items())
    ]
    return found, extra, found_spans


def _with_keys_cast(data: pa.Table) -> pa.Table:
    keys = _keys_only(data)
    for name in KEY:
        data = data.set_column(data.column_names.index(name), name, keys[name])
    return data


class LakeAudit:
    """Runs the lake checks over opened tables; `checkpoints` None means none were read;
    `in_flight` (None: not read) tells rows still on their way from rows missing."""

    def __init__(
        self,
        lake_uri: str,
        tables: list[LakeTable],
        checkpoints: dict[tuple[str, str], SentRows] | None,
        unreadable_checkpoints: list[str] | None = None,
        in_flight: InFlight | None = None,
        settled: bool = False,
    ) -> None:
        self.lake_uri = lake_uri
        self.in_flight = in_flight
        self.by_name = {t.name: t for t in tables}
        self.raw = self.by_name.get(RAW)
        self.dlq = self.by_name.get(DEAD_LETTERS)
        self.routed = [t for t in tables if t.name not in (RAW, DEAD_LETTERS)]
        self.checkpoints = checkpoints
        self.report = AuditReport(
            lake_uri,
            tables={t.name: t.version for t in tables},
            unreadable_checkpoints=list(unreadable_checkpoints or []),
            checkpoints_read=checkpoints is not None,
            in_flight_read=in_flight is not None,
            settled=settled,
        )

    def run(self) -> AuditReport:
        dead = read_dead_letters(self.dlq)
        self.report.dead_letters = dead.counts
        self._add_duplicates(DEAD_LETTERS, dead.duplicates, dead.extra_copies)
        if self.dlq is not None:
            self.report.rows[DEAD_LETTERS] = sum(c.count for c in dead.counts)
        stats: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        # per node: [distinct rowids in raw, of them also dead-lettered, past the checkpoint]
        limits = self._checkpoint_limits()
        orphans: list[pa.Table] = []
        for partition in self._partitions():
            raw_keys = self._raw_partition(partition, dead.keys, limits, stats)
            for table in self.routed:
                data = table.read([*KEY, *KAFKA], partition)
                data, unidentified = _identified(data)
                self._count(table.name, data.num_rows + unidentified, unidentified)
                found, extra, found_spans = find_duplicates(table, data)
                self._add_duplicates(table.name, found, extra, found_spans)
                missing = _keys_only(data).join(raw_keys, keys=KEY, join_type="left anti")
                if missing.num_rows:
                    orphans.append(
                        missing.append_column(
                            "table", pa.repeat(pa.scalar(table.name), missing.num_rows)
                        )
                    )
        self._confirm_not_in_raw(orphans)
        self._tally(stats, dead.keys)
        return self.report

    def _partitions(self) -> list[object]:
        values: set = set()
        for table in [self.raw, *self.routed]:
            if table is not None:
                values.update(table.partitions())
        return sorted(values, key=lambda v: (v is None, str(v)))

    def _count(self, name: str, rows: int, unidentified: int) -> None:
        self.report.rows[name] = self.report.rows.get(name, 0) + rows
        if unidentified:
            self.report.unidentified[name] = self.report.unidentified.get(name, 0) + unidentified

    def _add_duplicates(
        self, name: str, found: list[Duplicate], extra: int, found_spans: list[Span] = ()
    ) -> None:
        if not extra:
            return
        merged = {(s.table, s.node_id, s.source_table): s for s in self.report.duplicate_spans}
        for span in found_spans:
            key = (span.table, span.node_id, span.source_table)
            if key in merged:
                have = merged[key]
                have.rows += span.rows
                have.min_rowid = min(have.min_rowid, span.min_rowid)
                have.max_rowid = max(have.max_rowid, span.max_rowid)
            else:
                merged[key] = span
                self.report.duplicate_spans.append(span)
        self.report.duplicate_count[name] = self.report.duplicate_count.get(name, 0) + extra
        room = SAMPLE - len(self.report.duplicates)
        self.report.duplicates.extend(found[: max(room, 0)])

    def _checkpoint_limits(self) -> pa.Table:
        sent = self.checkpoints or {}
        return pa.table(
            {
                NODE: pa.array([k[0] for k in sent], pa.string()),
                TABLE: pa.array([k[1] for k in sent], pa.string()),
                "_last_rowid": pa.array([s.last_rowid for s in sent.values()], pa.int64()),
            }
        )

    def _raw_partition(
        self,
        partition: object,
        dead_keys: pa.Table,
        limits: pa.Table,
        stats: dict[tuple[str, str], list[int]],
    ) -> pa.Table:
        """Check one partition of raw and tally it per node; its distinct keys, for the routed
        tables of the same partition to be checked against."""
        if self.raw is None:
            return _keys_only(dead_keys).slice(0, 0)
        data = self.raw.read([*KEY, *KAFKA], partition)
        data, unidentified = _identified(data)
        self._count(RAW, data.num_rows + unidentified, unidentified)
        found, extra, found_spans = find_duplicates(self.raw, data)
        self._add_duplicates(RAW, found, extra, found_spans)
        distinct = _keys_only(data).group_by(KEY).aggregate([])
        per_node = distinct.group_by([NODE, TABLE]).aggregate([(ROWID, "count")])
        for node, tbl, n in zip(
            *(per_node[c].to_pylist() for c in (NODE, TABLE, f"{ROWID}_count")), strict=True
        ):
            stats[(node, tbl)][0] += n
        both = distinct.join(dead_keys, keys=KEY, join_type="inner")
        if both.num_rows:
            for row in both.group_by([NODE, TABLE]).aggregate([(ROWID, "count")]).to_pylist():
                stats[(row[NODE], row[TABLE])][1] += row[f"{ROWID}_count"]
        if limits.num_rows:
            bounded = distinct.join(limits, keys=[NODE, TABLE], join_type="inner")
            beyond = bounded.filter(pc.greater(bounded[ROWID], bounded["_last_rowid"]))
            for row in beyond.group_by([NODE, TABLE]).aggregate([(ROWID, "count")]).to_pylist():
                stats[(row[NODE], row[TABLE])][2] += row[f"{ROWID}_count"]
        return distinct

    def _confirm_not_in_raw(self, candidates: list[pa.Table]) -> None:
        """Routed rows not in raw's same partition, looked up in the whole of raw: a row's
        partition is the same in every table unless its event time was changed on the way."""
        if not candidates:
            return
        rows = pa.concat_tables(candidates)
        if self.raw is not None:
            wanted = rows.select(KEY).group_by(KEY).aggregate([])

            def among(data: pa.Table) -> pa.Table:
                return _keys_only(data).join(wanted, keys=KEY, join_type="inner")

            anywhere = _keys_only(self.raw.read(KEY, None, among)).group_by(KEY).aggregate([])
            rows = rows.join(anywhere, keys=KEY, join_type="left anti")
        for name, n in Counter(rows["table"].to_pylist()).items():
            self.report.not_in_raw_count[name] = n
            mine = rows.filter(pc.equal(rows["table"], name))
            self.report.not_in_raw_spans += spans(name, mine)
        rows = rows.sort_by([("table", "ascending"), (NODE, "ascending"), (ROWID, "ascending")])
        self.report.not_in_raw = [
            NotInRaw(r["table"], r[NODE], r[TABLE], r[ROWID])
            for r in rows.slice(0, SAMPLE).to_pylist()
        ]

    def _tally(self, stats: dict[tuple[str, str], list[int]], dead_keys: pa.Table) -> None:
        dead_per_node = Counter(
            zip(dead_keys[NODE].to_pylist(), dead_keys[TABLE].to_pylist(), strict=True)
        )
        sent = self.checkpoints
        keys = set(stats) | set(dead_per_node) | set(sent or {})
        tallies = []
        for key in sorted(keys):
            in_raw, both, beyond = stats.get(key, [0, 0, 0])
            checkpoint = None if sent is None else sent.get(key)
            tally = Tally(
                key[0],
                key[1],
                checkpoint is not None or sent is None,
                in_raw=in_raw,
                dead_lettered=dead_per_node.get(key, 0),
                in_both=both,
                beyond_checkpoint=beyond,
            )
            if checkpoint is not None:
                tally.last_rowid = checkpoint.last_rowid
                tally.rows_sent = checkpoint.rows_sent
                tally.dead_letters_sent = checkpoint.dead_letters
                tally.missing = max(0, checkpoint.rows_sent - (tally.accounted - beyond))
            tallies.append(tally)
        short = [t for t in tallies if t.missing > 0]
        if short:
            self._missing_ranges(short, dead_keys)
        self.report.tallies = tallies

    def _missing_ranges(self, short: list[Tally], dead_keys: pa.Table) -> None:
        """Rowids of 1..checkpoint that neither raw nor the dead letters hold, as ranges, and of
        them those still in flight, counted apart: one more pass over raw, for the nodes that
        are short only."""
        nodes = sorted({t.node_id for t in short})
        wanted = pa.array(nodes, pa.string())
        held = [dead_keys.filter(pc.is_in(dead_keys[NODE], wanted))]
        if self.raw is not None:

            def theirs(data: pa.Table) -> pa.Table:
                return _keys_only(data).filter(pc.is_in(pc.cast(data[NODE], pa.string()), wanted))

            held.append(_keys_only(self.raw.read(KEY, None, theirs)))
        rows = pa.concat_tables(held)
        for tally in short:
            mine = rows.filter(
                pc.and_(
                    pc.equal(rows[NODE], tally.node_id), pc.equal(rows[TABLE], tally.source_table)
                )
            )
            present = pc.unique(mine[ROWID]).sort().to_pylist()
            last = tally.last_rowid or 0
            if self.in_flight is not None:
                # Sent rows a stage still holds on their way to raw or the dead letters.
                held = self.in_flight.rowids(tally.node_id, tally.source_table, (RAW, DEAD_LETTERS))
                held = {r for r in held if 1 <= r <= last} - set(present)
                tally.in_flight = min(len(held), tally.missing)
                tally.missing -= tally.in_flight
                present = sorted(set(present) | held)
            if tally.missing:
                tally.missing_ranges = gaps(present, last)[:MAX_RANGES]


def gaps(present: list[int], last: int) -> list[tuple[int, int]]:
    """The ranges of 1..`last` not in the sorted, distinct `present` (inclusive bounds)."""
    found, previous = [], 0
    for rowid in [*(r for r in present if 1 <= r <= last), last + 1]:
        if rowid > previous + 1:
            found.append((previous + 1, rowid - 1))
        previous = rowid
    return found
