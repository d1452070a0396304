"""The page sets the throughput benchmarks run on, grouped by the language the chain detects.

The corpus is mostly German and NER runs only on English, so one figure for "the corpus"
says little about an English news feed. Groups:

- `all`: every input page (default `../shared/corpus`);
- `de`: the inputs the chain itself detects as German (no NER: the cheap path);
- `en`: the inputs detected as English plus the English news mix, the 300 BASIL articles
  rendered as pages by `streams.bench.stories` (the renderer story clustering is scored with,
  reused rather than copied), so NER cost is measured on real news bodies.

Grouping uses the language the chain detected (`Article.language`), not `<html lang>`: that
is what decides whether NER runs, i.e. what a page costs.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.records import Article, Failure, RawPage
from streams.sources import SourceError, iter_pages

GROUPS = ("all", "de", "en")


def default_corpus() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "corpus"


@dataclass(frozen=True)
class PageSet:
    """A named list of pages and where they came from (for the report)."""

    name: str
    pages: tuple[RawPage, ...]
    origin: dict[str, int]  # e.g. {"corpus": 34, "basil": 300}

    def __len__(self) -> int:
        return len(self.pages)


def load_pages(
    paths: Iterable[str | Path], max_bytes: int | None = None, limit: int | None = None
) -> tuple[list[RawPage], Counter[str]]:
    """Pages under `paths` in input order (at most `limit`), and the inputs that could not be
    read, by reason: a benchmark must say what it left out, not drop it silently."""
    pages: list[RawPage] = []
    unreadable: Counter[str] = Counter()
    for item in iter_pages(paths, max_bytes=max_bytes):
        if isinstance(item, SourceError):
            unreadable[item.failure.reason] += 1
        elif limit is None or len(pages) < limit:
            pages.append(item)
    return pages, unreadable


def basil_pages(limit: int | None = None) -> list[RawPage]:
    """The BASIL articles as HTML pages (whole triplets; `limit` rounds down to a multiple of
    three, at least one triplet)."""
    from streams.bench.stories import basil_items

    return [item.page for item in basil_items(limit=limit)]


def language_groups(
    pages: Sequence[RawPage],
    outcomes: Sequence[Article | Failure],
    extra_en: Sequence[RawPage] = (),
) -> dict[str, PageSet]:
    """`all`, `de` and `en` from the chain's outcomes for `pages` (parallel lists); the pages
    in `extra_en` (BASIL) join `en`. A page the chain rejected belongs to `all` only."""
    if len(pages) != len(outcomes):
        raise ValueError("pages and outcomes must be parallel lists")
    by_language: dict[str, list[RawPage]] = {}
    for page, outcome in zip(pages, outcomes, strict=True):
        if isinstance(outcome, Article):
            by_language.setdefault(outcome.language, []).append(page)
    de = by_language.get("de", [])
    en = by_language.get("en", [])
    groups = {
        "all": PageSet("all", tuple(pages), {"inputs": len(pages)}),
        "de": PageSet("de", tuple(de), {"inputs": len(de)}),
        "en": PageSet("en", (*en, *extra_en), {"inputs": len(en), "basil": len(extra_en)}),
    }
    return groups


def cycle(pages: Sequence[RawPage], count: int, seed: int = 0) -> Iterator[RawPage]:
    """`count` pages: whole passes over `pages`, each pass in its own seeded shuffled order,
    so a backlog of any length mixes cheap and expensive pages the same way."""
    if not pages:
        return
    rng = random.Random(seed)
    order = list(pages)
    sent = 0
    while sent < count:
        rng.shuffle(order)
        for page in order[: count - sent]:
            yield page
            sent += 1
