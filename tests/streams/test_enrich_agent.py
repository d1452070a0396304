"""The enrich agent's synchronous core (`EnrichBatch`), on real pages and broken records:
one output per input, in order, articles keyed by id and dead letters keyed like the input."""

from __future__ import annotations

import asyncio
import logging
import os
from types import SimpleNamespace

import orjson
import pytest

from agents.enrich_agent import ARTICLES, DEAD_LETTER, EnrichBatch
from agents.pipeline import Enricher
from agents.records import Article, RawPage
from streams.envelope import page_to_envelope
from streams.settings import Settings
from streams.sources import iter_pages
from streams.topics import INPUT_HEADER, WORKER_HEADER, InputRef


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({})


@pytest.fixture(scope="module")
def enricher(settings) -> Enricher:
    return Enricher(settings.pipeline)


def ref(offset: int, key: bytes | None, value: bytes | None) -> tuple[InputRef, bytes | None]:
    return InputRef("raw-pages", 1, offset, key, len(value or b"")), value


def test_one_output_per_input_in_order(settings, enricher, seeds_dir):
    pages = [p for p in iter_pages([seeds_dir]) if isinstance(p, RawPage)]
    items = [ref(i, p.url.encode(), page_to_envelope(p)) for i, p in enumerate(pages)]
    items[1:1] = [
        ref(10, b"https://a.example/1", b'{"url": "https://a.example/1", "html": '),
        ref(11, None, b"\x89PNG\r\n\x1a\n\x00\x00"),
        ref(12, b"https://a.example/3", None),
    ]
    outputs = EnrichBatch(settings, enricher, worker="w:1")(items)
    assert [o.role for o in outputs] == [ARTICLES, DEAD_LETTER, DEAD_LETTER, DEAD_LETTER, ARTICLES]
    assert [o.reason for o in outputs[1:4]] == ["malformed_envelope", "missing_url", "missing_body"]
    expected = enricher.enrich_many(pages)
    for out, article in zip((outputs[0], outputs[4]), expected, strict=True):
        assert isinstance(article, Article)
        assert out.key == article.id.encode()
        assert orjson.loads(out.value) == article.to_dict()
    for out, (input_ref, _) in zip(outputs, items, strict=True):
        headers = dict(out.headers)
        assert orjson.loads(headers[INPUT_HEADER]) == {"topic": "raw-pages", "partition": 1,
                                                       "offset": input_ref.offset}  # fmt: skip
        assert headers[WORKER_HEADER] == b"w:1"
        if out.role == DEAD_LETTER:
            assert out.key == input_ref.key
            assert orjson.loads(out.value)["input"]["offset"] == input_ref.offset


def test_a_page_the_pipeline_refuses_is_dead_lettered_with_its_url(settings, enricher):
    value = orjson.dumps({"url": "https://a.example/empty", "html": "<html><body></body></html>"})
    (out,) = EnrichBatch(settings, enricher)([ref(0, None, value)])
    doc = orjson.loads(out.value)
    assert out.role == DEAD_LETTER and out.key is None
    assert doc["url"] == "https://a.example/empty"
    assert doc["stage"] in ("extract", "clean", "language") and doc["reason"] == out.reason


def test_an_empty_batch_gives_nothing(settings, enricher):
    assert EnrichBatch(settings, enricher)([]) == []


def test_an_article_the_broker_refuses_becomes_a_dead_letter(settings, enricher, seeds_dir):
    page = next(p for p in iter_pages([seeds_dir]) if isinstance(p, RawPage))
    work = EnrichBatch(settings, enricher)
    (article,) = work([ref(5, b"key", page_to_envelope(page))])
    dead = work.rejected(article, RuntimeError("RecordTooLargeError: 2000000 bytes"))
    doc = orjson.loads(dead.value)
    assert (dead.role, dead.key, dead.headers) == (DEAD_LETTER, b"key", article.headers)
    assert (doc["stage"], doc["reason"], doc["url"]) == ("output", "output_rejected", page.url)
    assert doc["input"]["offset"] == 5 and "RecordTooLargeError" in doc["message"]


# --- delivery failures in the agent ------------------------------------------------------------


class Exited(Exception):
    """Raised by the patched `os._exit`: the agent ended the process."""


class FakeApp:
    """Just enough of a Faust app for `attach_enrich_agent` to declare its agent on."""

    def __init__(self) -> None:
        self.agents: dict = {}
        self.on_before_shutdown = SimpleNamespace(connect=lambda fn: fn)

    def task(self, fn):
        return fn

    def agent(self, channel, name):
        return lambda fn: self.agents.setdefault(name, fn)


class FakeTopic:
    """`send` returns the delivery future, failed with `error` if one is given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.sent: list = []

    async def send(self, key, value, partition, headers):
        future = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            self.sent.append(orjson.loads(value))
            future.set_result(None)
        return future


class FakeStream:
    def __init__(self, events: list) -> None:
        self.events = events
        self.acked: list = []

    async def noack_take(self, size, within):
        yield self.events

    async def ack(self, event):
        self.acked.append(event)


def run_agent(settings, enricher, error, monkeypatch, seeds_dir):
    """One batch (a page and a bad record) through the real agent code, the article's send
    failing with `error`, dead letters going through. Returns (outputs, stream, exit code
    or None)."""
    from agents.enrich_agent import attach_enrich_agent

    def exit_(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    page = next(p for p in iter_pages([seeds_dir]) if isinstance(p, RawPage))
    values = [(page.url.encode(), page_to_envelope(page)), (b"https://a.example/x", None)]
    events = [SimpleNamespace(message=SimpleNamespace(topic="raw-pages", partition=0, offset=i,
                                                      key=k, value=v, timestamp=0.0))
              for i, (k, v) in enumerate(values)]  # fmt: skip
    app, stream = FakeApp(), FakeStream(events)
    outputs = {ARTICLES: FakeTopic(error), DEAD_LETTER: FakeTopic()}
    work = EnrichBatch(settings, enricher, worker="w:1")
    _, _, executor = attach_enrich_agent(app, None, outputs, settings, work=work)
    try:
        asyncio.run(app.agents["enrich-pages"](stream))
    except Exited as exited:
        return outputs, stream, exited.args[0]
    finally:
        executor.shutdown()
    return outputs, stream, None


@pytest.mark.parametrize(
    "error",
    [
        "KafkaTimeoutError",
        "KafkaConnectionError",
        "RequestTimedOutError",
        "NotLeaderForPartitionError",
    ],
)
def test_a_failed_delivery_exits_without_committing_instead_of_dead_lettering(
    settings, enricher, monkeypatch, seeds_dir, error
):
    """A broker outage longer than the delivery timeout (or a lost connection): the article
    is fine, so it must not become an `output_rejected` dead letter; the worker exits with
    nothing acked and the batch replays after the restart."""
    import aiokafka.errors

    exc = getattr(aiokafka.errors, error)()
    outputs, stream, code = run_agent(settings, enricher, exc, monkeypatch, seeds_dir)
    assert code == 70 and stream.acked == []
    # The other input's dead letter went out with the batch (a replay repeats it, harmless).
    assert [d["reason"] for d in outputs[DEAD_LETTER].sent] == ["missing_body"]


def test_a_record_the_broker_refuses_becomes_an_output_rejected_dead_letter(
    settings, enricher, monkeypatch, seeds_dir
):
    """Too large for the topic: sending it again cannot help, so its input is accounted for
    by a dead letter and the batch is done."""
    from aiokafka.errors import MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    wrapped = ProducerSendError("Error while sending")  # how Faust raises it from `send`
    wrapped.__cause__ = MessageSizeTooLargeError()
    outputs, stream, code = run_agent(settings, enricher, wrapped, monkeypatch, seeds_dir)
    assert code is None
    reasons = [d["reason"] for d in outputs[DEAD_LETTER].sent]
    assert sorted(reasons) == ["missing_body", "output_rejected"]
    assert len(stream.acked) == 2  # the batch is done: both inputs have their outcome
