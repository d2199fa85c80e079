"""`sensorstream sink`: routed topics into Delta tables, exactly once (DESIGN sections 5 and 8).

The protocol, per table and topic-partition:
1. On assignment, the table's txn version for the partition (the last offset it holds) decides
   where to start: after it, or after the committed consumer offset if that is further.
2. Records are buffered per table, as columns (`sinks.batch`), until the route's flush policy
   (rows, bytes, latency) or the memory bound says to write.
3. Dead rows of the batch are appended to the dead-letter table, then the batch to its table,
   each commit carrying the batch's last offsets as txn versions where they move forward;
   each writer drops rows its table already holds, so replays are harmless. This runs on a
   worker thread (`sinks.flusher`), one batch per table at a time and in order, while the loop
   consumes the next; different tables write side by side, so a 1-second table never waits for a
   slower one. A batch that comes due while its table's previous one is still being
   written keeps filling until that one has landed.
4. Only then, back on the loop's thread, are the consumer offsets committed. A crash anywhere
   in between replays the batch, and step 3 makes the replay a no-op for whatever had landed.
On a rebalance, the batches being written land (and its offsets are committed) first; then the
unflushed records of revoked partitions are dropped: their new owner replays them from the
committed offsets and step 1 skips what had landed.
Retention gaps found at step 1 (`sensorstream.retention`) are only noted in the rebalance
callback; the loop writes their dead-letter rows as soon as `consume()` returns, before it
buffers a record past them, so no offset past a gap is committed before its row is written.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from schemas.avro_codec import AvroDecoder
from schemas.registry_reader import SchemaReader
from sensorstream.end_offsets import EndOffsets
from sensorstream.errors import PipelineError
from sensorstream.failpoints import failpoint
from sensorstream.logs import kafka_logger
from sensorstream.retention import ExpiredRecords, expired_records, log_start
from sensorstream.settings import ConnectionSettings
from sinks.batch import BufferedRecords, TableBatch
from sinks.delta_writer import DeltaTableWriter
from sinks.flusher import FlushLanes
from sinks.gc_pause import quiet_gc
from sinks.landing import LandingWriter
from sinks.malloc_arenas import FreeMemoryRelease, fix_mmap_threshold, limit_malloc_arenas
from sinks.metrics import SinkMetrics
from sinks.observer import BatchTiming, SinkObserver
from sinks.records import (
    DeadRow,
    DecodedReadings,
    dead_letter_table,
    decode_readings,
    expired_dead_row,
)
from sinks.settings import SinkSettings
from sinks.tables import TableTarget, target_for

log = logging.getLogger("sensorstream.sink")

DLQ_ROUTE = "dlq"


@dataclass(frozen=True)
class PreparedBatch:
    """A batch decoded on a flush thread, ready for its table once the previous batch landed."""

    decoded: DecodedReadings | pa.Table | None
    """The readings, or for the dead-letter topic's batch its rows already."""
    now: datetime
    """When it was taken: its `_ingested_at`."""
    seconds: float
    """Time spent decoding it."""


MAX_FATAL_ERRORS = 3
FATAL_WINDOW_S = 300.0
"""More fatal consumer errors than MAX_FATAL_ERRORS within FATAL_WINDOW_S fail the sink."""


class ConsumerFailed(Exception):
    """The consumer returned a fatal error: it will not consume again."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error


@dataclass(frozen=True)
class SinkResult:
    rows: dict[str, int]
    dead_letters: int
    commits: int
    seconds: float


class DeltaSink:
    def __init__(
        self,
        settings: SinkSettings,
        connection: ConnectionSettings,
        stop: threading.Event | None = None,
        metrics: SinkMetrics | None = None,
        observer: SinkObserver | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.observer = observer or SinkObserver()
        self.connection = connection
        self.stop = stop or threading.Event()
        self.storage_options = connection.storage_options() or None
        self.decoder = AvroDecoder(SchemaReader(connection.schema_registry_config()))
        self._targets: dict[str, TableTarget] = {}
        self._writers: dict[str, DeltaTableWriter] = {}
        self._release_free_memory = FreeMemoryRelease()
        self._batches: dict[str, TableBatch] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._landing = LandingWriter(connection.lake_uri, self.storage_options)
        self._landed: dict[tuple[str, int], int] = {}
        self._flushes: FlushLanes[str, dict[tuple[str, int], int]] = FlushLanes(
            self._commit_offsets,
            background=settings.background_flush,
            on_blocked=observer.lanes_waited if observer else None,
            ahead_bytes=settings.decode_ahead_bytes,
        )
        # Flush threads of several tables meet here: the dead-letter table's writer, created
        # by whichever needs it first, and the dead-letter count.
        self._shared = threading.Lock()
        self.consumer: Consumer | None = None
        self.dead_letters = 0
        self._rebalance_error: BaseException | None = None
        self._expired: list[ExpiredRecords] = []
        """Gaps found at assignment whose dead-letter rows the loop has not written yet."""
        self._fatal_errors: list[float] = []
        self._ends = EndOffsets()
        """With `once`: each partition's end when it was assigned, and how far it was read."""

    def buffered_rows(self) -> int:
        """Records held in memory: buffered, plus the batches being written."""
        return sum(len(b) for b in self._batches.values()) + self._flushes.rows_in_flight

    def buffered_bytes(self) -> int:
        """Bytes of the records held in memory (values plus `RECORD_OVERHEAD` each), buffered
        plus the batches being written: what `max_buffered_bytes` bounds."""
        return sum(b.size for b in self._batches.values()) + self._flushes.bytes_in_flight

    def _over_memory_bound(self) -> bool:
        s = self.settings
        return (
            self.buffered_bytes() > s.max_buffered_bytes
            or self.buffered_rows() > s.max_buffered_rows
        )

    def _report_buffered(self) -> None:
        self.metrics.buffered(self.buffered_rows(), self.buffered_bytes())

    # -- tables ----------------------------------------------------------------------------

    def target(self, topic: str) -> TableTarget:
        target = self._targets.get(topic)
        if target is not None:
            return target
        with self._shared:
            return self._new_target(topic)

    def _new_target(self, topic: str) -> TableTarget:
        target = self._targets.get(topic)
        if target is None:
            if topic == self.settings.dead_letter_topic:
                target = target_for(
                    DLQ_ROUTE,
                    self.settings.model_copy(update={"topic_prefix": ""}),
                    self.connection.lake_uri,
                )
            else:
                target = target_for(topic, self.settings, self.connection.lake_uri)
            self._targets[topic] = target
        return target

    def writer(self, target: TableTarget) -> DeltaTableWriter:
        writer = self._writers.get(target.uri)
        if writer is not None:
            return writer
        with self._shared:
            writer = self._writers.get(target.uri)
            if writer is None:
                writer = self._writers[target.uri] = DeltaTableWriter(
                    target,
                    self.storage_options,
                    checkpoint_interval=self.settings.checkpoint_interval,
                    log_retention_hours=self.settings.log_retention_hours,
                    retry_budget_s=self.settings.retry_budget_s,
                    stop=self.stop,
                    log_cleanup_every=self.settings.log_cleanup_commits,
                    on_checkpoint_failure=partial(self.metrics.checkpoint_failed, target.route),
                    on_checkpoint=partial(self.metrics.checkpoint_written, target.route),
                )
            return writer

    # -- rebalancing -----------------------------------------------------------------------

    def _rebalance_guard(
        self, handler: Callable[[Consumer, list[TopicPartition]], None]
    ) -> Callable[[Consumer, list[TopicPartition]], None]:
        """Keep an exception of a rebalance callback for the loop to raise.

        Raised inside the callback, it would cross confluent-kafka's `consume()`, which leaves
        it pending instead of raising it: the next C call then fails with an unrelated
        `SystemError` ("... returned a result with an exception set"), far from the cause
        (an unreachable table store while reading txn versions, say).
        """

        def guarded(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            try:
                handler(consumer, partitions)
            except BaseException as exc:  # re-raised by the loop, right after consume()
                if self._rebalance_error is None:
                    self._rebalance_error = exc

        return guarded

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flushes.wait()  # the writers are the flush threads' while batches are written
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, 30)
        }
        gaps: list[ExpiredRecords] = []
        for tp in partitions:
            target = self.target(tp.topic)
            version = self.writer(target).txn_version(tp.topic, tp.partition)
            start = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            if version is not None and (start < 0 or version + 1 > start):
                start = version + 1
            oldest = -1  # only a real position can be past retention: no call otherwise
            if start >= 0:
                oldest = log_start(consumer, tp.topic, tp.partition)
                gap = expired_records(tp.topic, tp.partition, start, oldest)
                if gap is not None:
                    gaps.append(gap)
            if target.settings.landing:
                # The landing area resumes after its own last file; where it is behind the
                # table, the table's writer drops the rows it already holds.
                landed = self._landing.last_landed_offset(target.route, tp.topic, tp.partition)
                self._landed[(tp.topic, tp.partition)] = -1 if landed is None else landed
                start = OFFSET_BEGINNING if landed is None else min(start, landed + 1)
            tp.offset = max(start, oldest) if start >= 0 else start
            self._assigned.add((tp.topic, tp.partition))
        self._expired.extend(gaps)  # written by the loop, outside this callback
        consumer.assign(partitions)
        if self.settings.once:
            self._ends.assigned(consumer, partitions)
        log.info(
            "assigned %s", ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in partitions)
        )
        self.observer.assigned(partitions)

    def _write_expired(self) -> None:
        """Log each gap retention left and write its row to the dead-letter table, once: the
        row goes in with the gap's last offset as the partition's txn version, so a later
        assignment (before a batch past the gap has landed) finds it there.

        Called by the loop right after `consume()`, before it buffers any record: a record
        past a gap is only ever in a batch handed over after the gap's row is in the table,
        and offsets are committed only after their batch lands. A crash before the row is
        written commits nothing past the gap either, so the next assignment finds it again.
        """
        failpoint("sink.expired_found")
        dlq = self.writer(self.target(self.settings.dead_letter_topic))
        now = datetime.now(UTC)
        while self._expired:
            gap = self._expired[0]
            row = expired_dead_row(gap, int(now.timestamp() * 1000))
            log.error("%s", row.reason)
            noted = dlq.txn_version(gap.topic, gap.partition)
            if noted is None or noted < gap.last:
                self._write_dead_rows([row], {(gap.topic, gap.partition): gap.last}, now)
                self.metrics.expired(gap.count)
            self._expired.pop(0)  # only once its row is in the table
        failpoint("sink.expired_written")

    def _write_dead_rows(
        self, rows: list[DeadRow], offsets: dict[tuple[str, int], int], now: datetime
    ) -> None:
        """Write `rows` to the dead-letter table, `offsets` (last offset per topic-partition)
        as their txn versions there, and count them: a batch's records that cannot land, or
        a retention gap's notice."""
        target = self.target(self.settings.dead_letter_topic)
        self.writer(target).write(dead_letter_table([], rows, target.settings.hourly, now), offsets)
        with self._shared:
            self.dead_letters += len(rows)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._flushes.wait()  # land the batches being written, commit offsets while owned
        # A gap not written yet is its new owner's: nothing past it was committed, so the
        # owner finds it at assignment.
        self._expired = [g for g in self._expired if (g.topic, g.partition) not in revoked]
        for batch in self._batches.values():
            batch.drop_partitions(revoked)
        self._assigned -= revoked
        self._ends.revoked(partitions)
        consumer.unassign()

    # -- the loop --------------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        """The sink's consumer configuration (a benchmark consumes with it alone, too)."""
        s = self.settings
        config = {
            **self.connection.kafka_client_config(),
            "group.id": s.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 15000,
            "max.poll.interval.ms": 600000,
            "topic.metadata.refresh.interval.ms": 10000,  # find new regional topics soon
            # librdkafka stops fetching a partition whose prefetch queue is full and, by
            # default, waits a whole second before asking again: a sink that empties the
            # queue faster than that (catching up) sat idle most of the time. Consuming alone
            # went from 0.23M to 1.7M records/s here with 10 ms.
            "fetch.queue.backoff.ms": 10,
            # The prefetch is memory outside the memory bound: keep it small (see the
            # settings' docs and docs/benchmarks.md, "Sink memory").
            "queued.max.messages.kbytes": s.fetch_queue_kbytes,
            "queued.min.messages": s.fetch_queue_records,
            "logger": kafka_logger(),
            **self.metrics.consumer_config(),
        }
        if s.instance_id:
            config["group.instance.id"] = s.instance_id
        return config

    def _subscribe(self) -> Consumer:
        consumer = self.consumer = Consumer(self.consumer_config())
        if self.settings.once:
            self._check_topics(consumer)
        consumer.subscribe(
            self.settings.topics,
            on_assign=self._rebalance_guard(self._on_assign),
            on_revoke=self._rebalance_guard(self._on_revoke),
            on_lost=self._rebalance_guard(self._on_revoke),
        )
        return consumer

    def _check_topics(self, consumer: Consumer) -> None:
        """With `once`: name the subscribed topics that do not exist (the router creates a
        route's topic with its first record, so some may be missing for good reason), and
        fail when none does: there is nothing to land and no partition would ever be
        assigned."""
        existing = list(consumer.list_topics(timeout=30).topics)
        missing = []
        for topic in self.settings.topics:
            if topic.startswith("^"):
                found = any(re.match(topic, name) for name in existing)
            else:
                found = topic in existing
            if not found:
                what = "no topic matches" if topic.startswith("^") else "topic"
                missing.append(f"{what} {topic} does not exist")
        if len(missing) == len(self.settings.topics):
            raise PipelineError(
                f"none of the sink's topics exists: {'; '.join(missing)}. Check the sink's "
                "`topics` setting (SENSORSTREAM_SINK_TOPICS), or run the router first"
            )
        for line in missing:
            log.warning("%s: nothing to land from it", line)

    def _read_to_end(self, consumer: Consumer, started: float) -> bool:
        """With `once`: every partition owned has been read to its end at assignment. Fails
        when no partition was assigned in time, rather than exit 0 having landed nothing."""
        if self._ends.reached(consumer):
            return True
        waited = time.monotonic() - started
        if not self._ends.ever_owned and waited > self.settings.join_timeout_s:
            raise PipelineError(
                f"no partition of {', '.join(self.settings.topics)} was assigned to the sink "
                f"within {self.settings.join_timeout_s:g} s (consumer group "
                f"{self.settings.consumer_group}): the broker may be unreachable, or the "
                "group's other members own every partition. Stop them, or give this run a "
                "group of its own (SENSORSTREAM_SINK_CONSUMER_GROUP)"
            )
        return False

    def run(self) -> SinkResult:
        """Land records until stopped; with `once`, until every partition owned has been
        read to where it ended when it was assigned, then land what is buffered."""
        started = time.monotonic()
        limit_malloc_arenas()  # before the first flush thread
        fix_mmap_threshold()  # before the first batch
        consumer = self._subscribe()
        observer, clock = self.observer, time.perf_counter
        try:
            with quiet_gc():
                while not self.stop.is_set():
                    consuming = clock()
                    messages = consumer.consume(self.settings.poll_batch, timeout=0.2)
                    observer.consumed(consuming, clock(), len(messages))
                    if self._rebalance_error is not None:
                        raise self._rebalance_error
                    if self._expired:
                        self._write_expired()
                    now = time.monotonic()
                    if messages:
                        try:
                            self._buffer(messages)
                        except ConsumerFailed as exc:
                            consumer = self._new_consumer(consumer, exc.error)
                            continue
                    self._flushes.poll()
                    self._flush_due(now)
                    self._report_buffered()
                    if self.settings.once and self._read_to_end(consumer, started):
                        break  # everything available at assignment is read: land it, exit
                observer.landing_all()
                self._flush_all()
                self._report_buffered()
            for writer in list(self._writers.values()):
                writer.close()  # the checkpoints owed, so the tables open fast after a stop
        finally:
            consumer.close()
        return SinkResult(
            rows={w.target.name: w.rows for w in self._writers.values()},
            dead_letters=self.dead_letters,
            commits=sum(w.commits for w in self._writers.values()),
            seconds=time.monotonic() - started,
        )

    def _new_consumer(self, failed: Consumer, error: KafkaError) -> Consumer:
        """Replace a consumer that hit a fatal error with a new one.

        A static member (`instance_id`) can be fenced by its own rejoin: after a broker
        restart, a commit still carrying the old member id meets the coordinator that gave the
        rejoin a new one. librdkafka makes that fatal, and a fatal consumer only ever returns
        the error again, so the sink would idle forever. The batches being written land (their
        offset commits fail, harmlessly: the tables' txn versions cover them); buffered
        records are dropped, to be replayed from the committed offsets and skipped where the
        tables hold them; and a new consumer joins. Fenced again and again means another
        process has this instance id: that fails the sink.
        """
        now = time.monotonic()
        self._fatal_errors = [t for t in self._fatal_errors if now - t < FATAL_WINDOW_S]
        self._fatal_errors.append(now)
        if len(self._fatal_errors) > MAX_FATAL_ERRORS:
            raise PipelineError(
                f"the sink's Kafka consumer failed {len(self._fatal_errors)} times within "
                f"{FATAL_WINDOW_S:.0f} s ({error.str()}); is another sink running with "
                f"instance_id {self.settings.instance_id!r}?"
            )
        log.warning(
            "the sink's Kafka consumer failed (%s); starting a new one from the committed offsets",
            error.str(),
        )
        self._flushes.wait()
        for batch in self._batches.values():
            batch.take()
        self._assigned.clear()
        self._expired.clear()  # the new consumer's assignment finds them again
        self._ends.revoked(TopicPartition(t, p) for t, p in self._ends.owned())
        try:
            failed.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the failed consumer: %s", exc)
        return self._subscribe()

    def _buffer(self, messages: list) -> None:
        """Append one consume() result to the tables' batches, a list comprehension per column
        rather than an object per message."""
        errors = [m.error() for m in messages]
        # Not `errors.count(None)`: comparing a KafkaError with None raises.
        if any(error is not None for error in errors):
            for error in errors:
                # consume() reports it as code _FATAL, without the fatal flag set
                if error is not None and (error.fatal() or error.code() == KafkaError._FATAL):
                    raise ConsumerFailed(error)
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", error)
            messages = [m for m, e in zip(messages, errors, strict=True) if e is None]
            if not messages:
                return
        topics = [m.topic() for m in messages]
        if topics.count(topics[0]) == len(topics):
            self._batch(topics[0]).add(topics[0], messages)
            return
        by_topic: dict[str, list] = defaultdict(list)
        for topic, message in zip(topics, messages, strict=True):
            by_topic[topic].append(message)
        for topic, group in by_topic.items():
            self._batch(topic).add(topic, group)

    def _batch(self, topic: str) -> TableBatch:
        target = self.target(topic)
        batch = self._batches.get(target.uri)
        if batch is None:
            batch = self._batches[target.uri] = TableBatch(target)
        return batch

    def _flush_due(self, now: float) -> None:
        for uri, batch in list(self._batches.items()):
            # A full batch waits for its lane; one merely due by time keeps filling meanwhile
            # (while behind, batches then grow to what arrives during one write).
            if batch.full() or (batch.due(now) and not self._flushes.busy(uri)):
                self._flush(batch)
        # The memory bound: after each consume() result, never more held than it allows.
        while self._over_memory_bound():
            fullest = max(self._batches.values(), key=lambda b: b.size, default=None)
            if fullest is None or not len(fullest):
                self._flushes.wait()  # every buffered record is being written already
            elif self._flushes.busy(fullest.target.uri):
                self._flushes.wait(fullest.target.uri)
            else:
                self._flush(fullest)

    def _flush_all(self) -> None:
        for batch in list(self._batches.values()):
            if len(batch):
                self._flush(batch)
        self._flushes.wait()

    def _flush(self, batch: TableBatch) -> None:
        """Hand the batch to its table's lane; its offsets are committed when it has landed."""
        target, size, records = batch.target, batch.size, batch.take()
        self._flushes.submit(
            target.uri,
            lambda: self._prepare(target, records),
            lambda prepared: self._write(target, records, prepared),
            len(records),
            size,
        )

    def _prepare(self, target: TableTarget, records: BufferedRecords) -> PreparedBatch:
        """Decode a batch (on a flush thread), maybe before its table's previous batch has
        landed: nothing here depends on the table."""
        started, now = time.monotonic(), datetime.now(UTC)
        if target.route == DLQ_ROUTE:
            decoded = dead_letter_table(records.messages(), [], target.settings.hourly, now)
        else:
            decoded = decode_readings(target, records, self.decoder, now)
        return PreparedBatch(decoded, now, time.monotonic() - started)

    def _write(
        self, target: TableTarget, records: BufferedRecords, prepared: PreparedBatch
    ) -> dict[tuple[str, int], int]:
        """Step 3 of the protocol for one batch (on a flush thread, after the table's previous
        batch has landed); returns the offsets it covers, for the loop to commit (step 4)."""
        self.observer.batch_committing(target.route, len(records))
        started, writing = time.perf_counter(), self._write_seconds()
        try:
            return self._commit_batch(target, records, prepared)
        finally:
            self.observer.batch_committed(
                BatchTiming(
                    target.route,
                    len(records),
                    prepared.seconds,
                    started,
                    time.perf_counter(),
                    self._write_seconds() - writing,
                )
            )

    def _write_seconds(self) -> float:
        """Time the Delta writers spent writing so far, all tables (for `SinkObserver`)."""
        return sum(w.write_seconds for w in list(self._writers.values()))

    def _commit_batch(
        self, target: TableTarget, records: BufferedRecords, prepared: PreparedBatch
    ) -> dict[tuple[str, int], int]:
        """`_write` itself; what the observer times."""
        started = time.monotonic()
        last_offsets = records.last_offsets
        decoded, now = prepared.decoded, prepared.now
        if isinstance(decoded, DecodedReadings):
            table, dead = decoded.fit(self.writer(target).misfits)
            records.release_values()
        else:
            table, dead = decoded, []
        if dead:
            self._write_dead_rows(dead, last_offsets, now)
            self.metrics.dead_rows(dead)
            log.warning(
                "%d records of %s went to the dead-letter table, e.g. %s",
                len(dead),
                target.name,
                dead[0].reason,
            )
        failpoint("sink.between_tables")
        if table is not None and target.settings.landing:
            self._land(target, table)
        written = self.writer(target).write(table, last_offsets) if table is not None else 0
        self.metrics.batch_landed(
            target.route,
            messages=len(records),
            rows=written,
            seconds=prepared.seconds + time.monotonic() - started,
            table=table,
        )
        self._release_free_memory()  # what the previous batches freed (docs/benchmarks.md)
        failpoint("sink.before_offsets")
        return last_offsets

    def _land(self, target: TableTarget, table) -> None:
        """Write the batch's landing files, per topic-partition, past what already landed."""
        for topic, partition in {
            (t, p)
            for t, p in zip(
                table.column("_kafka_topic").to_pylist(),
                table.column("_kafka_partition").to_pylist(),
                strict=True,
            )
        }:
            landed = self._landed.get((topic, partition), -1)
            mask = pc.and_(
                pc.and_(
                    pc.equal(table.column("_kafka_topic"), topic),
                    pc.equal(table.column("_kafka_partition"), partition),
                ),
                pc.greater(table.column("_kafka_offset"), landed),
            )
            part = table.filter(mask)
            if part.num_rows:
                self._landing.write(target.route, topic, partition, part)
                self._landed[(topic, partition)] = pc.max(part.column("_kafka_offset")).as_py()

    def _commit_offsets(self, last_offsets: dict[tuple[str, int], int]) -> None:
        offsets = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in last_offsets.items()
            if (topic, partition) in self._assigned
        ]
        if not offsets:
            return
        try:
            committing = time.monotonic()
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.metrics.offsets_committed(time.monotonic() - committing)
        except KafkaException as exc:
            # Safe to lose: the table's txn versions say where to resume.
            log.warning("committing offsets failed (%s); the tables' txn versions cover it", exc)


def describe(result: SinkResult) -> str:
    tables = ", ".join(f"{name}: {rows}" for name, rows in sorted(result.rows.items()))
    return (
        f"landed {sum(result.rows.values())} rows in {result.commits} commits ({tables}); "
        f"{result.dead_letters} dead letters; {result.seconds:.1f} s"
    )


__all__ = ["DeltaSink", "PipelineError", "SinkResult", "describe"]
