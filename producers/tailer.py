"""The edge tailer: SQLite rows to Avro records in Kafka, exactly once, through outages.

Each chunk of rows is one Kafka transaction holding the chunk's records, the dead letters of
its bad rows and the checkpoint that covers them. The transaction commits or it does not: after
kill -9 at any point, the next start aborts what was open, reads the committed checkpoint and
continues from the rowid after it, so a read_committed consumer sees every row exactly once.

Failures are sorted the way librdkafka classifies them:
- retriable (a commit timed out, the coordinator is loading): retry the same call;
- abortable (a record could not be delivered in time): abort, back off, resend the chunk from
  SQLite, which is the buffer;
- fatal (the producer was fenced or is in an unrecoverable state): start a new producer, which
  aborts the open transaction, and re-read the checkpoint, which decides what was committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx
from confluent_kafka import KafkaError, KafkaException, Producer

from producers import identity
from producers.checkpoint import Checkpoint, CheckpointStore
from producers.metrics import ProducerMetrics
from producers.rowid_guard import RowidGuard, RowidsMoved
from producers.settings import ProducerSettings
from producers.source import SchemaChanged, SQLiteSource
from producers.status import TailerStatus
from schemas.avro_codec import AvroEncoder
from schemas.coercions import BadRow, RowConverter
from schemas.dead_letter import DeadLetter, row_as_json
from schemas.registry import IncompatibleSchema, SchemaRegistry, SchemaRegistryError
from schemas.sqlite_columns import Column
from schemas.value_schema import (
    PROVENANCE_NAMES,
    column_of,
    field_type,
    is_timestamp_field,
    required_columns,
    value_schema_for,
)
from sensorstream.backoff import Backoff
from sensorstream.errors import ConfigError, PipelineError
from sensorstream.failpoints import failpoint
from sensorstream.logs import kafka_logger
from sensorstream.metrics import DeadLetterReason
from sensorstream.settings import ConnectionSettings
from sensorstream.topics import COMPACTED, TopicSpec, ensure_topics

log = logging.getLogger("sensorstream.producer")

KEY_FIELD = "sensor_id"
STAGE = "producer"
TRANSACTION_TIMEOUT_S = 60.0
FLEET_FORM_ATTEMPTS = 3


class SourceRecreated(PipelineError):
    """The database was recreated: its rowids no longer continue the checkpoint's."""


class ProducerFenced(PipelineError):
    """Another producer took over this node and table (same transactional id)."""


@dataclass(frozen=True)
class TailResult:
    rows: int  # rows covered by committed transactions in this run (records + dead letters)
    dead_letters: int
    transactions: int
    last_rowid: int
    seconds: float


class _Retry(Exception):
    """Internal: the chunk was not committed; re-read the checkpoint state and try again."""


# What a server being away looks like; anything else (bad config, a bug) is not retried.
_UNREACHABLE = (KafkaException, _Retry, OSError, SchemaRegistryError, httpx.HTTPError)


class EdgeTailer:
    def __init__(
        self,
        settings: ProducerSettings,
        connection: ConnectionSettings,
        stop: threading.Event | None = None,
        metrics: ProducerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.stop = stop or threading.Event()
        self.metrics = metrics or ProducerMetrics()
        self.region = settings.effective_region
        self.source = SQLiteSource(
            settings.sqlite,
            settings.table,
            settings.timestamp_col,
            busy_timeout_s=settings.busy_timeout_s,
        )
        self.guard = RowidGuard(self.source, settings.on_rowid_reuse, KEY_FIELD, settings.node_id)
        # Every client (admin, checkpoint reader, producer) logs through the throttled logger:
        # without it librdkafka writes each failed connection attempt straight to stderr.
        self.kafka_config = {**connection.kafka_client_config(), "logger": kafka_logger()}
        self.store = CheckpointStore(self.kafka_config, settings.checkpoint_topic)
        self.registry = SchemaRegistry(connection.schema_registry_config())
        self.status = TailerStatus(settings.status_interval_s, self.metrics)
        self.producer: Producer | None = None
        self.checkpoint: Checkpoint | None = None
        self.converter: RowConverter | None = None
        self.encoder: AvroEncoder | None = None
        self._schema: dict | None = None
        self._columns: list[Column] = []
        self._column_names: list[str] = []
        self._dead_letters = 0
        self._transactions = 0
        self._rows = 0
        self._started = False

    # -- start-up --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the database and reach Kafka and the registry (waiting out an outage), ready
        to tail. `run` does it first unless it was done: the producer benchmark calls it
        itself, to time the tail loop alone."""
        if self._started:
            return
        self._started = True
        self.source.open()
        log.info(
            "tailing %s table %s (timestamp column %s) as node %s in region %s",
            self.settings.sqlite,
            self.source.table,
            self.source.timestamp_column,
            self.settings.node_id,
            self.region,
        )
        self.guard.announce()
        self.metrics.tailing(self.settings.node_id, self.region, self.source.table)
        try:
            self._until_done(self._connect)
            self._until_done(self._prepare_schema)
        except BaseException:
            self._close()
            raise

    def run(self) -> TailResult:
        """Tail until stopped (with `once`: until the table is read to its end); `seconds`
        counts from `run`, after `start` if that was called first."""
        started = time.monotonic()
        self.start()
        try:
            self._tail()
        finally:
            self._close()
        return TailResult(
            rows=self._rows,
            dead_letters=self._dead_letters,
            transactions=self._transactions,
            last_rowid=self.checkpoint.rowid if self.checkpoint else 0,
            seconds=time.monotonic() - started,
        )

    def _until_done(self, step) -> None:
        """Run `step` until it succeeds, backing off while Kafka or the registry is away."""
        backoff = Backoff(max_s=self.settings.retry_backoff_max_s)
        while not self.stop.is_set():
            try:
                step()
                if backoff.attempts:
                    self.status.online()
                return
            except _UNREACHABLE as exc:
                self.status.offline(_describe(exc))
            self.status.maybe_log(self._backlog())
            backoff.wait(self.stop)

    def _connect(self) -> None:
        s = self.settings
        ensure_topics(
            self.kafka_config,
            [
                TopicSpec(s.topic, s.partitions),
                TopicSpec(s.dead_letter_topic, 1),
                TopicSpec(s.checkpoint_topic, 1, COMPACTED),
            ],
        )
        self._new_producer()
        found = self._resolve_identity()
        if isinstance(found, identity.Handover):
            found = self._hand_over(found.earlier.node_id)
        self.checkpoint = self._verify_lineage(found)

    def _resolve_identity(self) -> Checkpoint | identity.Handover | None:
        s = self.settings
        return identity.resolve(
            self.store.read_latest(),
            self.source,
            node_id=s.node_id,
            db=str(s.sqlite),
            key_column=KEY_FIELD,
            renamed_from=s.renamed_from,
            distinct_from=s.distinct_from,
        )

    def _hand_over(self, earlier_node_id: str) -> Checkpoint | None:
        """Commit, in one transaction under the earlier node's transactional id, this node's
        first checkpoint (continuing the earlier one) and the earlier key's moved mark.

        Using that id fences a producer still running under the old name: its next commit
        fails and it stops, instead of streaming the rows this node now streams. It may have
        committed since the first read, so the checkpoints are read again once it is fenced.
        """
        producer = Producer(self.producer_config(earlier_node_id))
        producer.init_transactions(TRANSACTION_TIMEOUT_S)
        handover = self._resolve_identity()
        if not isinstance(handover, identity.Handover):
            return handover  # handed over meanwhile (an earlier attempt committed after all)
        earlier = handover.earlier
        producer.begin_transaction()
        self.store.stage(producer, handover.adopted)
        self.store.stage(producer, handover.moved())
        producer.commit_transaction(TRANSACTION_TIMEOUT_S)
        log.warning(
            "node %s continues node %s's checkpoint for table %s (renamed): after rowid %d, "
            "nothing sent again; node %s's checkpoint now points to node %s",
            self.settings.node_id,
            earlier.node_id,
            earlier.table,
            earlier.rowid,
            earlier.node_id,
            self.settings.node_id,
        )
        return handover.adopted

    def _new_producer(self) -> None:
        if self.producer is not None:
            self.producer = None  # the old handle is dropped; librdkafka tears it down
        producer = Producer(self.producer_config(self.settings.node_id))
        producer.init_transactions(TRANSACTION_TIMEOUT_S)
        self.producer = producer

    def producer_config(self, node_id: str) -> dict:
        """The transactional producer of (node, table): one transactional id per pair. The
        producer benchmark produces with it alone, too."""
        s = self.settings
        return {
            **self.kafka_config,
            "transactional.id": f"sensorstream-producer.{node_id}.{self.source.table}",
            "transaction.timeout.ms": int(TRANSACTION_TIMEOUT_S * 1000),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": s.compression,
            "linger.ms": s.linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "message.max.bytes": max(1_000_000, s.max_row_bytes + 65_536),
            # Reconnect within seconds of the broker's return, not librdkafka's 10 s.
            "reconnect.backoff.max.ms": 5000,
            "logger": kafka_logger(),
            "error_cb": self._on_kafka_error,
        }

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka client fatal error: %s", error.str())
        self.status.offline(error.str())

    def _verify_lineage(self, checkpoint: Checkpoint | None) -> Checkpoint:
        s = self.settings
        db = str(s.sqlite)
        if checkpoint is None:
            log.info(
                "no checkpoint for node %s table %s: starting at the first row",
                s.node_id,
                self.source.table,
            )
            return Checkpoint.initial(s.node_id, self.source.table, db)
        verdict = self.guard.examine(checkpoint)
        # Rowids that may be reused or renumbered: prune mode reads on from the verdict; the
        # same database having been recreated is then only one explanation of two.
        if verdict.problem is None or (s.on_rowid_reuse == "prune" and not verdict.replaced):
            log.info(
                "resuming node %s table %s after rowid %d (%d rows produced before)",
                s.node_id,
                self.source.table,
                checkpoint.rowid,
                checkpoint.rows_total,
            )
            return checkpoint
        if not verdict.replaced and s.on_recreated == "fail":
            raise RowidsMoved(self.guard.stop_message(checkpoint, verdict))
        message = (
            f"{db}: table {self.source.table} was recreated: the checkpoint is at rowid "
            f"{checkpoint.rowid}, but {verdict.problem}."
        )
        if s.on_recreated == "fail":
            raise SourceRecreated(
                f"{message} Nothing was produced. If this is a new database whose rows should "
                "all be streamed, run once with --on-recreated restart (or "
                "SENSORSTREAM_PRODUCER_ON_RECREATED=restart)."
            )
        log.warning(
            "%s Streaming the new database from its first row (on_recreated=restart).", message
        )
        return replace(
            Checkpoint.initial(s.node_id, self.source.table, db), rows_total=checkpoint.rows_total
        )

    def _prepare_schema(self) -> None:
        """Register the value schema of the table as it is now, and convert rows with it.

        The schema evolves from this node's previous version: added columns become new
        nullable fields, dropped or renamed ones leave it, types stay. When the registry
        refuses that (another node of the fleet has a table of another shape and registered
        the latest version, or the curated schema meets a subject derived from another table),
        it evolves from the subject's latest version instead, in the form every shape can
        share (`value_schema_for(optional=True)`): the producer checks what must not be NULL.
        """
        s = self.settings
        table, columns = self.source.table, self.source.columns
        ts = self.source.timestamp_column
        schema = value_schema_for(table, columns, ts, previous=self._schema)
        try:
            schema_id = self.registry.register_value_schema(s.topic, schema)
        except IncompatibleSchema as refused:
            schema, schema_id = self._register_fleet_form(refused)
        if self._schema is not None:
            self._log_schema_change(self._schema, schema, schema_id)
        self._schema = schema
        self._columns = list(columns)
        self.encoder = AvroEncoder(schema, schema_id)
        self.converter = RowConverter(
            schema,
            columns,
            node_id=s.node_id,
            region=self.region,
            source_table=table,
            max_row_bytes=s.max_row_bytes,
            required=required_columns(table, columns, ts),
        )
        self._column_names = [c.name for c in columns]

    def _register_fleet_form(self, refused: IncompatibleSchema) -> tuple[dict, int]:
        """Evolve from the subject's latest version, every column field optional; a race with
        another node registering meanwhile is tried again. Still refused: a loud stop."""
        s = self.settings
        table, columns = self.source.table, self.source.columns
        for _ in range(FLEET_FORM_ATTEMPTS):
            latest = self.registry.latest_value_schema(s.topic)
            schema = value_schema_for(
                table, columns, self.source.timestamp_column, previous=latest, optional=True
            )
            try:
                schema_id = self.registry.register_value_schema(s.topic, schema)
            except IncompatibleSchema as exc:
                refused = exc
                continue
            log.info(
                "%s-value: schema of table %s registered as schema id %d, evolved from the "
                "subject's latest version with every column optional (nodes of other shapes "
                "produce into it)",
                s.topic,
                table,
                schema_id,
            )
            return schema, schema_id
        raise IncompatibleSchema(
            f"{refused} Table {table!r} of {s.sqlite} cannot be streamed into {s.topic}: "
            "nothing was produced past the last checkpoint. Give the columns that differ in type "
            "from the subject's latest version (GET /subjects/"
            f"{s.topic}-value/versions/latest on the schema registry) new names at the source, "
            "or produce this node into a topic of its own (SENSORSTREAM_PRODUCER_TOPIC), then "
            "start the producer again."
        ) from refused

    def _log_schema_change(self, old: dict, new: dict, schema_id: int) -> None:
        """One line naming what changed, so an operator can match lake columns to the edge."""
        before = {column_of(f): f for f in old["fields"] if f["name"] not in PROVENANCE_NAMES}
        after = {column_of(f): f for f in new["fields"] if f["name"] not in PROVENANCE_NAMES}
        gone = [name for name in before if name not in after]
        added = [name for name in after if name not in before]
        declared = {c.name: c.declared_type for c in self._columns}
        retyped = [
            f"{c.name} (declared {declared[c.name] or 'no type'} -> {c.declared_type or 'no type'}"
            f", field stays {field_type(after[c.name])})"
            for c in self.source.columns
            if c.name in after
            and declared.get(c.name, c.declared_type) != c.declared_type
            and field_type(after[c.name]) != c.avro_type
            and not is_timestamp_field(after[c.name])
        ]
        if gone or added:
            log.warning(
                "table %s changed: schema id %d for %s-value; columns gone: %s (the lake keeps "
                "them, null in new rows); columns added: %s",
                self.source.table,
                schema_id,
                self.settings.topic,
                ", ".join(gone) or "none",
                ", ".join(added) or "none",
            )
        if retyped:
            log.warning(
                "table %s: column types changed at the source: %s. Values that fit the field's "
                "type exactly are streamed; others go to the dead-letter topic with the reason. "
                "To stream a new type, give the column a new name",
                self.source.table,
                "; ".join(retyped),
            )

    # -- the loop --------------------------------------------------------------------------

    def _tail(self) -> None:
        s = self.settings
        backoff = Backoff(max_s=s.retry_backoff_max_s)
        while not self.stop.is_set():
            if self.source.refresh_columns():
                self._until_done(self._prepare_schema)
            started = time.monotonic()
            try:
                rows = self.guard.rows_after(self.checkpoint, s.chunk_rows)
            except SchemaChanged:
                continue  # a column went between the refresh and the read: refresh again
            if not rows:
                if s.once:
                    return
                if self._follow_database_file():
                    continue
                self.status.maybe_log(0)
                self.stop.wait(s.poll_interval_s)
                continue
            try:
                self._send(rows, started)
                backoff.reset()
                self.status.online()
            except _Retry as exc:
                self.status.offline(str(exc))
                self.status.maybe_log(self._backlog())
                backoff.wait(self.stop)
            self.status.maybe_log(self._backlog())

    def _follow_database_file(self) -> bool:
        """After the last row of the file: was it replaced or deleted? Then take the new one.

        The new file is checked against the checkpoint as at start (`on_recreated`): a copy of
        the same database resumes after the checkpoint, a new one stops the producer or, with
        `restart`, streams from its first row. True when the producer now reads another file.
        """
        change = self.source.file_change()
        if change is None:
            return False
        table = self.source.table
        log.warning(
            "%s was %s while being tailed; every row of the old file is produced (through rowid "
            "%d). Opening the file now at that path and checking it as at start",
            self.settings.sqlite,
            change,
            self.checkpoint.rowid,
        )
        if not self._reopen_source(change):
            return True  # stopping
        self.guard.announce()  # what the new file's rowids promise
        if self.source.table != table:
            raise SourceRecreated(
                f"{self.settings.sqlite}: the database was {change} by one with table "
                f"{self.source.table!r} instead of {table!r}; restart the producer to tail it "
                "(its checkpoint is kept per table)"
            )
        self.checkpoint = self._verify_lineage(self.checkpoint)
        self._until_done(self._prepare_schema)
        return True

    def _reopen_source(self, change: str) -> bool:
        """Open the file at the path, waiting a while for it to be there with its table.

        False when the producer was told to stop meanwhile.
        """
        s = self.settings
        deadline = time.monotonic() + s.reopen_timeout_s
        waiting = False
        while not self.stop.is_set():
            try:
                self.source.reopen()
                return True
            except ConfigError as exc:
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        f"{exc} (the database was {change} while being tailed, and no readable "
                        f"database took its place within {s.reopen_timeout_s:g} s: put it back, "
                        "or point --sqlite at where it is now)"
                    ) from None
                if not waiting:
                    log.warning("waiting for a database to take its place: %s", exc)
                    waiting = True
            self.stop.wait(min(1.0, s.reopen_timeout_s / 10))
        return False

    def _send(self, rows: list[tuple], started: float) -> None:
        """One chunk as one transaction; `started` is when its rows were read from SQLite."""
        producer = self.producer
        s = self.settings
        event_time = self.source.timestamp_column
        try:
            producer.begin_transaction()
            failpoint("producer.in_transaction")
            dead: Counter[DeadLetterReason] = Counter()
            event_times_s: list[float] = []
            for row in rows:
                rowid, values = row[0], row[1:]
                try:
                    record = self.converter.convert(values, rowid)
                    value = self.encoder.encode(record)
                except BadRow as exc:
                    self._dead_letter(rowid, values, f"{exc.column}: {exc.reason}")
                    dead["bad_row"] += 1
                    continue
                except (ValueError, TypeError, OverflowError) as exc:
                    self._dead_letter(rowid, values, f"Avro encoding failed: {exc}")
                    dead["encode"] += 1
                    continue
                event_times_s.append(record[event_time] / 1_000_000)
                key = record.get(KEY_FIELD)
                self._produce(s.topic, key.encode() if key is not None else None, value)
            last = rows[-1]
            marks = self._marks(last)
            checkpoint = Checkpoint(
                node_id=s.node_id,
                table=self.source.table,
                db=str(s.sqlite),
                rowid=last[0],
                row_fingerprint=marks.fingerprint,
                schema_id=self.encoder.schema_id,
                rows_total=self.checkpoint.rows_total + len(rows),
                committed_at=time.time(),
                row_identity=marks.identity,
                renamed_from=self.checkpoint.renamed_from,
                row_content=self.guard.content(last),
            )
            self.store.stage(producer, checkpoint)
            # commit_transaction() would flush too; flushing first puts the records in the log
            # before the commit, the window the before_commit crash point tests.
            self._flush()
            failpoint("producer.before_commit")
            committing = time.monotonic()
            self._commit()
            committed = time.monotonic()
            failpoint("producer.after_commit")
        except KafkaException as exc:
            self._recover(exc)
            raise _Retry(_describe(exc)) from exc
        self.checkpoint = checkpoint
        dead_total = sum(dead.values())
        self._rows += len(rows)
        self._dead_letters += dead_total
        self._transactions += 1
        self.status.committed(len(rows), dead_total, checkpoint.rowid)
        self.metrics.chunk_committed(
            rows=len(rows),
            dead_letters=dead,
            event_times_s=event_times_s,
            batch_s=committing - started,
            commit_s=committed - committing,
            last_rowid=checkpoint.rowid,
        )

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)

    def _dead_letter(self, rowid: int, values: tuple, reason: str) -> None:
        letter = DeadLetter(
            stage=STAGE,
            error=reason,
            source={
                "db": str(self.settings.sqlite),
                "table": self.source.table,
                "rowid": str(rowid),
                "node_id": self.settings.node_id,
            },
            value=row_as_json(self._column_names, values),
        )
        failed_at = datetime.now(UTC).isoformat()
        self._produce(
            self.settings.dead_letter_topic, None, letter.value, letter.headers(failed_at)
        )

    @property
    def _wait_slice_s(self) -> float:
        """How long one blocking Kafka call may take: short enough to log once per interval."""
        return min(self.settings.status_interval_s, 5.0)

    def _flush(self) -> None:
        while (remaining := self.producer.flush(self._wait_slice_s)) and not self.stop.is_set():
            self.status.offline(f"{remaining} records waiting for the broker")
            self.status.maybe_log(self._backlog())

    def _commit(self) -> None:
        backoff = Backoff(initial_s=0.2, max_s=self.settings.retry_backoff_max_s)
        while True:
            try:
                self.producer.commit_transaction(self._wait_slice_s)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and not self.stop.is_set():
                    self.status.offline(error.str())
                    self.status.maybe_log(self._backlog())
                    backoff.wait(self.stop)
                    continue
                raise

    def _recover(self, exc: KafkaException) -> None:
        """Leave the producer able to start a new transaction, or replace it."""
        error: KafkaError = exc.args[0]
        if error.code() == KafkaError._FENCED or error.code() == KafkaError.PRODUCER_FENCED:
            raise ProducerFenced(
                f"another producer took over node {self.settings.node_id} table "
                f"{self.source.table} (transactional id fenced): stopping this one"
            ) from exc
        if error.txn_requires_abort():
            backoff = Backoff(max_s=self.settings.retry_backoff_max_s)
            while not self.stop.is_set():
                try:
                    self.producer.abort_transaction(TRANSACTION_TIMEOUT_S)
                    return
                except KafkaException as abort_exc:
                    if not abort_exc.args[0].retriable():
                        break
                    self.status.offline(abort_exc.args[0].str())
                    self.status.maybe_log(self._backlog())
                    backoff.wait(self.stop)
        # Fatal, or the abort itself failed: a new producer aborts whatever is open, and the
        # committed checkpoint (not our memory of it) says where to resume.
        self.producer = None
        self._until_done(self._connect)

    def _marks(self, row: tuple) -> identity.RowMarks:
        return identity.row_marks(self.source, row, KEY_FIELD)

    def _backlog(self) -> int:
        done = self.checkpoint.rowid if self.checkpoint else 0
        try:
            return max(0, self.source.max_rowid() - done)
        except PipelineError:
            return -1

    def _close(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(KafkaException):  # nothing open: the normal case
                self.producer.abort_transaction(5)
            self.producer.flush(5)
        self.source.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].str()
    return str(exc)
