"""What the audit found: each kind of discrepancy as its own record, and the report that holds
them, with the exit code it means (0 the lake is exact, 1 discrepancies found).

Rows in flight (sent, not yet landed: `audit.in_flight`) are counted apart and are no
discrepancy, unless the audit was told the pipeline is settled (stopped or drained: nothing may
be on its way any more), as CI and the chaos run tell it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SAMPLE = 20
"""Findings of one kind listed in full; the rest are counted."""


@dataclass(frozen=True)
class Copy:
    """Where one copy of a duplicated row is: its Kafka record and the commit that added it."""

    topic: str | None
    partition: int | None
    offset: int | None
    version: int | None  # table version of the commit (None: only a log checkpoint names it)


@dataclass(frozen=True)
class Duplicate:
    table: str
    node_id: str
    source_table: str
    rowid: int
    copies: list[Copy]


@dataclass(frozen=True)
class NotInRaw:
    """A row of a routed table that is not a row of `raw`: the raw route takes every record."""

    table: str
    node_id: str
    source_table: str
    rowid: int


@dataclass
class Span:
    """Rows of one kind of finding for one node's source table in one table: how many, and
    the lowest and highest rowid among them (the listed findings are only a sample)."""

    table: str
    node_id: str
    source_table: str
    rows: int
    min_rowid: int
    max_rowid: int


@dataclass
class Tally:
    """One node's source table: what its producer sent against what the lake holds."""

    node_id: str
    source_table: str
    checkpoint: bool  # False: rows in the lake, but no checkpoint for them
    last_rowid: int | None = None
    rows_sent: int | None = None
    dead_letters_sent: int | None = None
    in_raw: int = 0  # distinct rowids in raw
    dead_lettered: int = 0  # distinct rowids in the dead letters (producer stage)
    in_both: int = 0  # rowids both in raw and in the dead letters
    beyond_checkpoint: int = 0  # distinct rowids in raw past the checkpoint's rowid
    missing: int = 0  # sent, in no table, and no stage holds them any more: lost
    in_flight: int = 0  # sent, in no table yet, but a stage still holds them: late, not lost
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return self.in_raw + self.dead_lettered - self.in_both

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.checkpoint:
            found.append("rows in the lake but no producer checkpoint for them")
            return found
        if self.missing > 0:
            found.append(f"{self.missing} rows sent but neither in raw nor in the dead letters")
        if self.rows_sent is not None and self.accounted > self.rows_sent:
            found.append(
                f"{self.accounted - self.rows_sent} more rows in the lake than the producer sent"
            )
        if self.beyond_checkpoint:
            found.append(f"{self.beyond_checkpoint} rows in raw past the checkpoint's rowid")
        if self.in_both:
            found.append(f"{self.in_both} rows both in raw and in the dead letters")
        if self.dead_letters_sent is not None and self.dead_letters_sent != self.dead_lettered:
            found.append(
                f"the producer dead-lettered {self.dead_letters_sent} rows, the dead-letter "
                f"table holds {self.dead_lettered}"
            )
        return found


@dataclass(frozen=True)
class DeadLetterCount:
    stage: str
    reason: str
    count: int


@dataclass
class AuditReport:
    lake_uri: str
    tables: dict[str, int] = field(default_factory=dict)  # table -> version audited
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows read
    duplicates: list[Duplicate] = field(default_factory=list)
    duplicate_count: dict[str, int] = field(default_factory=dict)  # table -> extra copies
    not_in_raw: list[NotInRaw] = field(default_factory=list)
    duplicate_spans: list[Span] = field(default_factory=list)  # rows = extra copies
    not_in_raw_spans: list[Span] = field(default_factory=list)
    not_in_raw_count: dict[str, int] = field(default_factory=dict)
    tallies: list[Tally] = field(default_factory=list)
    dead_letters: list[DeadLetterCount] = field(default_factory=list)
    unreadable_checkpoints: list[str] = field(default_factory=list)
    unidentified: dict[str, int] = field(default_factory=dict)  # table -> rows lacking provenance
    edge: list[object] = field(default_factory=list)  # row-level findings (audit.edge), a sample
    edge_count: int = 0  # row-level findings in all
    edge_tallies: list[object] = field(default_factory=list)
    checkpoints_read: bool = True
    in_flight_read: bool = False  # the stages' committed offsets were read (audit.in_flight)
    settled: bool = False  # the pipeline is stopped or drained: rows in flight are findings

    @property
    def in_flight(self) -> int:
        """Rows sent but not landed yet that a stage still holds (lake and edge checks)."""
        edge = sum(t.in_flight + t.route_in_flight for t in self.edge_tallies)
        return sum(t.in_flight for t in self.tallies) + edge

    @property
    def not_yet_sent(self) -> int:
        """Rows of the --sqlite database past its producer's checkpoint."""
        return sum(t.not_yet_sent for t in self.edge_tallies)

    @property
    def unsettled(self) -> int:
        """With `settled`: rows that should have landed by now but are on their way."""
        return self.in_flight + self.not_yet_sent if self.settled else 0

    @property
    def discrepancies(self) -> int:
        return (
            self.unsettled
            + sum(self.duplicate_count.values())
            + sum(self.not_in_raw_count.values())
            + sum(1 for t in self.tallies if t.problems)
            + len(self.unreadable_checkpoints)
            + sum(self.unidentified.values())
            + self.edge_count
        )

    @property
    def exit_code(self) -> int:
        return 1 if self.discrepancies else 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["tallies"] = [
            {**asdict(t), "accounted": t.accounted, "problems": t.problems} for t in self.tallies
        ]
        data["in_flight"] = self.in_flight
        data["not_yet_sent"] = self.not_yet_sent
        data["discrepancies"] = self.discrepancies
        data["exact"] = self.discrepancies == 0
        return data
