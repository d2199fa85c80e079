"""Reading a transactional topic to its end while another producer's transaction is open.

Every edge node writes its checkpoint to one shared topic. A read_committed reader stops at
the last stable offset, i.e. at the first transaction still open; if that is where it took
"the end" to be, a node restarting while another node is mid-transaction (or died in one)
would miss its own later checkpoints and resend rows. The chaos test found exactly that.
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer

from sensorstream.topics import TopicSpec, ensure_topics, read_to_end

pytestmark = pytest.mark.integration


def _transactional(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(30)
    return producer


@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_records_committed_behind_an_open_transaction_are_read(kafka, unique, outcome):
    config = {"bootstrap.servers": kafka.bootstrap_servers}
    topic = f"readtoend.{unique}"
    ensure_topics(config, [TopicSpec(topic, 1)])

    other_node = _transactional(kafka.bootstrap_servers, f"other-{unique}")
    other_node.begin_transaction()
    other_node.produce(topic, key=b"other", value=b"in flight")
    other_node.flush(30)  # in the log, not yet committed: the last stable offset stops here

    this_node = _transactional(kafka.bootstrap_servers, f"this-{unique}")
    this_node.begin_transaction()
    this_node.produce(topic, key=b"this", value=b"checkpoint 200")
    this_node.commit_transaction(30)

    def finish_other() -> None:
        if outcome == "commit":
            other_node.commit_transaction(30)
        else:
            other_node.abort_transaction(30)

    finisher = threading.Timer(1.5, finish_other)
    finisher.start()
    try:
        values = [m.value() for m in read_to_end(config, topic, timeout=120)]
    finally:
        finisher.join()

    expected = [b"in flight", b"checkpoint 200"] if outcome == "commit" else [b"checkpoint 200"]
    assert values == expected
