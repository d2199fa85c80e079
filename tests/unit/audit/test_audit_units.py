"""The audit's pure parts: missing rowids as ranges, dead-letter reasons, checkpoints read
tolerantly (a newer producer's extra fields are ignored, a broken record is a finding)."""

from __future__ import annotations

import json

from audit.checkpoints import SentRows, UnreadableCheckpoint, parse_checkpoint
from audit.reconcile import gaps, reason_of


def test_gaps_are_inclusive_ranges_of_the_rowids_not_held():
    assert gaps([1, 2, 5, 6, 9], 10) == [(3, 4), (7, 8), (10, 10)]
    assert gaps([], 3) == [(1, 3)]
    assert gaps([1, 2, 3], 3) == []
    assert gaps([2, 7], 5) == [(1, 1), (3, 5)]  # rows past the checkpoint are not gaps


def test_reasons_drop_the_values_that_make_each_letter_different():
    assert reason_of("temperature: text 'hot' in a numeric column") == "temperature"
    assert reason_of("schema id 12 does not fit table x: a") == "schema id N does not fit table x"
    assert reason_of(None) == "(no reason given)"


def test_a_checkpoint_with_fields_a_newer_producer_added_is_read():
    value = {
        "format": 2,
        "node_id": "edge-1",
        "table": "sensor_readings",
        "db": "/data/edge.db",
        "rowid": 41,
        "rows_total": 40,
        "dead_letters": 2,
        "something_new": {"x": 1},
    }
    parsed = parse_checkpoint("edge-1/sensor_readings", json.dumps(value).encode())
    assert parsed == SentRows("edge-1", "sensor_readings", 41, 40, 2, "/data/edge.db")


def test_a_checkpoint_without_what_the_audit_needs_is_a_finding():
    parsed = parse_checkpoint("edge-1/t", b'{"node_id": "edge-1"}')
    assert isinstance(parsed, UnreadableCheckpoint) and parsed.key == "edge-1/t"
    assert isinstance(parse_checkpoint("k", b"not json"), UnreadableCheckpoint)
