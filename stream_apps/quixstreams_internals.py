"""Everything the router needs from quixstreams beyond its documented API, in one module.

The router reaches the application's processing context through the public
`StreamingDataFrame.processing_context`, and its producer and consumer through that context's
public `producer` and `consumer` attributes. quixstreams offers no public way to do the rest,
so this module does it, and only this module:

- `on_commit_checkpoint`: there is no hook around a checkpoint commit. The router's metrics
  time each commit, and `route --once` checks after each one whether the input is routed to
  its end. Both wrap `ProcessingContext.commit_checkpoint` on the context instance: the
  application's loop, its stop and its partition revocation all call it through the context.
- `delivery_callback`: `InternalProducer._on_delivery` (private). The router produces its
  outputs straight on the checkpoint's producer (see `checkpoint_output`); quixstreams' own
  delivery callback is what makes the checkpoint's flush raise a lost message before any
  commit.
- `librdkafka_producer`: `InternalProducer._producer._producer` (private), the
  confluent-kafka Producer under quixstreams' wrapper, created (and its transactions
  initialised) on first use. Producing on it directly costs a fraction of quixstreams'
  per-message `produce` path.
- `skip_signal_handlers`: `Application._setup_signal_handlers` (private). `run()` installs
  SIGINT/SIGTERM handlers, which Python allows in the main thread only; a router run in
  another thread (tests, the demo) is stopped with `Application.stop()` instead.

Each accessor checks what it relies on and refuses a quixstreams without it with
`QuixstreamsInternalsChanged`, naming the installed version and what is missing;
tests/unit/stream_apps/test_quixstreams_internals.py checks all of them against the installed
quixstreams, so an upgrade that changes one fails there first. pyproject.toml pins quixstreams
3.28.x, the version this was written against.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import quixstreams
from confluent_kafka import Producer
from quixstreams import Application
from quixstreams.internal_producer import InternalProducer
from quixstreams.processing.context import CheckpointNotInitialized

from sensorstream.errors import PipelineError

if TYPE_CHECKING:
    from quixstreams.checkpointing import Checkpoint
    from quixstreams.dataframe import StreamingDataFrame
    from quixstreams.processing import ProcessingContext

WRITTEN_FOR = "3.28"
"""The quixstreams release these internals were checked against (pinned in pyproject.toml)."""

CommitCheckpoint = Callable[..., None]


class QuixstreamsInternalsChanged(PipelineError):
    """The installed quixstreams lacks something the router relies on beyond its public API."""


def changed(what: str) -> QuixstreamsInternalsChanged:
    return QuixstreamsInternalsChanged(
        f"quixstreams {quixstreams.__version__}: {what}. The router relies on it "
        f"(stream_apps/quixstreams_internals.py, written for quixstreams {WRITTEN_FOR}, the "
        f"version pinned in pyproject.toml); install quixstreams {WRITTEN_FOR}.x."
    )


def processing_context(sdf: StreamingDataFrame) -> ProcessingContext:
    """The processing context of `sdf`'s application: its checkpoints, producer and consumer."""
    context = getattr(sdf, "processing_context", None)
    if not callable(getattr(context, "commit_checkpoint", None)):
        raise changed("StreamingDataFrame.processing_context has no commit_checkpoint()")
    for name in ("producer", "consumer"):
        if not hasattr(context, name):
            raise changed(f"the processing context has no `{name}`")
    if not isinstance(getattr(type(context), "checkpoint", None), property):
        raise changed("the processing context has no `checkpoint` property")
    return context


def on_commit_checkpoint(
    context: ProcessingContext, wrap: Callable[[CommitCheckpoint], CommitCheckpoint]
) -> None:
    """Replace the context's `commit_checkpoint` with `wrap(the current one)`.

    Every commit goes through it: the application's loop (which also calls it after each
    message and each empty poll, committing only when the checkpoint is due), its last commit
    on stop, and the commit before partitions are revoked.
    """
    commit_checkpoint = getattr(context, "commit_checkpoint", None)
    if not callable(commit_checkpoint):
        raise changed("the processing context has no commit_checkpoint()")
    context.commit_checkpoint = wrap(commit_checkpoint)  # type: ignore[method-assign]


def current_checkpoint(context: ProcessingContext) -> Checkpoint | None:
    """The checkpoint collecting offsets now; None before the application's loop started."""
    try:
        return context.checkpoint
    except CheckpointNotInitialized:
        return None


def checkpoint_producer(context: ProcessingContext) -> InternalProducer:
    """The producer every checkpoint begins and commits its transaction on."""
    producer = getattr(context, "producer", None)
    if not isinstance(producer, InternalProducer):
        raise changed("the processing context's `producer` is not an InternalProducer")
    delivery_callback(producer)
    wrapper = getattr(producer, "_producer", None)
    if not isinstance(getattr(type(wrapper), "_producer", None), property):
        raise changed("InternalProducer._producer has no `_producer` property")
    return producer


def delivery_callback(producer: InternalProducer) -> Callable[[Any, Any], None]:
    """quixstreams' delivery callback of `producer`: records the first delivery error, which
    the checkpoint's flush raises before it commits."""
    callback = getattr(producer, "_on_delivery", None)
    if not callable(callback):
        raise changed("InternalProducer has no `_on_delivery` callback")
    if list(inspect.signature(callback).parameters) != ["err", "msg"]:
        raise changed(
            f"InternalProducer._on_delivery takes {inspect.signature(callback)}, not (err, msg)"
        )
    return callback


def librdkafka_producer(producer: InternalProducer) -> Producer:
    """The confluent-kafka Producer under `producer`; created, with its transactions
    initialised, on first use (so not before the application runs)."""
    raw = getattr(getattr(producer, "_producer", None), "_producer", None)
    if not isinstance(raw, Producer):
        raise changed("InternalProducer._producer._producer is not a confluent Producer")
    return raw


def skip_signal_handlers(app: Application) -> None:
    """Make `app.run()` leave SIGINT and SIGTERM alone (for a run outside the main thread)."""
    if not callable(getattr(app, "_setup_signal_handlers", None)):
        raise changed("Application has no _setup_signal_handlers()")
    app._setup_signal_handlers = lambda: None  # type: ignore[method-assign]
