"""The enrich agent's synchronous core (`EnrichBatch`), on real pages and broken records:
one output per input, in order, articles keyed by id and dead letters keyed like the input."""

from __future__ import annotations

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
