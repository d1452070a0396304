"""`newsflow enrich --dedup` on the seeds: seed 000 carries its body twice (one block, then the
same paragraphs split up among widgets), seed 004 is another outlet's report of the event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from tests.conftest import SEEDS

ARTICLE_SCHEMA = Path(__file__).resolve().parent.parent / "streams/schemas/article.schema.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict[str, dict], str]:
    """The seed-000 copies as three pages, fetched a minute apart, then seed 004."""
    lines = (SEEDS / "000_ce1b0169e1f656ef.txt").read_text().split("\n")
    title, block, rest = lines[0], lines[2], lines[3:]
    assert len(block) > 4000 and sum(len(line) for line in rest) > 4000
    folder = tmp_path_factory.mktemp("seed000")
    pages = {
        "a_block.txt": f"{title}\n\n{block}\n",
        "b_paragraphs.txt": f"{title}\n\n" + "\n".join(rest),
        # The split copy without its last eight paragraphs: similar, no longer identical.
        "c_shortened.txt": f"{title}\n\n" + "\n".join(rest[:-16]),
    }
    for i, (name, text) in enumerate(pages.items()):
        (folder / name).write_text(text)
        os.utime(folder / name, (1_500_000_000 + 60 * i,) * 2)  # fetched_at: a, then b, then c
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "enrich", "--dedup", str(folder),
         str(SEEDS / "004_75160a5f16c4fa04.txt")],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    return {r["source"].rsplit("/", 1)[-1][:3]: r for r in records}, done.stderr.decode()


def test_the_second_body_copy_duplicates_the_first(run):
    records, _ = run
    first, copy = records["a_b"], records["b_p"]
    assert first["duplicate_of"] is None and first["duplicate_kind"] is None
    # Cleaning drops the widgets between the paragraphs, so the copy's words are the block's
    # words: an exact duplicate, found before the MinHash stage.
    assert (copy["duplicate_of"], copy["duplicate_kind"], copy["similarity"]) == (
        first["id"], "exact", 1.0)  # fmt: skip
    shortened = records["c_s"]
    assert (shortened["duplicate_of"], shortened["duplicate_kind"]) == (first["id"], "near")
    assert 0.4 <= shortened["similarity"] < 1.0


def test_another_outlets_report_of_the_event_is_kept(run):
    records, stderr = run
    other = records["004"]
    assert other["duplicate_of"] is None and other["duplicate_kind"] is None
    assert other["id"] not in {r["duplicate_of"] for r in records.values()}
    assert "4 inputs: article=2, duplicate_exact=1, duplicate_near=1" in stderr


def test_marked_records_are_still_articles_by_the_schema(run):
    records, _ = run
    validator = jsonschema.Draft202012Validator(json.loads(ARTICLE_SCHEMA.read_text()))
    for record in records.values():
        validator.validate(record)
