"""The bad-input catalogue: every kind of broken raw-pages record a crawler can write, and the
one outcome each must get (a dead letter with its reason and stage, or, for damage newsflow
repairs, an article). Each class runs through the pure path (`EnrichBatch`: envelope,
pipeline, output encoding), the slow page through the supervised enricher with its budget,
and all of them at once through a real broker and worker.

`CATALOGUE` and `bad_records` are reused by the soak test (tests/test_reliability.py).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import itertools
import json
import random
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.enrich_agent import ARTICLES, DEAD_LETTER, EnrichBatch
from agents.pipeline import Enricher
from agents.supervisor import PageBudget, SupervisedEnricher
from streams.consumer import OutcomeTally, wait_for_outcomes
from streams.producer import producer_options
from streams.settings import Settings
from streams.topics import InputRef, TopicNames, ensure_topics
from tests.streams.conftest import Workers, broker, fresh_settings  # noqa: F401 (fixture)

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "pages"
CAP = 1_000_000  # NEWSFLOW_MAX_PAGE_BYTES in these tests, so "too large" stays cheap
SCHEMAS = Path(__file__).resolve().parent.parent / "streams" / "schemas"
URL = "https://bad.example/page"
ARTICLE = ("", "article")  # expected outcome of damage newsflow repairs

PARAGRAPHS = "".join(
    f"<p>Paragraph {i}: Der Bürgermeister erklärte am Dienstag, dass die neue Brücke über "
    f"den Fluss gebaut wird, nachdem die Fähre eingestellt wurde.</p>"
    for i in range(6)
)


def page_html(charset: str | None = None) -> str:
    meta = f'<meta charset="{charset}">' if charset else ""
    return f"<html><head>{meta}<title>Brücke</title></head><body><article>{PARAGRAPHS}" \
           "</article></body></html>"  # fmt: skip


def env(**fields) -> bytes:
    """A raw-pages JSON envelope for URL with `fields` (None values are kept as null)."""
    return orjson.dumps({"url": URL, **fields})


def corpus_page() -> bytes:
    return gzip.decompress(sorted(CORPUS.glob("*.html.gz"))[3].read_bytes())


def slow_table(rows: int = 15_000) -> bytes:
    """A ~1 MB table page (under CAP) that trafilatura needs ~3 CPU seconds for."""
    cells = "".join(f"<tr><td>cell {i} alpha</td><td>beta {i} gamma delta</td></tr>"
                    for i in range(rows))  # fmt: skip
    return f"<html><body><table>{cells}</table></body></html>".encode()


@dataclass(frozen=True)
class Case:
    """One bad-input class: the record (key, value) and the (stage, reason) it must end with."""

    name: str
    key: bytes | None
    value: bytes | None
    stage: str
    reason: str
    text_has: str = ""  # for repaired pages: a string the article text must contain
    known_bug: str = ""  # set while newsflow gets this class wrong: the test is xfail(strict)


def catalogue() -> list[Case]:
    key = URL.encode()
    page = corpus_page()
    utf8 = page_html("iso-8859-1").encode("utf-8")  # declares latin-1, is UTF-8
    cp1252 = page_html("utf-8").encode("cp1252")  # declares UTF-8, is windows-1252
    soup = (b"<html><body><div><p>The council met on Tuesday <b>to discuss <i>the new bridge"
            b"</b> over the river</i>, which residents have long asked for.<p>Another paragraph"
            b" about the ferry that stopped running years ago, and what it cost.</div></span>"
            b"</table></body>")  # fmt: skip
    return [
        # Not a page at all.
        Case("binary_png", key, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "extract",
             "not_html"),
        Case("binary_zip", key, b"PK\x03\x04" + bytes(range(256)), "extract", "not_html"),
        Case("pdf_as_base64", None, env(body_base64=base64.b64encode(b"%PDF-1.7\n%\xe2\xe3")
             .decode(), content_type="application/pdf"), "extract", "not_html"),
        Case("declared_image", None, env(html=page_html(), content_type="image/jpeg"),
             "extract", "not_html"),
        # Damaged HTML: repaired when the text survives, else no text.
        Case("truncated_mid_article", key, page[: len(page) * 4 // 10], "", "article",
             "Montauk"),
        Case("truncated_in_head", key, page[:300], "extract", "empty_text"),
        Case("malformed_tag_soup", key, soup, "", "article", "the new bridge"),
        Case("malformed_junk", key, b"<<<>>><!-- <html <body <p>>>> </</", "clean",
             "empty_text"),
        # Over the size cap, in each way a body can come.
        Case("too_large_bare", key, b"<html>" + b"x" * CAP, "envelope", "too_large"),
        Case("too_large_html", None, env(html="<p>" + "x" * CAP), "envelope", "too_large"),
        Case("too_large_base64", None, env(body_base64=base64.b64encode(b"x" * (CAP + 1))
             .decode()), "envelope", "too_large"),
        Case("too_large_envelope", None, env(html="<p>x</p>", junk="x" * 7 * CAP), "envelope",
             "too_large"),
        # Wrong or lying charsets: decoded right anyway.
        Case("utf8_declared_latin1", key, utf8, "", "article", "Bürgermeister"),
        Case("cp1252_declared_utf8", key, cp1252, "", "article", "Bürgermeister",
             known_bug="charset_normalizer guesses cp775 for this German windows-1252 text "
             "and agents/extract.py believes it: the article reads 'B³rgermeister'"),
        Case("unknown_charset", None, env(html=page_html("x-no-such-charset")), "", "article",
             "Bürgermeister"),
        Case("invalid_utf8", key, b"<html><body><p>" + bytes(range(0x80, 0x100)) * 20
             + b"</p></body></html>", "extract", "decode_error"),
        # Malformed envelopes.
        Case("json_truncated", key, b'{"url": "https://bad.example/page", "html": "<p>',
             "envelope", "malformed_envelope"),
        Case("json_array", key, b'[{"url": "https://bad.example/page"}]', "envelope",
             "malformed_envelope"),
        Case("json_wrong_type", None, orjson.dumps({"url": 42, "html": "<p>x</p>"}),
             "envelope", "malformed_envelope"),
        Case("bad_base64", None, env(body_base64="not base64!"), "envelope",
             "malformed_envelope"),
        Case("two_bodies", None, env(html="<p>a</p>", text="a"), "envelope",
             "malformed_envelope"),
        Case("bad_fetched_at", None, env(html="<p>a</p>", fetched_at="yesterday"), "envelope",
             "malformed_envelope"),
        # Missing fields.
        Case("envelope_without_url", None, orjson.dumps({"html": page_html()}), "envelope",
             "missing_url"),
        Case("bare_without_key", None, page_html().encode(), "envelope", "missing_url"),
        Case("envelope_without_body", None, env(content_type="text/html"), "envelope",
             "missing_body"),
        Case("tombstone", key, None, "envelope", "missing_body"),
        # Oversized fields.
        Case("url_too_long", None, orjson.dumps({"url": URL + "x" * 5000, "html": "<p>a</p>"}),
             "envelope", "field_too_large"),
        Case("key_too_long", key + b"x" * 20_000, b"<p>a</p>", "envelope", "field_too_large"),
        Case("content_type_too_long", None, env(html="<p>a</p>", content_type="t" * 2000),
             "envelope", "field_too_large"),
        Case("source_too_long", None, env(html="<p>a</p>", source="s" * 2000), "envelope",
             "field_too_large"),
        # URLs that are not web pages.
        Case("ftp_url", None, orjson.dumps({"url": "ftp://bad.example/f", "html": "<p>a</p>"}),
             "envelope", "invalid_url"),
        Case("url_with_newline", None, orjson.dumps({"url": URL + "\n/x", "html": "<p>a</p>"}),
             "envelope", "invalid_url"),
        Case("key_not_utf8", b"https://bad.example/\xff\xfe", b"<p>a</p>", "envelope",
             "invalid_url"),
        # Empty pages.
        Case("empty_bare", key, b"", "envelope", "empty_page"),
        Case("blank_bare", key, b" \r\n\t ", "envelope", "empty_page"),
        Case("empty_html", None, env(html=""), "envelope", "empty_page"),
        # Pages with nothing to extract.
        Case("navigation_only", key, b"<html><body><nav><a href='/'>Home</a> <a href='/n'>"
             b"News</a></nav></body></html>", "clean", "empty_text"),
        Case("scripts_only", key, b"<html><head><script>var x = 1;</script></head><body>"
             b"<script>document.write('hi')</script></body></html>", "extract", "empty_text"),
        Case("one_short_line", key, b"<html><body><article><p>Just one short line.</p>"
             b"</article></body></html>", "clean", "empty_text"),
    ]  # fmt: skip


CATALOGUE = catalogue()
SLOW = Case("pathological_slow", URL.encode() + b"/slow", slow_table(), "extract", "timeout")
BUDGET = PageBudget(seconds=1.0, seconds_per_mb=0.0)  # the slow page needs ~3 CPU seconds


def bad_records(count: int, seed: int = 0) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """`count` (case name, key, value) records cycling through the catalogue's dead-letter
    classes, each URL made unique so no two inputs are the same page."""
    rng = random.Random(seed)
    dead = [c for c in CATALOGUE if c.reason != "article" and len(c.value or b"") < 100_000]
    for n, case in zip(range(count), itertools.cycle(dead)):
        unique = f"/{n}-{rng.randrange(1 << 30)}".encode()
        key = case.key + unique if case.key and case.name != "key_not_utf8" else case.key
        value = case.value
        if value and URL.encode() in value and case.name != "url_too_long":
            value = value.replace(URL.encode(), URL.encode() + unique, 1)
        yield case.name, key, value


def settings_for_tests() -> Settings:
    return Settings(max_page_bytes=CAP).with_pipeline()


def check(case: Case, role: str, reason: str, stage: str, text: str = "") -> None:
    if case.reason == "article":
        assert (role, reason) == (ARTICLES, ""), (case.name, reason, stage)
        assert case.text_has in text, case.name
    else:
        assert (role, stage, reason) == (DEAD_LETTER, case.stage, case.reason), case.name


@pytest.fixture(scope="module")
def work() -> EnrichBatch:
    settings = settings_for_tests()
    return EnrichBatch(settings, Enricher(settings.pipeline), worker="test:1")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)]
                  if c.known_bug else []) for c in CATALOGUE],
)  # fmt: skip
def test_each_bad_input_class_has_its_outcome(case: Case, work: EnrichBatch):
    ref = InputRef("raw-pages", 0, 7, case.key, len(case.value or b""))
    (out,) = work([(ref, case.value)])
    doc = orjson.loads(out.value)
    check(case, out.role, out.reason, doc.get("stage", ""), doc.get("text", ""))
    if out.role == DEAD_LETTER:
        assert doc["input"]["offset"] == 7 and doc["message"]  # says where and why


def test_the_catalogue_covers_every_reason_the_issue_names():
    reasons = {c.reason for c in CATALOGUE} | {SLOW.reason}
    assert reasons >= {"not_html", "too_large", "decode_error", "malformed_envelope",
                       "missing_url", "missing_body", "field_too_large", "invalid_url",
                       "empty_page", "empty_text", "timeout", "article"}  # fmt: skip


def test_a_pathological_page_times_out_and_its_batch_goes_on():
    settings = settings_for_tests()
    good = next(c for c in CATALOGUE if c.name == "malformed_tag_soup")
    with SupervisedEnricher(settings.pipeline, BUDGET) as enricher:
        work = EnrichBatch(settings, enricher, worker="test:1")
        items = [(InputRef("raw-pages", 0, i, c.key, len(c.value or b"")), c.value)
                 for i, c in enumerate((good, SLOW, good))]  # fmt: skip
        outs = work(items)
    for case, out in zip((good, SLOW, good), outs, strict=True):
        doc = orjson.loads(out.value)
        check(case, out.role, out.reason, doc.get("stage", ""), doc.get("text", ""))
    assert "budget" in orjson.loads(outs[1].value)["message"]


def test_bad_records_are_varied_and_unique():
    records = list(bad_records(200))
    assert len({name for name, _, _ in records}) >= 25
    assert len({(k, v) for _, k, v in records}) > 150  # URLs differ, so do most records


@pytest.mark.broker
@pytest.mark.slow
def test_through_the_broker_each_class_gets_its_dead_letter(broker, tmp_path):  # noqa: F811
    """One record of every class on raw-pages, one worker with a 1 s page budget: every input
    gets exactly one outcome, the expected one, and the worker keeps running."""
    settings = fresh_settings(broker, tmp_path / "state", max_page_bytes=CAP, page_timeout=1.0,
                              page_timeout_per_mb=0.0)  # fmt: skip
    cases = [*CATALOGUE, SLOW]
    pool = Workers(tmp_path / "workers")
    pool.workdir.mkdir()
    try:
        asyncio.run(ensure_topics(settings))
        (worker,) = pool.start(settings, 1)
        positions = asyncio.run(produce_cases(settings, cases))
        tally = OutcomeTally(expected=set(positions.values()))
        done = asyncio.run(
            wait_for_outcomes(
                settings, tally, timeout=180, should_stop=lambda: worker.proc.poll() is not None
            )
        )
        assert done, (f"no outcome for {sorted(tally.missing())}", worker.log_tail())
        assert tally.conflicts == [] and worker.proc.poll() is None
        schema = json.loads((SCHEMAS / "dead-letter.schema.json").read_text())
        for case in cases:
            outcome = tally.outcomes[positions[case.name]]
            doc = outcome.value or {}
            if outcome.kind == "dead_letter":
                jsonschema.validate(doc, schema)  # timeout included: the published contract
            role = ARTICLES if outcome.kind == "article" else DEAD_LETTER
            if case.known_bug:
                continue  # it has its one outcome; which one is the pure test's business
            if outcome.kind == "duplicate":  # same text as an earlier case (NEWSFLOW_DEDUP)
                assert case.reason == "article", case.name
                continue
            check(case, role, doc.get("reason", ""), doc.get("stage", ""), doc.get("text", ""))
        status = worker.status()
        assert status["dead_letter_reasons"].get("timeout") == 1, status
        url = f"http://127.0.0.1:{worker.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            exposition = response.read().decode()
        timeouts = [
            s.value
            for f in text_string_to_metric_families(exposition)
            for s in f.samples
            if s.name == "newsflow_dead_letters_total" and s.labels.get("reason") == "timeout"
        ]
        assert sum(timeouts) == 1.0 and max(timeouts) == 1.0  # counted like every other reason
    finally:
        assert pool.stop_all() == [0], "the worker did not shut down cleanly"


async def produce_cases(settings: Settings, cases: list[Case]) -> dict[str, tuple[str, int, int]]:
    from aiokafka import AIOKafkaProducer

    names = TopicNames.from_settings(settings)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        positions = {}
        for case in cases:
            meta = await (await producer.send(names.raw_pages, case.value, key=case.key))
            positions[case.name] = (names.raw_pages, meta.partition, meta.offset)
        return positions
    finally:
        await producer.stop()
