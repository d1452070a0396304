"""Outcome records (`streams.topics`): what goes on articles and dead-letter, and reading it
back. Checked against the published JSON Schemas."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest

from agents.records import Article, Entity, Failure
from streams.topics import (
    INPUT_HEADER,
    InputRef,
    article_value,
    dead_letter_value,
    decode_outcome,
    outcome_headers,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "streams" / "schemas"


@pytest.fixture(scope="module")
def article_schema():
    schema = json.loads((SCHEMAS / "article.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def dead_letter_schema():
    schema = json.loads((SCHEMAS / "dead-letter.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def test_schemas_are_valid_draft_2020_12():
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_article_schema_lists_exactly_the_article_fields(article_schema):
    names = {f.name for f in fields(Article)}
    assert set(article_schema.schema["properties"]) == names
    assert set(article_schema.schema["required"]) == names


def test_article_value_is_the_article_dict(article_schema):
    article = Article(id="00112233445566778899", url="https://a.example/x", text="Hello.",
                      language="en", language_confidence=0.99,
                      entities=[Entity("Palmyra", "GPE", 3)],
                      boilerplate_removed={"share": 2})  # fmt: skip
    value = article_value(article, 1_000_000)
    assert orjson.loads(value) == article.to_dict()
    article_schema.validate(orjson.loads(value))


def test_articles_that_cannot_travel_become_failures():
    broken = Article(id="00112233445566778899", url="https://a.example/x", text="bad \udcff byte")
    failure = article_value(broken, 1_000_000)
    assert isinstance(failure, Failure)
    assert (failure.reason, failure.stage) == ("unencodable_article", "output")
    big = Article(id="00112233445566778899", url="https://a.example/x", text="x" * 200_000)
    failure = article_value(big, 200_000)
    assert (failure.reason, failure.stage) == ("article_too_large", "output")


def test_dead_letter_references_its_input(dead_letter_schema):
    ref = InputRef("raw-pages", 3, 1234, b"https://a.example/\xff", 99)
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    failure = Failure("no_content", "extract", "nothing left")
    value = dead_letter_value(ref, failure, url="https://a.example/\udcff", worker="host:1",
                              now=when)  # fmt: skip
    doc = orjson.loads(value)
    dead_letter_schema.validate(doc)
    assert doc["input"] == {"topic": "raw-pages", "partition": 3, "offset": 1234,
                            "key": "https://a.example/\\xff", "value_bytes": 99}  # fmt: skip
    assert (doc["reason"], doc["stage"], doc["timestamp"]) == (
        "no_content", "extract", "2024-05-01T12:00:00.123Z")
    assert doc["url"] == "https://a.example/?"  # a lone surrogate cannot be JSON text


def test_dead_letter_caps_what_it_copies(dead_letter_schema):
    ref = InputRef("raw-pages", 0, 0, b"k" * 50_000, 0)
    doc = orjson.loads(dead_letter_value(ref, Failure("x", "envelope", "m" * 10_000),
                                         max_key_chars=100))  # fmt: skip
    dead_letter_schema.validate(doc)
    assert len(doc["input"]["key"]) == 100 and len(doc["message"]) == 2000


def test_outcomes_read_back_with_their_input_position():
    ref = InputRef("raw-pages", 2, 7, None, 5)
    headers = outcome_headers(ref, "host:42")
    dead = dead_letter_value(ref, Failure("missing_url", "envelope"))
    outcome = decode_outcome("dead_letter", None, dead, headers)
    assert (outcome.input, outcome.worker, outcome.value["reason"]) == (
        ("raw-pages", 2, 7), "host:42", "missing_url")
    # Without the header a dead letter still names its input; garbage never raises.
    assert decode_outcome("dead_letter", None, dead, []).input == ("raw-pages", 2, 7)
    junk = decode_outcome("article", b"k", b"\x00not json", [(INPUT_HEADER, b"{bad")])
    assert (junk.input, junk.value) == (None, None)
