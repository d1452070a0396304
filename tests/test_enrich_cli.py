"""Acceptance of the enrichment core through the real CLI: `newsflow enrich` on the seeds."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.conftest import SEEDS

PLACES = {"GPE", "LOC"}
# What the seeds name, each with the labels a correct tagger may give (the list).
EXPECTED = [
    (("Palmyra",), PLACES),
    (("Syria",), PLACES),
    (("Aleppo",), PLACES),
    (("Raqqa",), PLACES),
    (("Mosul",), PLACES),
    (("Russia", "Russian"), {"GPE", "NORP"}),
    (("ISIS", "Islamic State"), {"ORG", "NORP"}),
    (("Bashar Assad",), {"PERSON"}),
    (("Ash Carter",), {"PERSON"}),
    (("Syrian Observatory for Human Rights",), {"ORG"}),
]
BOILERPLATE = [
    "Play Facebook",
    "Google Plus",
    "Copy this code",
    "Related:",
    "Hassan Ammar / AP",
    "Militant Video via AP",
    "You've read",
    "Subscribe to continue",
    "Dear Reader",
    "bran muffin",
    "QR Code",
    "Start your subscription",
]


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "enrich", str(SEEDS)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert b"2 inputs: article=2" in out.stderr
    return {r["source"].rsplit("/", 1)[-1][:3]: r for r in lines}


@pytest.mark.parametrize("seed", ["000", "004"])
def test_seed_is_an_english_article_without_boilerplate(records, seed) -> None:
    record = records[seed]
    assert record["language"] == "en" and record["language_confidence"] > 0.9
    assert record["schema_version"] == 1 and len(record["id"]) == 20
    for junk in BOILERPLATE:
        assert junk not in record["text"], junk


@pytest.mark.parametrize("seed", ["000", "004"])
def test_seed_entities_name_what_its_text_names(records, seed) -> None:
    record = records[seed]
    found = {(e["text"], e["label"]) for e in record["entities"]}
    checked = 0
    for names, labels in EXPECTED:
        named = [n for n in names if n in record["text"]]
        if named:
            checked += 1
            assert any((n, label) in found for n in named for label in labels), names
    assert checked >= 8


def test_seed_000_body_comes_out_once(records) -> None:
    text = records["000"]["text"]
    assert text.count("Palmyra was a major tourist attraction before Syria's civil war") == 1
    assert text.count("reported that the militant group received reinforcements") == 1


def test_ids_are_stable_across_runs(records) -> None:
    again = subprocess.run(
        [sys.executable, "-m", "streams.cli", "enrich", str(SEEDS / "000_ce1b0169e1f656ef.txt")],
        capture_output=True,
        check=True,
        timeout=300,
    )
    assert orjson.loads(again.stdout)["id"] == records["000"]["id"]


def test_stories_flag_groups_the_two_reports_and_nothing_else() -> None:
    corpus = sorted((SEEDS.parent / "corpus" / "pages").glob("*.html.gz"))[:6]
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "enrich", "--stories", str(SEEDS), *map(str, corpus)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    records = [orjson.loads(line) for line in out.stdout.splitlines()]
    stories = [r.get("story_id") for r in records if "error" not in r]
    seed_story = {r["story_id"] for r in records if "/seeds/" in r["source"]}
    assert len(seed_story) == 1 and next(iter(seed_story)).startswith("s-")
    assert stories.count(next(iter(seed_story))) == 2
