"""The dedup and stories agents' deliveries (`agents.dedup_agent.deliver_outcomes`): an outcome
record the broker refuses for good becomes an `output_rejected` dead letter, as in the enrich
agent, instead of a worker that exits and replays the batch into the same refusal forever;
an outage still exits without committing. And the changelog records they send themselves."""

from __future__ import annotations

import asyncio
import logging
import os
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from agents.dedup_agent import ARTICLES, CLAIMS, Send, changelog_futures, deliver_outcomes
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


class ChangelogProducer:
    """aiokafka's `send` as the agents' changelog path uses it; refuses the `fail_at`-th."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sent: list[tuple] = []
        self.fail_at = fail_at

    async def send(self, topic, value, *, key, partition):
        if len(self.sent) == self.fail_at:
            raise KafkaTimeoutError()
        self.sent.append((topic, partition, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(offset=len(self.sent) - 1))
        return fut


class StagedTable:
    """What `changelog_futures` reads of a TrackedTable: its staged records and Faust-sent
    futures, its changelog topic, the producer, and where acknowledged offsets go."""

    def __init__(self, name: str, producer: ChangelogProducer, staged: list[tuple]) -> None:
        self.app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")
        self.staged = staged
        self.offsets: dict[int, int] = {}

    def take_changelog(self):
        staged, self.staged = self.staged, []
        return [], staged

    def persisted(self, partition, fut):
        self.offsets[partition] = fut.result().offset


def test_changelog_records_go_out_in_write_order_across_tables():
    """The gather agent stores an article (waiting), then the record listing it; a replay
    trusts that the second landing means the first did, so they must not be reordered by
    table. Each partition's last acknowledged offset reaches the store."""
    producer = ChangelogProducer()
    records = StagedTable("records", producer, [(1, 0, b"a", b"r1"), (3, 0, b"a", b"r2")])
    waiting = StagedTable("waiting", producer, [(0, 0, b"a|1", b"w1"), (2, 1, b"b|1", None)])
    futures = asyncio.run(changelog_futures([records, waiting]))
    assert [(t, v) for t, _, _, v in producer.sent] == [
        ("waiting-changelog", b"w1"), ("records-changelog", b"r1"),
        ("waiting-changelog", None), ("records-changelog", b"r2"),
    ]  # fmt: skip
    assert len(futures) == 4 and all(f.done() for f in futures)
    assert records.offsets == {0: 3} and waiting.offsets == {0: 0, 1: 2}
    assert asyncio.run(changelog_futures([records, waiting])) == []


def test_a_changelog_record_the_producer_refuses_comes_back_as_a_failure():
    producer = ChangelogProducer(fail_at=1)
    table = StagedTable("near", producer, [(0, 2, b"k1", b"v"), (1, 2, b"k2", b"v")])

    async def run():
        futures = await changelog_futures([table])
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(run())
    assert isinstance(results[-1], KafkaTimeoutError) and len(results) == 2
    assert table.offsets == {2: 0}
