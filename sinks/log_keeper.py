"""One table's log care (checkpoints, expired-log cleanup, a fresh open) on a thread of its own.

A checkpoint commit held its table's flush lane: delta-rs's post-commit hook writes the
checkpoint inside the commit call, and the writer then opened the table afresh from it. That
took a commit of a small table from about 35 ms to 190-250 ms on this machine, and a week-old
table's checkpoint (some 200,000 removals kept for `delta.deletedFileRetentionDuration`) costs
a third of a second of CPU by itself. None of it is needed for the batch to be in the table:
the commit is. So the writer commits without the hook's checkpoint and lends its table to the
keeper, which checkpoints it from the state the writer already holds (no read), cleans the
expired log where due, gives the table back, then opens the table afresh from the new
checkpoint and hands that over too; the writer's next batch goes on the fresh one instead of
its own ever-growing one (`DeltaTableWriter._take_fresh_view`). The next batch waits for the
lent table only if it is ready before the checkpoint is written (one to three seconds later
at the default flush latencies: it rarely is); the fresh open never holds a batch.

Opening the table at the checkpoint's version from the previous checkpoint instead (no
lending) kept the writer off the table for good, but cost a log replay per checkpoint: 3-4 ms
more CPU per commit than the hook.

Nothing of a batch depends on the keeper: a checkpoint that fails or is late only makes opens
of the table replay more commits until the next one, which the writer asks for at the next
checkpoint due. A failure is logged as a warning naming the table, and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from deltalake import DeltaTable

from sinks.table_log import clean_expired_log

log = logging.getLogger("sensorstream.sink")


@dataclass(frozen=True)
class LogCare:
    """What the writer's commit of `version` made due."""

    version: int
    checkpoint: bool
    """Checkpoint `version` on the table lent with the request (the table's interval: readers
    and other writers expect them there); else only open the table afresh, at its latest
    version."""
    clean: bool
    """Delete the log files past the table's `delta.logRetentionDuration` after the checkpoint."""

    def merged(self, later: LogCare) -> LogCare:
        """Requests that came while the keeper was busy: one open does them all. A writer
        asks for a checkpoint only once it has its lent table back, so a checkpoint asked
        for is never merged away, and a fresh open asked for before it is part of it."""
        return self if self.checkpoint and not later.checkpoint else later


class LogKeeper:
    """Cares for one table's log on a daemon thread, started at the first request."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None,
        on_failure: Callable[[], None] | None = None,
        on_checkpoint: Callable[[float], None] | None = None,
    ) -> None:
        """`on_failure` is called (on the keeper's thread) for each checkpoint that fails,
        `on_checkpoint` with the seconds each one written took."""
        self.uri = uri
        self.storage_options = storage_options
        self.on_failure = on_failure
        self.on_checkpoint = on_checkpoint
        self._changed = threading.Condition()
        self._due: LogCare | None = None
        self._lent: DeltaTable | None = None
        """The writer's table, from a checkpoint request until it is checkpointed."""
        self._busy = False
        self._closed = False
        self._fresh: DeltaTable | None = None
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.failures = 0
        self.checkpoint_cpu_s = 0.0
        """CPU seconds of the process while the last checkpoint was written and the table
        opened afresh from it: what a checkpoint costs the sink, give or take what its other
        threads did meanwhile (`sinks.table_log.checkpoint_stretch`)."""

    def request(self, care: LogCare, table: DeltaTable | None = None) -> None:
        """Ask for `care` after a commit; returns at once. A checkpoint request lends the
        writer's `table`, at `care.version`: the writer must not use it before `returned`."""
        if care.checkpoint and table is None:
            raise ValueError("a checkpoint is written from the writer's table: lend it")
        with self._changed:
            if self._closed:
                raise RuntimeError(f"the log keeper of {self.uri} is closed")
            if care.checkpoint:
                self._changed.wait_for(lambda: self._lent is None)
                self._lent = table
            self._due = care if self._due is None else self._due.merged(care)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"log-keeper {self.uri}", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def returned(self, timeout_s: float | None = None) -> bool:
        """Wait until the table lent with the last checkpoint request is the writer's again;
        False if `timeout_s` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._lent is None, timeout=timeout_s)

    def fresh_view(self) -> DeltaTable | None:
        """The table as the keeper last opened it, once; None if it has not opened one since."""
        with self._changed:
            fresh, self._fresh = self._fresh, None
            return fresh

    def settle(self, timeout_s: float | None = None) -> bool:
        """Wait until everything requested so far is done; False if `timeout_s` passed first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._due is None and not self._busy, timeout=timeout_s
            )

    def close(self, timeout_s: float | None = None) -> bool:
        """Finish what was requested (within `timeout_s`), then stop the thread.

        False if the care in flight did not finish in time: it goes on on its daemon thread,
        and a checkpoint cut short by the process's exit is simply not there (the object
        store takes a checkpoint in one put, and `_last_checkpoint` is written after it)."""
        settled = self.settle(timeout_s)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        return settled

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._due is not None or self._closed)
                if self._due is None:
                    return
                care, self._due, self._busy = self._due, None, True
                lent = self._lent
            cpu_started = time.process_time()
            written = False
            if care.checkpoint and lent is not None:
                written = self._checkpoint(care, lent)
                with self._changed:
                    self._lent = None
                    self._changed.notify_all()
            fresh = self._open(care)
            if written:
                # The process's CPU (delta-rs works on threads of its own), not wall time: a
                # loaded machine must not make checkpoints look costly.
                self.checkpoint_cpu_s = time.process_time() - cpu_started
            with self._changed:
                self._busy = False
                if fresh is not None:
                    self._fresh = fresh
                self._changed.notify_all()

    def _checkpoint(self, care: LogCare, table: DeltaTable) -> bool:
        """Write the checkpoint (and clean the log if due); False if it failed."""
        started = time.perf_counter()
        try:
            table.create_checkpoint()
            self.checkpoints += 1
        except Exception as exc:  # the log only replays longer: never fail a batch on it
            self.failures += 1
            if self.on_failure is not None:
                self.on_failure()
            log.warning(
                "writing a checkpoint of %s failed (%s); the next checkpoint due retries",
                self.uri,
                exc,
            )
            return False
        if self.on_checkpoint is not None:
            self.on_checkpoint(time.perf_counter() - started)
        if care.clean:
            clean_expired_log(table, self.uri)
        return True

    def _open(self, care: LogCare) -> DeltaTable | None:
        """The table opened afresh: at the checkpoint just written (it reads that and no
        commit), else at its latest version."""
        at = care.version if care.checkpoint else None
        try:
            return DeltaTable(self.uri, version=at, storage_options=self.storage_options)
        except Exception as exc:  # the writer goes on on its own table meanwhile
            log.warning(
                "opening %s afresh failed (%s); the writer goes on on the table it has",
                self.uri,
                exc,
            )
            return None
