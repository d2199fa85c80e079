"""The first-wins rule every control-topic reader applies, and what counts as a version."""

from __future__ import annotations

import pytest

from stream_apps.control import ControlLog, NotARoutingVersion, RoutingVersion


def version(n: int, who: str) -> RoutingVersion:
    return RoutingVersion(n, f"# {who}\n", f"hash-{who}", who, "2026-12-02T17:00:00+00:00", "f")


def test_the_first_message_for_a_version_wins_and_later_ones_are_ignored():
    log = ControlLog()
    assert log.add(0, version(1, "alice").to_bytes()) == version(1, "alice")
    assert log.add(1, version(2, "alice").to_bytes()) == version(2, "alice")
    assert log.add(2, version(2, "bob").to_bytes()) is None  # lost the race for 2
    assert log.add(3, version(3, "bob").to_bytes()) == version(3, "bob")
    assert [v.applied_by for v in log.history()] == ["alice", "alice", "bob"]
    assert log.winners[2][0] == 1
    assert log.latest() == version(3, "bob")
    assert log.end == 4


def test_messages_that_are_not_versions_are_skipped_and_do_not_take_a_number():
    log = ControlLog()
    assert log.add(0, b"\xff\xfe") is None
    assert log.add(1, b'{"version": 1}') is None
    assert log.add(2, None) is None  # a tombstone
    assert log.add(3, version(1, "carol").to_bytes()) == version(1, "carol")
    assert [offset for offset, _ in log.bad] == [0, 1]
    assert "field 'content' is missing" in log.bad[1][1]
    assert log.history() == [version(1, "carol")]


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b'"text"',
        b'{"version": "1", "content": "", "content_hash": "", "applied_by": "",'
        b' "applied_at": "", "source": ""}',
        b"",
        b'{"version": 0}',
    ],
)
def test_not_a_routing_version(data):
    with pytest.raises(NotARoutingVersion, match="not a routing version"):
        RoutingVersion.from_bytes(data)


def test_fields_a_later_release_adds_are_ignored():
    data = version(4, "dan").to_bytes()[:-1] + b', "reason": "rollback"}'
    assert RoutingVersion.from_bytes(data) == version(4, "dan")
