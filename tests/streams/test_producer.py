"""`streams.producer`: every input is counted as sent, skipped or failed, never lost silently."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from agents.records import Failure, RawPage
from streams.broker import BrokerError, EmbeddedBroker
from streams.producer import ProduceOptions, produce, record_refused
from streams.settings import Settings
from streams.sources import SourceError
from streams.topics import ensure_topics


def test_options_refuse_unknown_modes():
    with pytest.raises(ValueError, match="key"):
        ProduceOptions(key="host")
    with pytest.raises(ValueError, match="partition_by"):
        ProduceOptions(partition_by="url")
    with pytest.raises(ValueError, match="rate"):
        ProduceOptions(rate=0)


@pytest.mark.broker
def test_sends_that_fail_after_retries_are_counted_and_named():
    """The broker dies halfway: what it acknowledged is `sent`, the rest `failed` with the
    URL and the error, and `produce` returns instead of hanging or raising."""
    try:
        broker = EmbeddedBroker().start()  # our own: this test kills it
    except BrokerError as exc:
        pytest.skip(f"needs the embedded broker: {exc}")
    try:
        settings = replace(Settings(), bootstrap_servers=broker.bootstrap_servers,
                           one_record_per_batch=True, request_timeout=1.0, producer_retries=1,
                           producer_retry_backoff=0.1, max_page_bytes=1000)  # fmt: skip
        asyncio.run(ensure_topics(settings))

        def items():
            yield SourceError("gone.html", Failure("unreadable", "source", "No such file"))
            yield RawPage(url="https://x.example/big", body="<p>" + "x" * 2000)
            for i in range(5):
                if i == 3:
                    broker.stop()
                    time.sleep(0.3)
                yield RawPage(url=f"https://x.example/{i}", body="<p>hello</p>")

        report = asyncio.run(produce(items(), settings, ProduceOptions()))
    finally:
        broker.stop()
    assert (report.read, report.sent, report.skipped, report.failed) == (7, 3, 2, 2)
    assert report.retried == 2  # one retry for each failed send
    assert len(report.positions) == 3
    failed = [p for p in report.problems if p.startswith("failed:")]
    assert [p.split(": ")[1] for p in failed] == ["https://x.example/3", "https://x.example/4"]
    assert any("gone.html: unreadable" in p for p in report.problems)
    assert any("x.example/big: too_large" in p for p in report.problems)


def test_only_a_record_the_broker_refuses_for_good_counts_as_refused():
    """Refused: sending the same record again cannot succeed (it becomes a dead letter).
    Not refused: the broker could not be reached in time (the worker must stop and replay)."""
    import aiokafka.errors as errors
    from faust.exceptions import ProducerSendError

    refused = [errors.MessageSizeTooLargeError(), errors.RecordTooLargeError(),
               errors.InvalidTopicError(), errors.TopicAuthorizationFailedError("t")]  # fmt: skip
    unreachable = [errors.KafkaTimeoutError(), errors.KafkaConnectionError(),
                   errors.RequestTimedOutError(), errors.NotLeaderForPartitionError(),
                   errors.NodeNotReadyError(), RuntimeError("?")]  # fmt: skip
    assert [record_refused(e) for e in refused] == [True] * len(refused)
    assert [record_refused(e) for e in unreachable] == [False] * len(unreachable)
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = errors.MessageSizeTooLargeError()
    assert record_refused(wrapped)
    wrapped.__cause__ = errors.KafkaTimeoutError()
    assert not record_refused(wrapped)
