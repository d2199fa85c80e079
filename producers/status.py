"""What the tailer tells the operator: a line when its state changes, one line per interval
otherwise — never a line per record or per failed connection, so an edge node that is offline
for hours writes a few hundred lines, not millions."""

from __future__ import annotations

import logging
import time

from producers.metrics import ProducerMetrics

log = logging.getLogger("sensorstream.producer")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class TailerStatus:
    """Also keeps the offline and backlog gauges: the same transitions, told to Prometheus."""

    def __init__(self, interval_s: float, metrics: ProducerMetrics | None = None) -> None:
        self.interval_s = interval_s
        self.metrics = metrics or ProducerMetrics()
        self.offline_since: float | None = None
        self.offline_reason = ""
        self.retries = 0
        self._last_log = time.monotonic()
        self._rows_since_log = 0
        self._dead_since_log = 0
        self.last_rowid = 0

    def offline(self, reason: str) -> None:
        self.metrics.offline(True)
        if self.offline_since is None:
            self.offline_since = time.monotonic()
            log.warning(
                "Kafka or the schema registry is unreachable (%s); SQLite keeps the rows "
                "and the producer retries with backoff",
                reason,
            )
        self.offline_reason = reason
        self.retries += 1

    def online(self) -> None:
        self.metrics.offline(False)
        if self.offline_since is not None:
            log.info(
                "reconnected after %s offline (%d retries); catching up",
                _duration(time.monotonic() - self.offline_since),
                self.retries,
            )
        self.offline_since = None
        self.retries = 0

    def committed(self, rows: int, dead_letters: int, last_rowid: int) -> None:
        self._rows_since_log += rows
        self._dead_since_log += dead_letters
        self.last_rowid = last_rowid

    def maybe_log(self, backlog: int) -> None:
        self.metrics.backlog(backlog)
        now = time.monotonic()
        elapsed = now - self._last_log
        if elapsed < self.interval_s:
            return
        if self.offline_since is not None:
            log.warning(
                "offline for %s (%s); %d retries; backlog %d rows in SQLite",
                _duration(now - self.offline_since),
                self.offline_reason,
                self.retries,
                backlog,
            )
        else:
            log.info(
                "streaming: %d rows in %.0fs (%.0f rows/s), %d to the dead-letter topic, "
                "last rowid %d, backlog %d rows",
                self._rows_since_log,
                elapsed,
                self._rows_since_log / elapsed,
                self._dead_since_log,
                self.last_rowid,
                backlog,
            )
        self._last_log = now
        self._rows_since_log = 0
        self._dead_since_log = 0
