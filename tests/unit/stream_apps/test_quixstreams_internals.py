"""What the router relies on in quixstreams beyond its public API, checked against the
installed quixstreams (stream_apps/quixstreams_internals.py says why each is needed).

An upgrade of quixstreams that renames or changes one of them fails here, with a message naming
the installed version and what changed, before any router runs.
"""

from __future__ import annotations

import ast
import inspect
import signal
from pathlib import Path

import pytest
import quixstreams
from confluent_kafka import KafkaError
from quixstreams import Application
from quixstreams.internal_producer import InternalProducer
from quixstreams.kafka.producer import Producer as QuixProducer
from quixstreams.models.topics import Topic, TopicConfig
from quixstreams.processing import ProcessingContext

from stream_apps import quixstreams_internals as internals
from stream_apps.quixstreams_internals import QuixstreamsInternalsChanged

VERSION = quixstreams.__version__
STREAM_APPS = Path(internals.__file__).parent


def input_topic() -> Topic:
    """A topic definition made without a broker (`Application.topic` asks the broker)."""
    config = TopicConfig(num_partitions=1, replication_factor=1)
    return Topic("unit-input", create_config=config, value_deserializer="bytes")


@pytest.fixture
def app(tmp_path: Path) -> Application:
    return Application(
        broker_address="127.0.0.1:1",  # nothing connects before run()
        consumer_group="unit",
        processing_guarantee="exactly-once",
        use_changelog_topics=False,
        state_dir=tmp_path,
        loglevel=None,
    )


@pytest.fixture
def context(app: Application) -> ProcessingContext:
    sdf = app.dataframe(input_topic())
    return internals.processing_context(sdf)


def test_the_processing_context_is_the_one_the_application_commits_with(app, context) -> None:
    where = f"quixstreams {VERSION}: StreamingDataFrame.processing_context"
    assert context is app._processing_context, f"{where} is not the Application's own"
    assert internals.current_checkpoint(context) is None, "a checkpoint before run()"


def test_the_current_checkpoint(tmp_path: Path) -> None:
    # at-least-once: a checkpoint of an exactly-once application begins a transaction.
    app = Application(
        broker_address="127.0.0.1:1",
        consumer_group="unit",
        use_changelog_topics=False,
        state_dir=tmp_path,
        loglevel=None,
    )
    context = internals.processing_context(app.dataframe(input_topic()))
    context.init_checkpoint()  # what run() does before its loop
    checkpoint = internals.current_checkpoint(context)
    assert checkpoint is not None and checkpoint.empty()
    assert checkpoint is internals.current_checkpoint(context)


def test_the_application_commits_through_the_context_attribute() -> None:
    """`on_commit_checkpoint` replaces the method on the context instance, which works only
    while quixstreams looks `commit_checkpoint` up on the context at each commit."""
    for method in (Application._run_dataframe, Application._on_revoke):
        source = inspect.getsource(method)
        assert "processing_context.commit_checkpoint(" in source, (
            f"quixstreams {VERSION}: Application.{method.__name__} no longer calls "
            "processing_context.commit_checkpoint(); the router's checkpoint metrics and "
            "`route --once` would miss commits"
        )


def test_a_wrapped_commit_checkpoint_is_the_one_called(context) -> None:
    calls: list[tuple[tuple, dict]] = []

    def wrap(commit):
        def wrapped(*args, **kwargs):
            calls.append((args, kwargs))

        return wrapped

    internals.on_commit_checkpoint(context, wrap)
    context.commit_checkpoint(force=True)
    assert calls == [((), {"force": True})]


def test_the_checkpoint_producer_and_its_private_parts(context) -> None:
    producer = internals.checkpoint_producer(context)
    assert isinstance(producer, InternalProducer)
    callback = internals.delivery_callback(producer)
    assert callback == producer._on_delivery
    assert isinstance(producer._producer, QuixProducer), (
        f"quixstreams {VERSION}: InternalProducer._producer is no longer the kafka Producer "
        "wrapper whose `_producer` property is the confluent-kafka Producer"
    )
    # Not called here: the property creates the client and initialises its transactions.
    assert isinstance(inspect.getattr_static(QuixProducer, "_producer"), property)


def test_delivery_errors_are_raised_by_the_next_flush(context, monkeypatch) -> None:
    """The router's outputs are safe only while a delivery error reported to quixstreams'
    callback fails the checkpoint's flush, before anything commits."""
    producer = internals.checkpoint_producer(context)
    # No broker here: the librdkafka flush itself is left out, quixstreams' part is checked.
    monkeypatch.setattr(QuixProducer, "flush", lambda self, timeout=None: 0)
    error = KafkaError(KafkaError.BROKER_NOT_AVAILABLE, "broker said no")
    internals.delivery_callback(producer)(error, None)
    with pytest.raises(Exception, match="broker said no"):
        producer.flush(0)
    producer.flush(0)  # raised once


def test_signal_handlers_can_be_skipped(app) -> None:
    before = signal.getsignal(signal.SIGTERM)
    internals.skip_signal_handlers(app)
    app._setup_signal_handlers()  # what run() calls
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("owner", "name", "missing"),
    [
        (InternalProducer, "_on_delivery", "`_on_delivery`"),
        (QuixProducer, "_producer", "`_producer` property"),
        (ProcessingContext, "checkpoint", "`checkpoint` property"),
        (ProcessingContext, "commit_checkpoint", "commit_checkpoint()"),
        (Application, "_setup_signal_handlers", "_setup_signal_handlers()"),
    ],
)
def test_a_missing_internal_is_refused_by_name(app, owner, name, missing, monkeypatch) -> None:
    sdf = app.dataframe(input_topic())
    monkeypatch.delattr(owner, name)
    with pytest.raises(QuixstreamsInternalsChanged) as refused:
        context = internals.processing_context(sdf)
        internals.checkpoint_producer(context)
        internals.skip_signal_handlers(app)
    message = str(refused.value)
    assert f"quixstreams {VERSION}" in message and missing in message, message
    assert "install quixstreams 3.28.x" in message


def test_a_changed_delivery_callback_is_refused(context, monkeypatch) -> None:
    monkeypatch.setattr(InternalProducer, "_on_delivery", lambda self, error: None)
    with pytest.raises(QuixstreamsInternalsChanged, match=r"takes \(error\), not \(err, msg\)"):
        internals.checkpoint_producer(context)


PUBLIC_MODULES = {"quixstreams", "quixstreams.sinks"}


def test_no_other_router_module_reaches_into_quixstreams() -> None:
    """quixstreams' private modules and attributes are used in quixstreams_internals only
    (type hints under TYPE_CHECKING may name its classes)."""
    offences = []
    for path in sorted(STREAM_APPS.rglob("*.py")):
        if path.name == "quixstreams_internals.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hints = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
            for node in ast.walk(block)
        }
        for node in ast.walk(tree):
            if id(node) in hints:
                continue
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("quixstreams") and module not in PUBLIC_MODULES:
                offences.append(f"{path.name}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Attribute) and node.attr in {
                "_processing_context",
                "_setup_signal_handlers",
                "_on_delivery",
                "_checkpoint",
            }:
                offences.append(f"{path.name}:{node.lineno} uses .{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr", "setattr"}
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")
            ):
                offences.append(
                    f"{path.name}:{node.lineno} {node.func.id}(…, {node.args[1].value!r})"
                )
    assert not offences, "quixstreams internals outside quixstreams_internals.py: " + ", ".join(
        offences
    )
