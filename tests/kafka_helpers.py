"""Reading topics back in tests: everything up to the end, as a read_committed consumer would."""

from __future__ import annotations

from schemas import avro_codec
from schemas.registry import SchemaRegistry
from sensorstream.topics import read_to_end


def read_topic(
    bootstrap: str,
    topic: str,
    isolation: str = "read_committed",
    timeout: float = 60,
    await_open_transactions: bool = False,
):
    """Every message of `topic` from the beginning to its end at call time.

    By default up to the first transaction still open, without waiting for it: tests look at
    topics whose writer they may just have killed mid-transaction.
    """
    config = {"bootstrap.servers": bootstrap}
    return read_to_end(
        config,
        topic,
        isolation=isolation,
        timeout=timeout,
        await_open_transactions=await_open_transactions,
    )


class AvroDecoder(avro_codec.AvroDecoder):
    """The product's decoder (writer schema by id, strict framing), built from a registry URL."""

    def __init__(self, registry_url: str) -> None:
        super().__init__(SchemaRegistry({"url": registry_url}))
