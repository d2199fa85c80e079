"""Appends to one Delta table, exactly once per Kafka record.

Every commit carries a txn action per topic-partition it moves forward, whose version is the
last offset the commit includes (DESIGN section 5); a version never moves back. Before each
commit the writer drops rows at or below those versions, partition by partition, as its view of
the table has them (read at most a minute before, or left by its own last commit), and a commit
whose view another writer's commit to the same partitions overtook fails delta-rs's conflict
check and is tried again on a fresh read. So a batch replayed after a crash, written by an
instance that lost its partitions in a rebalance, re-read for the landing area or written by a
second consumer group never lands twice. delta-rs commits with a conditional
put, so two sinks appending to one table are safe on S3 servers that honour `If-None-Match`.

Each commit is tagged with an id of its own in the commit info. When an attempt fails after
S3 took the commit (its response was lost), the retry finds the batch's rows already in, and
the tag is how the writer knows the rows went in with its own commit (count them) rather than
with another writer's (do not). Every object-store operation runs within the retry budget,
a hard bound (`sinks.retry`); a writer whose attempt was abandoned refuses further work.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from sensorstream.errors import PipelineError
from sinks.compatibility import conflicts
from sinks.landing import s3_filesystem
from sinks.log_keeper import LogCare, LogKeeper
from sinks.retry import RetryBudget
from sinks.table_log import (
    CHECKPOINT_INTERVAL,
    DEFAULT_LOG_RETENTION_HOURS,
    adopt,
    checkpoint_stretch,
    clean_expired_log,
    cleanup_interval,
    log_properties,
)
from sinks.tables import TableTarget, app_id
from sinks.txn_versions import TxnVersions

log = logging.getLogger("sensorstream.sink")

_TRANSIENT_MARKERS = (
    "error sending request",
    "connection refused",
    "connect error",
    "timed out",
    "timeout",
    "generic s3 error",
    "dns error",
    "broken pipe",
    "connection reset",
    "service unavailable",
    "slow down",
    "internal error",
)

# A commit that lost to another (the other sink creating the table first, or this writer's
# own commit whose response was lost: the retried conditional put then finds it in place) is
# re-read, re-filtered and tried again; only conflicts that keep coming fail the batch.
CONFLICT_ATTEMPTS = 20
COMMIT_ID = "sensorstream.commitId"
"""Commit info key of the id each commit is tagged with."""
VIEW_REUSE_S = 60.0
"""How long the table as this writer last saw it (read, or left by its own commit) carries the
next batch's schema check and first commit attempt without being read again (`misfits`)."""
NO_LOG_CLEANUP = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
"""The earlier writer's commits (`reopen_after_checkpoint` off): delta-rs's hook lists the whole
`_delta_log` after every commit to look for expired files; that writer cleans the log itself
after each checkpoint instead (`_clean_log_at_checkpoint`)."""
NO_LOG_CARE = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
"""Commits of a writer with a log keeper (`sinks.log_keeper`), which checkpoints beside them."""
CLOSE_TIMEOUT_S = 60.0
"""How long closing a writer waits for the checkpoint it owes (`close`)."""


def is_transient(exc: BaseException) -> bool:
    """An object-store outage (retry) rather than a problem with the data (dead letters)."""
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class DeltaTableWriter:
    def __init__(
        self,
        target: TableTarget,
        storage_options: dict[str, str] | None,
        checkpoint_interval: int = 100,
        retry_budget_s: float = 300.0,
        stop: threading.Event | None = None,
        log_retention_hours: float = DEFAULT_LOG_RETENTION_HOURS,
        *,
        adopt_log_properties: bool = True,
        reopen_after_checkpoint: bool = True,
        log_cleanup_every: int | None = None,
        view_reuse_s: float = VIEW_REUSE_S,
        on_checkpoint_failure: Callable[[], None] | None = None,
        on_checkpoint: Callable[[float], None] | None = None,
        stretch_checkpoints: bool = True,
    ) -> None:
        """`adopt_log_properties` and `reopen_after_checkpoint` off give the writer of the
        earlier release, which the delta_log and delta_state benchmarks compare against: it
        left an existing table's log settings as they were, checkpointed inside its commits
        and kept one `DeltaTable` up to date for good. With `reopen_after_checkpoint` on, a
        log keeper writes the checkpoints beside the commits and hands over the table opened
        afresh for them (`sinks.log_keeper`).

        `log_cleanup_every` (commits) spaces the log cleanups out where checkpoints come more
        often (`_cleanup_due`); None cleans at every checkpoint. `view_reuse_s` 0
        reads the table before every batch, as the earlier release did (`misfits`).
        `on_checkpoint_failure` is called for each checkpoint its log keeper fails to write,
        `on_checkpoint` with the seconds each one written took (the sink's metrics).
        `stretch_checkpoints` off keeps every checkpoint at the table's interval however long
        they take (`sinks.table_log.checkpoint_stretch`), as before (for benchmarks)."""
        self.target = target
        self.log_cleanup_every = log_cleanup_every
        self.storage_options = storage_options or None
        self.checkpoint_interval = checkpoint_interval
        self.log_properties = log_properties(checkpoint_interval, log_retention_hours)
        """Given to the table when this writer creates it, and to an older table lacking them
        when this writer first opens it (`sinks.table_log`)."""
        self._adopted = not adopt_log_properties
        self.reopen_after_checkpoint = reopen_after_checkpoint
        self._keeper = (
            LogKeeper(target.uri, self.storage_options, on_checkpoint_failure, on_checkpoint)
            if reopen_after_checkpoint
            else None
        )
        self.retry_budget_s = retry_budget_s
        self.stop = stop or threading.Event()
        self._retry = RetryBudget(retry_budget_s, is_transient, self.stop)
        self._table: DeltaTable | None = None
        self._opened_version = -1
        """The table's version when `_table` was opened (see `_care_for_log`)."""
        self._care_asked_at = -1
        """The table's version when the log keeper was last asked for care."""
        self.stretch_checkpoints = stretch_checkpoints
        self._failed: PipelineError | None = None
        self._txns = TxnVersions(self._log_entry)
        self._fs: pafs.FileSystem | None = None
        self._just_read = False
        """Set by `misfits`: the table was just brought up to date, the next write need not."""
        self.view_reuse_s = view_reuse_s
        self._viewed_at = -math.inf
        """`time.monotonic()` when `_table` was last brought up to date: read, or committed to."""
        # The dead-letter table's writer is shared by every table's flush thread.
        self._lock = threading.Lock()
        self.commits = 0
        self.rows = 0
        self.write_seconds = 0.0
        """Time spent in `write`, waiting for the lock included (the sink benchmark's figure)."""

    @property
    def partition_by(self) -> list[str]:
        return ["event_date", "event_hour"] if self.target.settings.hourly else ["event_date"]

    def _retrying(self, what: str, action):
        """`action()` within the retry budget; once the budget is spent, this writer fails
        every later call too (an abandoned attempt may still be using its table)."""
        if self._failed is not None:
            raise self._failed

        def logged():
            try:
                return action()
            except Exception as exc:
                if is_transient(exc):
                    log.warning("%s %s failed (%s); retrying", what, self.target.uri, exc)
                raise

        try:
            return self._retry.run(f"{what} {self.target.uri}", logged)
        except PipelineError as exc:
            self._failed = exc
            raise

    def _refresh(self) -> DeltaTable | None:
        """The table at its latest version, or None while it does not exist yet."""
        if self._table is None:
            try:
                self._table = DeltaTable(self.target.uri, storage_options=self.storage_options)
            except TableNotFoundError:
                return None
            if not self._adopted:
                self._adopt_log_properties(self._table)
            self._opened_version = self._table.version()
        else:
            self._table.update_incremental()
        self._viewed_at = time.monotonic()
        return self._table

    def _adopt_log_properties(self, table: DeltaTable) -> None:
        """Give a table that lacks them (created by an earlier release, or by another tool) the
        log settings, once per writer. The metadata commit may lose a race with another
        writer's commit: re-read and try again (that writer may have set them meanwhile)."""
        for conflict_attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                adopt(table, self.log_properties)
                break
            except CommitFailedError:
                if conflict_attempt == CONFLICT_ATTEMPTS:
                    raise
                table.update_incremental()
        self._adopted = True

    def _clean_log_at_checkpoint(self) -> None:
        """The earlier writer's cleanup, right after the checkpoint its commit wrote
        (`_cleanup_due`). A failed cleanup loses nothing: the next checkpoint's takes its files.
        """
        table = self._table
        if table is not None and self._cleanup_due(table, self._table_checkpoint_interval(table)):
            clean_expired_log(table, self.target.uri)

    def _cleanup_due(self, table: DeltaTable, interval: int) -> bool:
        """Whether the checkpoint of the table's version is one to delete expired log files
        (`delta.logRetentionDuration`) after, and only then.

        Left to delta-rs, every commit lists the table's whole `_delta_log` to look for expired
        files, although files only become deletable past a new checkpoint: with a commit every
        few seconds and 7 days of log kept, that is a LIST of some 200,000 keys (200 requests)
        per commit. Expired files that age past the retention between checkpoints go with the
        next one. With a checkpoint every 20 commits, only every `log_cleanup_every` commits'
        checkpoint cleans (`sinks.table_log.cleanup_interval`), so the listing stays as rare as
        before.
        """
        configuration = table.metadata().configuration
        if (configuration.get("delta.enableExpiredLogCleanup") or "true").lower() == "false":
            return False
        return (table.version() + 1) % cleanup_interval(interval, self.log_cleanup_every) == 0

    def _table_checkpoint_interval(self, table: DeltaTable) -> int:
        """The interval delta-rs checkpoints this table at: its own `delta.checkpointInterval`
        (a table created by an earlier release, or set by an operator), else this writer's."""
        configured = table.metadata().configuration.get(CHECKPOINT_INTERVAL)
        return int(configured or self.checkpoint_interval)

    def _care_for_log(self, committed: bool) -> None:
        """Ask the log keeper for the checkpoint this writer's commit made due, and for the
        table opened afresh.

        A `DeltaTable` brought up to date with `update_incremental` keeps growing with every
        commit it has seen (about 65 KB each here, never given back): a sink committing its
        emergency table every second grew by 115 MB in 30 minutes, which would be gigabytes
        in a week. The keeper checkpoints the writer's own table (lent until then) and opens
        the table afresh from that checkpoint; the writer goes on on it (`_take_fresh_view`). A
        checkpoint is due at the versions v with (v + 1) % interval == 0, the table's own
        interval, as delta-rs's hook would write it, or a multiple of it while this writer's
        checkpoints take long (`sinks.table_log.checkpoint_stretch`); two intervals without
        landing on one (other writers commit to the table too) ask for a fresh open anyway.
        """
        table = self._table
        if table is None:
            return
        if self._keeper is None:  # the earlier writer: delta-rs's hook checkpointed
            if committed:
                self._clean_log_at_checkpoint()
            return
        version = table.version()
        own = self._table_checkpoint_interval(table)
        stretch = checkpoint_stretch(self._keeper.checkpoint_cpu_s, own)
        interval = own * stretch if self.stretch_checkpoints else own
        if committed and (version + 1) % interval == 0:
            care = LogCare(version, checkpoint=True, clean=self._cleanup_due(table, interval))
            self._keeper.request(care, table)
            self._care_asked_at = version
        elif min(version - self._opened_version, version - self._care_asked_at) >= 2 * interval:
            self._keeper.request(LogCare(version, checkpoint=False, clean=False))
            self._care_asked_at = version

    def _take_fresh_view(self) -> None:
        """Have the table lent to the log keeper back, and go on the one the keeper opened
        last if it opened one since: brought up to this writer's own last commit (a LIST and
        the few commits since), it holds the same state as the writer's own view, without the
        history that view has accumulated."""
        if self._keeper is None:
            return
        if not self._keeper.returned(self.retry_budget_s):
            self._failed = PipelineError(
                f"checkpointing {self.target.uri} took over {self.retry_budget_s:.0f} s "
                "(the retry budget); restart the sink once the object store answers again"
            )
            raise self._failed
        fresh = self._keeper.fresh_view()
        if fresh is None:
            return
        opened = fresh.version()
        if self._table is not None and opened < self._table.version():
            self._retrying("reading", fresh.update_incremental)
        self._table, self._opened_version = fresh, opened

    def settle(self, timeout_s: float | None = None) -> bool:
        """Wait for the log care asked for so far (for tests and benchmarks); False if
        `timeout_s` passed first."""
        return self._keeper is None or self._keeper.settle(timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Finish the checkpoint this writer owes, within `timeout_s`, so that a sink that
        stops leaves its tables as quick to open as it found them."""
        if self._keeper is not None and not self._keeper.close(timeout_s):
            log.warning(
                "the checkpoint of %s was still being written after %.0f s; the table opens "
                "from the previous one until the next",
                self.target.uri,
                timeout_s,
            )

    def _load(self) -> DeltaTable | None:
        return self._retrying("reading", self._refresh)

    def _recent_view(self) -> DeltaTable | None:
        """The table as this writer last saw it, if that was within `view_reuse_s`.

        A sink that commits a table every few seconds left the table at its own commit a
        moment ago; reading it again before the next batch cost a LIST, a GET and a log
        replay per commit, about a sixth of a small commit's CPU and a quarter of its
        requests. Going on that view loses nothing: another writer's commit since then that
        moved the same topic-partitions (a rebalance's previous owner, a second consumer
        group, a replay) fails this commit's conflict check on their txn app ids, and the
        batch is read again and filtered like any lost race (`write`). Rebalances read the
        table afresh anyway (`txn_version`). The age bound keeps the view within the log
        that the table's retention keeps for that check."""
        if self._table is not None and time.monotonic() - self._viewed_at < self.view_reuse_s:
            return self._table
        return None

    def misfits(self, schema: pa.Schema) -> list[str]:
        """Columns of `schema` whose type the table's column cannot take (empty: it fits).

        Checked before writing, per schema id, so that records of an incompatible schema
        change go to the dead-letter table instead of failing a commit that also carries
        good records. New columns fit (the table's schema is merged); so do the widenings
        Avro allows (int to long, float to double). Checked on a recent view of the table
        (`_recent_view`): a schema another writer changed since then fails the commit's
        conflict check, and the commit retried on a fresh read fails loudly if the batch no
        longer fits; the sink's restart then dead-letters the records that do not fit.
        """
        with self._lock:
            self._take_fresh_view()
            table = self._recent_view()
            if table is None:
                table = self._load()
            self._just_read = True
        if table is None:
            return []
        return conflicts(schema, pa.schema(table.schema().to_arrow()), "the table")

    def _check_still_fits(self, schema: pa.Schema, table: DeltaTable) -> None:
        """Fail a retried commit whose batch the table's schema, changed by another writer
        since the batch was checked (`misfits`), no longer takes.

        delta-rs would otherwise cast the batch's column to the table's type (an int to a
        string) where the sink's rule sends such records to the dead-letter table. Nothing
        of the batch is written; the sink stops, and its restart checks the batch on a fresh
        read and dead-letters the records that do not fit."""
        misfit = conflicts(schema, pa.schema(table.schema().to_arrow()), "the table")
        if misfit:
            raise PipelineError(
                f"another writer changed the schema of {self.target.uri} while a batch was "
                f"being written ({'; '.join(misfit)}); nothing of the batch was written: "
                "restart the sink, which then sends the records that no longer fit to the "
                "dead-letter table"
            )

    def txn_version(self, topic: str, partition: int) -> int | None:
        """The last offset of `topic`/`partition` this table holds, or None."""
        with self._lock:
            self._take_fresh_view()
            table = self._load()
            if table is None:
                return None
            key = app_id(topic, partition)
            return self._txns.versions(table, [key])[key]

    def _versions(
        self, table: DeltaTable | None, pairs: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        """The table's txn version (last offset it holds) of each topic-partition in `pairs`."""
        if table is None:
            return dict.fromkeys(pairs)
        known = self._txns.versions(table, [app_id(t, p) for t, p in pairs])
        return {(t, p): known[app_id(t, p)] for t, p in pairs}

    @staticmethod
    def _unwritten(data: pa.Table, versions: dict[tuple[str, int], int | None]) -> pa.Table:
        """The rows of `data` past the table's txn `versions`, partition by partition.

        `data` itself when every row is new (nearly every batch): filtering would copy the
        whole batch, a second copy of it held while delta-rs writes it."""
        keep = None
        for (topic, partition), version in versions.items():
            if version is None:
                continue
            stale = pc.and_(
                pc.and_(
                    pc.equal(data.column("_kafka_topic"), topic),
                    pc.equal(data.column("_kafka_partition"), partition),
                ),
                pc.less_equal(data.column("_kafka_offset"), version),
            )
            keep = pc.invert(stale) if keep is None else pc.and_(keep, pc.invert(stale))
        if keep is None or (keep.null_count == 0 and pc.all(keep).as_py()):
            return data
        return data.filter(keep)

    @staticmethod
    def _advancing(
        last_offsets: dict[tuple[str, int], int], versions: dict[tuple[str, int], int | None]
    ) -> list[Transaction]:
        """Txn actions for the topic-partitions this batch moves forward, and only those.

        A batch may hold records the table has (a sink re-reading a topic for its landing
        area, a second consumer group on the same table, a replay) beside new ones of another
        partition. Recording the stale partition's lower last offset would move its version
        backwards, and its next records would land again; leaving it out keeps the version
        where it is. It also keeps the commit out of conflict with a writer that advances
        that partition meanwhile: delta-rs fails a commit whose txn app ids a concurrent
        commit also set (the retry then re-reads and re-filters), and lets the others through.
        """
        return [
            Transaction(app_id(t, p), offset)
            for (t, p), offset in last_offsets.items()
            if versions[(t, p)] is None or offset > versions[(t, p)]
        ]

    def _committed_rows(
        self, table: DeltaTable, commit_id: str, attempt: tuple[int, int]
    ) -> int | None:
        """The rows of `attempt` (version it started from, rows) when its commit, tagged
        `commit_id`, is in the table although the attempt failed; else None.

        Only the newest attempt can have landed: each one first checks here for the previous.
        The new versions' commit files are read directly (usually one small object):
        `DeltaTable.history` stalled for minutes right after a lost response on S3Proxy.
        """
        since, rows = attempt
        needle = commit_id.encode()
        if any(needle in self._log_entry(v) for v in range(since + 1, table.version() + 1)):
            return rows
        return None

    def _log_entry(self, version: int) -> bytes:
        """The raw commit file of `version`."""
        parsed = urlparse(self.target.uri)
        name = f"_delta_log/{version:020d}.json"
        if parsed.scheme in ("s3", "s3a"):
            if self._fs is None:
                self._fs = s3_filesystem(self.storage_options)
            fs = self._fs
            path = f"{parsed.netloc}{parsed.path.rstrip('/')}/{name}"
        elif parsed.scheme in ("", "file"):
            fs = pafs.LocalFileSystem()
            path = str(Path(parsed.path if parsed.scheme else self.target.uri) / name)
        else:
            fs, path = pafs.FileSystem.from_uri(f"{self.target.uri.rstrip('/')}/{name}")
        with fs.open_input_stream(path) as stream:
            return stream.read()

    def _latest(self, first_attempt: bool) -> DeltaTable | None:
        """The table to commit on: as `misfits` just read it for this batch's first attempt,
        else read again.

        Reading the table costs two object-store requests and a log replay, and a batch's
        schemas are checked (`misfits`) right before it is written, so the first attempt
        commits on that read. Nothing is lost by it: a commit that another writer got in
        before is caught by delta-rs's conflict check (the same txn app ids) and retried on
        a fresh read, exactly as one landing between a read here and the commit would be.
        """
        just_read, self._just_read = self._just_read, False
        if first_attempt and just_read and self._table is not None:
            return self._table
        return self._refresh()

    def write(self, data: pa.Table, last_offsets: dict[tuple[str, int], int]) -> int:
        """Append the rows of `data` not yet in the table; returns the rows written.

        `last_offsets` gives, per topic-partition of the batch, the last offset it covers
        (recorded as the txn version where it is past the table's, even where that offset's
        record went elsewhere). Every
        attempt re-reads the table first: a commit that succeeded although its response was
        lost is then seen, and not repeated.
        """
        started = time.perf_counter()
        with self._lock:
            try:
                return self._write(data, last_offsets)
            finally:
                self.write_seconds += time.perf_counter() - started

    def _write(self, data: pa.Table, last_offsets: dict[tuple[str, int], int]) -> int:
        self._take_fresh_view()
        pairs = list(last_offsets)
        commit_id = uuid.uuid4().hex
        # Set when an attempt was made: (table version it started from, rows it carried).
        tried: list[tuple[int, int]] = []

        def attempt() -> int:
            for conflict_attempt in range(1, CONFLICT_ATTEMPTS + 1):
                try:
                    return commit()
                except CommitFailedError as exc:
                    if conflict_attempt == CONFLICT_ATTEMPTS:
                        raise
                    log.info("commit to %s lost a race (%s); re-reading", self.target.uri, exc)
            raise AssertionError("unreachable")

        def commit() -> int:
            table = self._latest(first_attempt=not tried)
            if tried and table is not None:
                landed = self._committed_rows(table, commit_id, tried[-1])
                if landed is not None:
                    log.info("commit to %s had landed although it failed", self.target.uri)
                    self._txns.forget()
                    return landed
            versions = self._versions(table, pairs)
            fresh = self._unwritten(data, versions)
            if fresh.num_rows == 0:
                return 0
            if tried and table is not None:
                self._check_still_fits(fresh.schema, table)
            tried.append((-1 if table is None else table.version(), fresh.num_rows))
            advancing = self._advancing(last_offsets, versions)
            write_deltalake(
                table if table is not None else self.target.uri,
                fresh,
                mode="append",
                partition_by=self.partition_by,
                schema_mode="merge",
                storage_options=self.storage_options if table is None else None,
                configuration=self.log_properties if table is None else None,
                post_commithook_properties=NO_LOG_CLEANUP if self._keeper is None else NO_LOG_CARE,
                commit_properties=CommitProperties(
                    app_transactions=advancing,
                    custom_metadata={COMMIT_ID: commit_id},
                ),
            )
            if table is not None:  # now at the version it committed
                self._txns.committed(table.version(), {t.app_id: t.version for t in advancing})
                self._viewed_at = time.monotonic()
            return fresh.num_rows

        written = self._retrying("writing", attempt)
        self._care_for_log(committed=written > 0)
        if self._table is None:
            self._table = self._retrying("reading", self._refresh)
        if written:
            self.commits += 1
            self.rows += written
        return written
