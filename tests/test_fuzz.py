"""Property-based tests (hypothesis): whatever bytes arrive on raw-pages, as value or key,
alone or in a batch, the pure path (`EnrichBatch`: envelope, pipeline, output encoding) gives
exactly one typed outcome per input, in order, and never raises; no input makes a stage crash
(`internal_error` is a bug, not a reason). Envelopes are generated as arbitrary JSON objects
around the real field names, and bodies as arbitrary text built from HTML pieces, so the
generated inputs get past the envelope into extraction, cleaning and language detection.
"""

from __future__ import annotations

import base64
import gzip
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agents.enrich_agent import ARTICLES, DEAD_LETTER, EnrichBatch
from agents.pipeline import Enricher
from agents.records import Article, Failure, RawPage
from streams.envelope import parse_raw_page
from streams.settings import Settings
from streams.topics import InputRef

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "pages"
SAMPLES = [gzip.decompress(p.read_bytes()) for p in sorted(CORPUS.glob("*.html.gz"))[:110:22]]
SNAKE = re.compile(r"[a-z][a-z0-9_]*")
STAGES = {"envelope", "extract", "clean", "language", "entities", "output"}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
               derandomize=True)  # fmt: skip


@pytest.fixture(scope="module")
def work() -> EnrichBatch:
    config = Settings(max_page_bytes=200_000).with_pipeline()
    return EnrichBatch(config, Enricher(config.pipeline), worker="fuzz:1")


# --- strategies ---------------------------------------------------------------------------------


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any text JSON can carry (lone surrogates cannot be encoded as UTF-8)."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


URLS = st.one_of(
    st.sampled_from(["https://fuzz.example/a", "http://fuzz.example/b?x=1", "file:///tmp/p.html",
                     "ftp://fuzz.example/c", "https://", "https://fuzz.example:99999/",
                     "https://[::1/", "mailto:x@y.z", ""]),
    text(60),
)  # fmt: skip
HTML_PIECES = st.sampled_from([
    "<html>", "</html>", "<head>", "<title>", "</title>", "<body>", "</body>", "<article>",
    "<p>", "</p>", "<div>", "</div>", "<table><tr><td>", "</td></tr></table>", "<script>",
    "</script>", "<!--", "-->", "<meta charset=\"utf-8\">", "<meta charset=iso-8859-1>",
    "<br>", "&amp;", "&#0;", "&nbsp;", "<![CDATA[", "]]>", "<?xml version='1.0'?>",
    "<!DOCTYPE html>", "\x00", "\ufeff", "\ud7ff", "Ü", "ß", "中文", "العربية",
    "The council met on Tuesday to discuss the new bridge over the river. ",
    "Der Stadtrat traf sich am Dienstag, um die neue Brücke zu besprechen. ",
    "Photo: Reuters", "Share on Facebook", "Advertisement", "\n", " ",
])  # fmt: skip
HTML_TEXT = st.lists(st.one_of(HTML_PIECES, text(20)), max_size=60).map("".join)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), text(40))  # fmt: skip
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(text(8), inner, max_size=4)),
    max_leaves=10)  # fmt: skip
CONTENT_TYPES = st.sampled_from([
    "text/html", "text/html; charset=utf-8", "text/html; charset=latin-1", "text/plain",
    "application/xhtml+xml", "text/xml", "application/pdf", "image/png", "",
    "text/html; charset=utf-16", "text/html; charset=base64", 'text/html; charset="x"',
])  # fmt: skip
FIELD_VALUES = {
    "url": st.one_of(URLS, JSON_VALUES),
    "html": st.one_of(HTML_TEXT, JSON_VALUES),
    "text": st.one_of(HTML_TEXT, JSON_VALUES),
    "body_base64": st.one_of(
        st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
        HTML_TEXT.map(lambda t: base64.b64encode(t.encode("utf-8", "replace")).decode()),
        text(40)),
    "content_type": st.one_of(CONTENT_TYPES, JSON_VALUES),
    "fetched_at": st.one_of(st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01", "now",
                                             "2024-13-45T99:00"]), JSON_VALUES),
    "source": JSON_VALUES,
}  # fmt: skip


@st.composite
def envelopes(draw) -> bytes:
    """A JSON object with any subset of the envelope's fields, each with a plausible or an
    arbitrary value, plus unknown fields: what a buggy producer could send."""
    names = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), unique=True, max_size=7))
    doc = {name: draw(FIELD_VALUES[name]) for name in names}
    doc.update(draw(st.dictionaries(text(10), JSON_VALUES, max_size=2)))
    return orjson.dumps(doc)


@st.composite
def mutated_pages(draw) -> bytes:
    """A real corpus page with a few random edits: cut short, bytes inserted or overwritten.
    Most stay articles, so the edits reach trafilatura, cleaning, langdetect and spaCy."""
    page = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(page)))
        edit = draw(st.sampled_from(["cut", "insert", "overwrite"]))
        junk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=64),
                HTML_PIECES.map(lambda t: t.encode("utf-8", "surrogatepass")),
            )
        )
        if edit == "cut":
            del page[at:]
        elif edit == "insert":
            page[at:at] = junk
        else:
            page[at : at + len(junk)] = junk
    return bytes(page)


@st.composite
def plausible_envelopes(draw) -> bytes:
    """A well-formed envelope with a valid URL and one body field: gets past the envelope,
    so extraction, cleaning, language detection and NER see the generated body."""
    body = draw(st.sampled_from(["html", "text", "body_base64"]))
    page = draw(HTML_TEXT)
    doc = {
        "url": draw(st.sampled_from(["https://fuzz.example/a", "file:///tmp/b.html"])),
        body: base64.b64encode(page.encode()).decode() if body == "body_base64" else page,
    }
    if draw(st.booleans()):
        doc["content_type"] = draw(CONTENT_TYPES)
    return orjson.dumps(doc)


RAW_VALUES = st.one_of(
    st.none(),
    st.binary(max_size=2_000),
    HTML_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    envelopes(),
    envelopes().map(lambda e: e[: len(e) // 2]),  # cut short
    plausible_envelopes(),
    mutated_pages().map(lambda page: orjson.dumps(
        {"url": "https://fuzz.example/m", "body_base64": base64.b64encode(page).decode()})),
)  # fmt: skip
KEYS = st.one_of(st.none(), st.binary(max_size=80), URLS.map(lambda u: u.encode()))


# --- properties ---------------------------------------------------------------------------------


def assert_one_typed_outcome(outputs, items) -> None:
    assert len(outputs) == len(items)
    for out, (ref, _) in zip(outputs, items, strict=True):
        event(f"{out.outcome.stage}/{out.reason}" if out.reason else "article")
        assert out.ref == ref  # in input order
        assert isinstance(out.outcome, Article | Failure)
        assert out.role in (ARTICLES, DEAD_LETTER)
        assert (out.role == ARTICLES) == isinstance(out.outcome, Article)
        doc = orjson.loads(out.value)  # every record is valid JSON
        if out.role == DEAD_LETTER:
            assert SNAKE.fullmatch(doc["reason"]) and doc["stage"] in STAGES, doc
            assert doc["reason"] != "internal_error", doc  # a stage crashed: a bug
            assert doc["input"]["offset"] == ref.offset
        else:
            assert out.key == out.outcome.id.encode() and doc["text"]


def refs(values: list) -> list[tuple[InputRef, bytes | None]]:
    return [(InputRef("raw-pages", 0, i, None, len(v or b"")), v) for i, v in enumerate(values)]


@FUZZ
@given(value=RAW_VALUES, key=KEYS)
def test_any_record_gets_exactly_one_typed_outcome(work, value, key):
    items = [(InputRef("raw-pages", 3, 11, key, len(value or b"")), value)]
    assert_one_typed_outcome(work(items), items)


@FUZZ
@given(values=st.lists(RAW_VALUES, min_size=1, max_size=6))
def test_a_batch_of_anything_keeps_one_outcome_per_input_in_order(work, values):
    items = refs(values)
    assert_one_typed_outcome(work(items), items)


@FUZZ
@given(value=envelopes())
def test_arbitrary_envelopes_parse_to_a_page_or_a_reason(value):
    parsed = parse_raw_page(value, None)
    assert isinstance(parsed, RawPage | Failure)
    if isinstance(parsed, Failure):
        assert parsed.stage == "envelope" and SNAKE.fullmatch(parsed.reason)
    else:
        assert parsed.url and parsed.body and not parsed.body.isspace()


@FUZZ
@given(
    body=st.one_of(st.binary(max_size=3_000), HTML_TEXT, mutated_pages()),
    content_type=CONTENT_TYPES,
)
def test_the_stages_never_raise_on_any_body(body, content_type):
    outcome = Enricher().enrich(RawPage("https://fuzz.example/p", body, content_type))
    assert isinstance(outcome, Article | Failure)
    event(f"{outcome.stage}/{outcome.reason}" if isinstance(outcome, Failure) else "article")
    if isinstance(outcome, Failure):
        assert outcome.reason != "internal_error", outcome
