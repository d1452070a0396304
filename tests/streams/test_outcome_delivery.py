"""The dedup and stories agents' deliveries (`agents.dedup_agent.deliver_outcomes`): an outcome
record the broker refuses for good becomes an `output_rejected` dead letter, as in the enrich
agent, instead of a worker that exits and replays the batch into the same refusal forever;
an outage still exits without committing."""

from __future__ import annotations

import asyncio
import logging
import os

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from agents.dedup_agent import ARTICLES, CLAIMS, Send, deliver_outcomes
from agents.records import Article
from streams.topics import INPUT_HEADER, WORKER_HEADER
from tests.streams.test_enrich_agent import Exited, FakeTopic

DEAD_LETTER = "dead_letter"


def refused() -> ProducerSendError:
    wrapped = ProducerSendError("Error while sending")  # how Faust raises it from `send`
    wrapped.__cause__ = MessageSizeTooLargeError()
    return wrapped


def outcome(n: int) -> Send:
    article = Article(id=f"a{n}", url=f"https://a.example/{n}", text="x" * 100)
    ref = orjson.dumps({"topic": "raw-pages", "partition": 1, "offset": n})
    return Send(ARTICLES, article.id.encode(), orjson.dumps(article), None,
                ((INPUT_HEADER, ref), (WORKER_HEADER, b"w:1")), article, 12.5)  # fmt: skip


def deliver(topics: dict, sends: list[Send], monkeypatch) -> tuple[list[Send] | None, int | None]:
    def exit_(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    try:
        return asyncio.run(deliver_outcomes(topics, sends, "dedup-gather", "w:2")), None
    except Exited as exited:
        return None, exited.args[0]


def test_a_refused_article_is_delivered_as_an_output_rejected_dead_letter(monkeypatch):
    topics = {ARTICLES: FakeTopic(refused()), DEAD_LETTER: FakeTopic()}
    delivered, code = deliver(topics, [outcome(7)], monkeypatch)
    assert code is None
    (dead,) = delivered
    assert (dead.role, dead.outcome.reason, dead.produced_at) == (DEAD_LETTER, "output_rejected",
                                                                   12.5)  # fmt: skip
    (doc,) = topics[DEAD_LETTER].sent
    assert (doc["reason"], doc["stage"], doc["url"]) == ("output_rejected", "output",
                                                         "https://a.example/7")  # fmt: skip
    assert doc["input"]["offset"] == 7 and "MessageSizeTooLarge" in doc["message"]


def test_the_delivered_records_come_back_with_the_dead_letters_in_place_of_the_refused(
    monkeypatch,
):
    class RefusesOne(FakeTopic):
        async def send(self, key, value, partition, headers):
            self.error = refused() if key == b"a1" else None
            return await super().send(key, value, partition, headers)

    topics = {ARTICLES: RefusesOne(), DEAD_LETTER: FakeTopic()}
    delivered, code = deliver(topics, [outcome(0), outcome(1), outcome(2)], monkeypatch)
    assert code is None
    assert [(s.role, s.outcome.id if s.role == ARTICLES else s.outcome.reason)
            for s in delivered] == [(ARTICLES, "a0"), (ARTICLES, "a2"),
                                    (DEAD_LETTER, "output_rejected")]  # fmt: skip
    assert [d["id"] for d in topics[ARTICLES].sent] == ["a0", "a2"]


@pytest.mark.parametrize("case", ["outage", "refused claim", "refused dead letter"])
def test_anything_else_exits_without_committing(monkeypatch, case):
    sends = [outcome(3)]
    topics = {ARTICLES: FakeTopic(refused()), DEAD_LETTER: FakeTopic()}
    if case == "outage":  # the record is fine and the broker may come back: replay it
        topics[ARTICLES] = FakeTopic(KafkaTimeoutError())
    elif case == "refused claim":  # the pipeline's own record, standing for no input
        topics[CLAIMS] = FakeTopic(refused())
        sends = [Send(CLAIMS, b"u", b"{}", 0)]
    else:
        topics[DEAD_LETTER] = FakeTopic(refused())
    assert deliver(topics, sends, monkeypatch) == (None, 70)
