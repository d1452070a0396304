"""Shared inputs for the extract and clean tests: the corpus extracted once per test process,
and the two seed documents read as the crawler would hand them over."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from agents.extract import Extracted, extract
from agents.records import Failure, RawPage
from streams.sources import SourceError, iter_pages
from tests.conftest import CORPUS, SEEDS

SEED_000 = SEEDS / "000_ce1b0169e1f656ef.txt"
SEED_004 = SEEDS / "004_75160a5f16c4fa04.txt"


def page_name(page: RawPage) -> str:
    """Corpus file name without `.html.gz`: the key of GOLDEN."""
    return Path(page.source).name.removesuffix(".gz").removesuffix(".html")


@cache
def corpus_outcomes() -> dict[str, tuple[RawPage, Extracted | Failure]]:
    """Every corpus page with what `extract` made of it (one pass, shared by the test modules).

    An exception propagates: that is the failure the corpus test exists to catch."""
    outcomes: dict[str, tuple[RawPage, Extracted | Failure]] = {}
    for page in iter_pages([CORPUS]):
        assert not isinstance(page, SourceError), page
        outcomes[page_name(page)] = (page, extract(page))
    return outcomes


def seed_page(path: Path) -> RawPage:
    return RawPage(url=path.resolve().as_uri(), body=path.read_bytes(), content_type="text/plain")
