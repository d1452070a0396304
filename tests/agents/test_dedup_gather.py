"""The gather agent's core (`agents.dedup_agent.GatherCore`) over plain dicts: what a replay
after a crash finds in its tables, without a broker."""

from __future__ import annotations

import logging

import orjson

from agents.dedup import DedupConfig
from agents.dedup_agent import ARTICLES, PROBE_HEADER, GatherCore, PageProbe
from agents.records import Article
from streams.topics import INPUT_HEADER

ARTICLE = Article(id="a1", url="https://a.example/1", text="Some words of an article.")
PROBE = PageProbe(id="a1", order_key="k-a1", url_key="a.example/1", fingerprint="fp",
                  signature=None, produced_at=12.5)  # fmt: skip
INPUT = orjson.dumps({"topic": "raw-pages", "partition": 0, "offset": 5})


def page(core: GatherCore) -> list:
    headers = [(PROBE_HEADER, PROBE.header()), (INPUT_HEADER, INPUT)]
    return core.handle(orjson.dumps(ARTICLE), headers)


def test_a_replayed_page_whose_waiting_article_was_lost_still_gets_its_outcome(caplog):
    """The record listing the article as waiting reached the changelog, the article did not
    (a kill between two produce requests): the replayed page stores it again, and the verdict
    sends it out."""
    records: dict = {}
    waiting: dict = {}
    core = GatherCore(records, waiting, DedupConfig(), partitions=4)
    assert page(core) == [] and len(waiting) == 1
    waiting.clear()  # what a restarted worker recovers: the record without the article
    core = GatherCore(records, waiting, DedupConfig(), partitions=4)
    with caplog.at_level(logging.WARNING):
        assert page(core) == []
    assert "stored again" in caplog.text and len(waiting) == 1
    sends = core.handle(orjson.dumps({"t": "won", "id": "a1"}), None)
    (out,) = [s for s in sends if s.role == ARTICLES]
    assert orjson.loads(out.value)["id"] == "a1"
    assert "missing" not in caplog.text


def test_a_replayed_page_with_its_article_stored_writes_nothing():
    records: dict = {}
    waiting: dict = {}
    core = GatherCore(records, waiting, DedupConfig(), partitions=4)
    page(core)
    before = (dict(records), dict(waiting))
    assert page(core) == [] and (records, waiting) == before
