"""The router finds the producer of quixstreams' checkpoints, or says plainly that it cannot."""

from __future__ import annotations

import types

import pytest
from quixstreams import Application
from quixstreams.internal_producer import InternalProducer

from stream_apps.checkpoint_output import QuixstreamsInternalsChanged, checkpoint_producer


def test_the_checkpoint_producer_of_an_exactly_once_application(tmp_path) -> None:
    app = Application(
        broker_address="127.0.0.1:1",  # nothing connects before run()
        consumer_group="unit",
        processing_guarantee="exactly-once",
        state_dir=tmp_path,
    )
    producer = checkpoint_producer(app)
    assert isinstance(producer, InternalProducer)
    assert producer is app._processing_context.producer  # the one every checkpoint uses


@pytest.mark.parametrize(
    "app",
    [
        types.SimpleNamespace(),
        types.SimpleNamespace(_producer=object()),
    ],
    ids=["no producer", "another kind of producer"],
)
def test_other_quixstreams_internals_are_refused_clearly(app) -> None:
    with pytest.raises(QuixstreamsInternalsChanged, match=r"install quixstreams 3\.28"):
        checkpoint_producer(app)
