"""The raw-pages contract: envelopes round-trip, every failure reason, the JSON Schema agrees."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.records import Failure, RawPage
from streams.envelope import (
    DEFAULT_LIMITS,
    EnvelopeLimits,
    declared_charsets,
    envelope_key,
    page_to_envelope,
    parse_raw_page,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "streams/schemas/raw-page.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
SMALL = EnvelopeLimits(max_page_bytes=100, max_url_chars=40, max_field_chars=20)
URL = "https://example.org/news/1"
HTML = "<html><head><title>Ünïcödé</title></head><body><p>Grüße aus Köln</p></body></html>"


def corpus_page(corpus_dir: Path, name: str) -> bytes:
    return gzip.decompress((corpus_dir / "pages" / name).read_bytes())


def envelope(**fields) -> bytes:
    return orjson.dumps(fields)


def test_str_body_round_trips():
    page = RawPage(URL, HTML, "text/html; charset=utf-8", "2024-05-01T12:00:00Z", "crawler-7")
    value = page_to_envelope(page)
    assert orjson.loads(value)["html"] == HTML
    assert parse_raw_page(value, envelope_key(page)) == page


def test_non_utf8_bytes_travel_as_base64_and_come_back_identical(corpus_dir):
    body = corpus_page(corpus_dir, "landwirt.com.sensortechnik.html.gz")
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    page = RawPage(URL, body, "text/html; charset=ISO-8859-1", None, "")
    doc = orjson.loads(page_to_envelope(page))
    assert set(doc) == {"url", "body_base64", "content_type"}
    assert parse_raw_page(page_to_envelope(page), None) == page


def test_utf8_bytes_declaring_another_charset_keep_their_bytes(corpus_dir):
    """Valid UTF-8 (here pure ASCII) but `<meta charset=iso-8859-1>`: str would drop what the
    page says about itself, so the bytes travel."""
    body = corpus_page(corpus_dir, "hundeverein-kreisunna.de.html.gz")
    assert body.decode("utf-8") and declared_charsets("", body) == {"iso-8859-1"}
    value = page_to_envelope(RawPage(URL, body))
    assert "body_base64" in orjson.loads(value)
    assert parse_raw_page(value, None).body == body


def test_utf8_bytes_travel_as_readable_html(corpus_dir):
    body = corpus_page(corpus_dir, "austria.info.radfahren.html.gz")
    value = page_to_envelope(RawPage(URL, body, "text/html; charset=utf-8"))
    assert orjson.loads(value)["html"] == body.decode("utf-8")
    assert parse_raw_page(value, None).body == body.decode("utf-8")


def test_text_plain_uses_the_text_field():
    page = RawPage(URL, "Headline\n\nA plain text report.", "text/plain")
    doc = orjson.loads(page_to_envelope(page))
    assert "text" in doc and "html" not in doc
    got = parse_raw_page(envelope(url=URL, text="Plain report."), None)
    assert got.content_type == "text/plain" and got.body == "Plain report."


def test_every_corpus_page_round_trips_and_matches_the_schema(corpus_dir):
    manifest = [orjson.loads(x) for x in (corpus_dir / "manifest.jsonl").read_bytes().splitlines()]
    for entry in manifest:
        body = gzip.decompress((corpus_dir / entry["file"]).read_bytes())
        page = RawPage(entry["url"], body, "text/html", "2024-05-01T12:00:00+02:00", "corpus")
        value = page_to_envelope(page)
        VALIDATOR.validate(orjson.loads(value))
        got = parse_raw_page(value, None)
        assert isinstance(got, RawPage), (entry["file"], got)
        assert (got.url, got.content_type, got.fetched_at, got.source) == (
            page.url,
            page.content_type,
            page.fetched_at,
            page.source,
        )
        assert (got.body if isinstance(got.body, bytes) else got.body.encode()) == body


def test_lone_surrogates_do_not_break_serialisation():
    page = RawPage(URL, "<p>bad \udcff byte</p>")
    got = parse_raw_page(page_to_envelope(page), None)
    assert isinstance(got, RawPage) and got.body == "<p>bad ? byte</p>"


def test_bare_html_takes_the_url_from_the_key():
    body = "\ufeff \n<!doctype html><p>Bericht</p>".encode()
    got = parse_raw_page(body, b" https://example.org/a?b=1 \n")
    assert got == RawPage("https://example.org/a?b=1", body, "text/html")


def test_envelope_with_bom_and_leading_blanks_is_still_json():
    value = b"\xef\xbb\xbf \r\n" + envelope(url=URL, html=HTML)
    assert parse_raw_page(value, None).body == HTML


def test_envelope_url_wins_over_the_key_and_unknown_fields_are_ignored():
    value = envelope(url=URL, html=HTML, status=200, headers={"server": "x"}, source=None)
    got = parse_raw_page(value, b"https://other.example/")
    assert got.url == URL and got.source == "" and got.content_type == "text/html"


LONG = "x" * 21
REJECTS = [
    # (value, key, limits, reason, words the message must contain)
    (b"{not json", None, DEFAULT_LIMITS, "malformed_envelope", "invalid JSON"),
    (b'["a list"]', None, DEFAULT_LIMITS, "malformed_envelope", "JSON object"),
    (envelope(url=5, html=HTML), None, DEFAULT_LIMITS, "malformed_envelope", "url"),
    (envelope(url=URL, html=["x"]), None, DEFAULT_LIMITS, "malformed_envelope", "html"),
    (envelope(url=URL, html=HTML, text="t"), None, DEFAULT_LIMITS, "malformed_envelope", "text"),
    (envelope(url=URL, body_base64="***"), None, DEFAULT_LIMITS, "malformed_envelope", "base64"),
    (envelope(url=URL, html=HTML, source=7), None, DEFAULT_LIMITS, "malformed_envelope", "source"),
    (envelope(url=URL, html=HTML, fetched_at="yesterday"), None, DEFAULT_LIMITS,
     "malformed_envelope", "fetched_at"),
    (envelope(url=URL, html=HTML, fetched_at="2024-02-30"), None, DEFAULT_LIMITS,
     "malformed_envelope", "fetched_at"),
    (envelope(html=HTML), b"https://key.example/", DEFAULT_LIMITS, "missing_url", "url"),
    (envelope(url="  ", html=HTML), None, DEFAULT_LIMITS, "missing_url", "url"),
    (b"<html><p>no key</p></html>", None, DEFAULT_LIMITS, "missing_url", "key"),
    (b"<html><p>empty key</p></html>", b"", DEFAULT_LIMITS, "missing_url", "key"),
    (None, b"https://example.org/", DEFAULT_LIMITS, "missing_body", "tombstone"),
    (envelope(url=URL), None, DEFAULT_LIMITS, "missing_body", "html"),
    (envelope(url=URL, html=None), None, DEFAULT_LIMITS, "missing_body", "html"),
    (envelope(url="https://example.org/" + "a" * 30, html="x"), None, SMALL, "field_too_large",
     "url"),
    (b"<p>x</p>", ("https://example.org/" + "a" * 30).encode(), SMALL, "field_too_large", "url"),
    (envelope(url=URL, html="x", content_type=LONG), None, SMALL, "field_too_large",
     "content_type"),
    (envelope(url=URL, html="x", fetched_at=LONG), None, SMALL, "field_too_large", "fetched_at"),
    (envelope(url=URL, html="x", source=LONG), None, SMALL, "field_too_large", "source"),
    (envelope(url=URL, html="é" * 51), None, SMALL, "too_large", "102 bytes > 100"),
    (envelope(url=URL, text="t" * 101), None, SMALL, "too_large", "text"),
    (envelope(url=URL, body_base64=base64.b64encode(b"b" * 101).decode()), None, SMALL,
     "too_large", "body_base64"),
    (b"<p>" + b"x" * 100 + b"</p>", URL.encode(), SMALL, "too_large", "body"),
    (b"{" + b" " * (SMALL.max_envelope_bytes + 1) + b"}", None, SMALL, "too_large", "envelope"),
    (envelope(url="ftp://example.org/x", html=HTML), None, DEFAULT_LIMITS, "invalid_url", "ftp"),
    (envelope(url="/relative/path", html=HTML), None, DEFAULT_LIMITS, "invalid_url", "scheme"),
    (envelope(url="https:///no-host", html=HTML), None, DEFAULT_LIMITS, "invalid_url", "host"),
    (envelope(url="http://[::1/x", html=HTML), None, DEFAULT_LIMITS, "invalid_url", "IPv6"),
    (envelope(url="http://example.org:99999/", html=HTML), None, DEFAULT_LIMITS, "invalid_url",
     "Port"),
    (envelope(url="https://exa\nmple.org/", html=HTML), None, DEFAULT_LIMITS, "invalid_url",
     "control"),
    (b"<p>x</p>", b"\xff\xfe not utf-8", DEFAULT_LIMITS, "invalid_url", "UTF-8"),
    (b"<p>x</p>", b"javascript:alert(1)", DEFAULT_LIMITS, "invalid_url", "javascript"),
    (envelope(url=URL, html=" \n\t "), None, DEFAULT_LIMITS, "empty_page", "html"),
    (envelope(url=URL, body_base64=""), None, DEFAULT_LIMITS, "empty_page", "body_base64"),
    (b"  \r\n", URL.encode(), DEFAULT_LIMITS, "empty_page", "blank"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "key", "limits", "reason", "words"), REJECTS)
def test_each_failure_reason(value, key, limits, reason, words):
    got = parse_raw_page(value, key, limits)
    assert isinstance(got, Failure), got
    assert (got.reason, got.stage) == (reason, "envelope")
    assert words in got.message


def test_the_whole_reason_vocabulary_is_exercised():
    assert {r[3] for r in REJECTS} == {
        "malformed_envelope",
        "missing_url",
        "missing_body",
        "field_too_large",
        "too_large",
        "invalid_url",
        "empty_page",
    }


def test_a_utf8_body_at_the_cap_is_accepted():
    assert isinstance(parse_raw_page(envelope(url=URL, html="é" * 50), None, SMALL), RawPage)
    assert isinstance(parse_raw_page(b"x" * 100, URL.encode(), SMALL), RawPage)


def test_content_type_is_carried_not_judged():
    """`not_html` is extraction's call (it sniffs bytes anyway); the envelope carries the type."""
    got = parse_raw_page(envelope(url=URL, html=HTML, content_type="image/png"), None)
    assert got.content_type == "image/png"


# --- the JSON Schema ---------------------------------------------------------------------------


def test_schema_caps_are_the_default_limits():
    props = SCHEMA["properties"]
    assert props["url"]["maxLength"] == DEFAULT_LIMITS.max_url_chars
    for name in ("content_type", "fetched_at", "source"):
        assert props[name]["maxLength"] == DEFAULT_LIMITS.max_field_chars
    assert props["html"]["maxLength"] == props["text"]["maxLength"] == DEFAULT_LIMITS.max_page_bytes
    assert props["body_base64"]["maxLength"] == len(
        base64.b64encode(b"\0" * DEFAULT_LIMITS.max_page_bytes)
    )


SCHEMA_AGREES = [
    {"html": HTML},
    {"url": 5, "html": HTML},
    {"url": URL},
    {"url": URL, "html": HTML, "text": "t"},
    {"url": URL, "html": ["x"]},
    {"url": URL, "html": " \n "},
    {"url": URL, "body_base64": "***"},
    {"url": URL, "html": HTML, "fetched_at": "yesterday"},
    {"url": URL, "html": HTML, "source": 7},
    {"url": "ftp://example.org/x", "html": HTML},
    {"url": "/relative", "html": HTML},
    {"url": "https://exa\nmple.org/", "html": HTML},
    {"url": URL, "html": HTML, "content_type": "t" * 1025},
    {"url": "https://example.org/" + "a" * 4096, "html": HTML},
    {"url": URL, "html": "x" * 10_000_001},
]


@pytest.mark.parametrize("doc", SCHEMA_AGREES, ids=range(len(SCHEMA_AGREES)))
def test_schema_rejects_what_the_parser_rejects(doc):
    assert isinstance(parse_raw_page(orjson.dumps(doc), None), Failure)
    assert not VALIDATOR.is_valid(doc)


def test_schema_accepts_what_the_parser_accepts():
    for doc in (
        {"url": URL, "html": HTML},
        {"url": URL, "text": "plain", "content_type": None, "fetched_at": None},
        {"url": "file:///tmp/a.html", "body_base64": "PHA+eDwvcD4=", "fetched_at": "2024-05-01"},
        {"url": URL, "html": HTML, "text": None, "extra": {"any": "thing"}},
    ):
        assert isinstance(parse_raw_page(orjson.dumps(doc), None), RawPage)
        assert VALIDATOR.is_valid(doc), doc


# --- never raises ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(st.none(), st.binary(max_size=300)),
    key=st.one_of(st.none(), st.binary(max_size=60)),
)
def test_any_bytes_give_a_page_or_a_failure(value, key):
    assert isinstance(parse_raw_page(value, key, SMALL), RawPage | Failure)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELD_VALUES = JSON_VALUES | st.sampled_from(
    [URL, "http://x", "file:///a", "2024-05-01T00:00:00Z", "PHA+", "", " ", "\ufeff"]
)


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(
    st.sampled_from(["url", "html", "text", "body_base64", "content_type", "fetched_at", "source"]),
    FIELD_VALUES,
))  # fmt: skip
def test_any_json_object_gives_a_page_or_a_failure(doc):
    got = parse_raw_page(json.dumps(doc).encode(), None, SMALL)  # stdlib: any int size
    assert isinstance(got, RawPage | Failure)
    if isinstance(got, RawPage):
        assert got.url == doc["url"].strip() and len(got.url) <= SMALL.max_url_chars
