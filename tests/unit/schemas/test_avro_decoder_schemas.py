"""The decoder and schema ids that are not Avro records: a clean UndecodableMessage (a dead
letter at the router and the sink), never another exception that stops the process; asked of
the registry once, since an id never changes meaning."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.avro_codec import AvroDecoder, AvroEncoder, UndecodableMessage
from schemas.registry import NotAvroSchema

RECORD = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}


class Registry:
    """`schema_by_id` as SchemaRegistry answers it, counting the questions."""

    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    def schema_by_id(self, schema_id: int) -> Any:
        self.asked.append(schema_id)
        answer = self.answers.get(schema_id)
        if isinstance(answer, Exception):
            raise answer
        return answer


def frame(schema_id: int, body: bytes = b"\x02") -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def test_a_record_schema_decodes() -> None:
    decoder = AvroDecoder(Registry({1: RECORD}))  # type: ignore[arg-type]
    assert decoder.decode(AvroEncoder(RECORD, 1).encode({"a": 7})) == (1, {"a": 7})


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("string", 'schema id 5 is not an Avro record schema: "string"'),
        ({"type": "array", "items": "long"}, "schema id 5 is not an Avro record schema: {"),
        (["null", RECORD], "schema id 5 is not an Avro record schema: ["),
        (NotAvroSchema("schema id 5 is a PROTOBUF schema, not Avro"), "schema id 5 is a PROTOBUF"),
        (
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]},
            "schema id 5 cannot be read: ",
        ),
    ],
)
def test_a_schema_that_is_not_an_avro_record_is_undecodable_and_asked_once(
    answer: Any, message: str
) -> None:
    registry = Registry({5: answer})
    decoder = AvroDecoder(registry)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(UndecodableMessage) as info:
            decoder.decode(frame(5))
        assert str(info.value).startswith(message), str(info.value)
        with pytest.raises(UndecodableMessage):
            decoder.writer_schema(5)
    assert registry.asked == [5]


def test_an_unknown_id_is_asked_again() -> None:
    registry = Registry({})
    decoder = AvroDecoder(registry)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(UndecodableMessage, match="not in the schema registry"):
            decoder.decode(frame(9))
    registry.answers[9] = RECORD  # registered a moment later
    assert decoder.decode(frame(9, b"\x04")) == (9, {"a": 2})
    assert registry.asked == [9, 9, 9]
