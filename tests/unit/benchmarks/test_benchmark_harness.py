"""The benchmarks' shared harness: a worker's result line is found among its other output, and
transactional produce drains a full queue instead of dropping a message."""

from __future__ import annotations

import pytest

from benchmarks.harness import emit, parse_worker_output, produce_in_transactions


def test_the_result_line_is_found_after_other_output(capsys) -> None:
    print("a worker's own progress line")
    emit({"rows": 3, "seconds": 1.5})
    print("BENCH-RESULT-lookalike without the mark's space")
    assert parse_worker_output(capsys.readouterr().out) == {"rows": 3, "seconds": 1.5}


def test_a_worker_without_a_result_fails_with_its_output() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)printed no result.*traceback here"):
        parse_worker_output("starting\ntraceback here\n")


class QueueFullOnce:
    """A producer whose queue is full at every third produce until polled."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.calls = 0
        self.full = False
        self.log: list[str] = []

    def begin_transaction(self) -> None:
        self.log.append("begin")

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.calls += 1
        if self.calls % 3 == 0 and not self.full:
            self.full = True
            raise BufferError("queue full")
        self.sent.append((topic, key, value))

    def poll(self, timeout: float) -> None:
        self.full = False


def test_produce_in_transactions_sends_every_message_once_per_chunk() -> None:
    producer = QueueFullOnce()
    messages = [(b"k1", b"v1"), (b"k2", b"v2")]
    commits: list[int] = []
    seconds, transactions = produce_in_transactions(
        producer, "t", messages, total=7, chunk=3, commit=lambda: commits.append(1)
    )
    assert [(k, v) for _, k, v in producer.sent] == [messages[i % 2] for i in range(7)]
    assert transactions == 3 == len(commits) == producer.log.count("begin")
    assert seconds >= 0
