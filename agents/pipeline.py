"""The per-page chain: extract → clean → language → entities, as one pure, synchronous call.

`newsflow enrich` and the streaming agent both run this, so a page gives the same article
with or without a broker. Pages are enriched in batches so spaCy can use `nlp.pipe`.
Stage code returns `Failure` values for bad input; anything a stage raises anyway is turned
into a `Failure(reason="internal_error")` here and logged with the page's URL, so one weird
page can never take a worker down.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from agents.clean import CleanConfig, clean
from agents.entities import EntitiesConfig, EntityTagger
from agents.extract import ExtractConfig, extract
from agents.language import LanguageConfig, detect_language
from agents.records import Article, Failure, RawPage, article_id

log = logging.getLogger(__name__)

STAGES = ("extract", "clean", "language", "entities")

T = TypeVar("T")


@dataclass(frozen=True)
class PipelineConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    entities: EntitiesConfig = field(default_factory=EntitiesConfig)


class Enricher:
    """Runs the chain; holds the (lazily loaded) NER model and per-stage timings."""

    def __init__(self, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.tagger = EntityTagger(self.config.entities)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def enrich(self, page: RawPage) -> Article | Failure:
        return self.enrich_many([page])[0]

    def enrich_many(self, pages: Iterable[RawPage]) -> list[Article | Failure]:
        """Enrich a batch; the result list is parallel to the input."""
        outcomes: list[Article | Failure] = []
        for page in pages:
            outcomes.append(self.text_stages(page))
        articles = [a for a in outcomes if isinstance(a, Article)]
        if articles:
            tagged = self.guard(
                "entities",
                ",".join(a.url for a in articles[:3]),
                lambda: self.tagger.tag_many([(a.text, a.language) for a in articles]),
                count=len(articles),
            )
            if isinstance(tagged, Failure):
                # One bad batch must not cost the whole batch: retry page by page.
                tagged = [self._tag_one(a) for a in articles]
            for article, result in zip(articles, tagged, strict=True):
                if isinstance(result, Failure):
                    article.entities, article.entities_note = [], f"failed: {result.reason}"
                else:
                    article.entities, article.entities_note = result
        return outcomes

    def _tag_one(self, article: Article):
        item = [(article.text, article.language)]
        result = self.guard("entities", article.url, lambda: self.tagger.tag_many(item))
        return result if isinstance(result, Failure) else result[0]

    def text_stages(self, page: RawPage) -> Article | Failure:
        """extract → clean → language for one page (NER runs batched in `enrich_many`)."""
        cfg = self.config
        extracted = self.guard("extract", page.url, lambda: extract(page, cfg.extract))
        if isinstance(extracted, Failure):
            return extracted
        cleaned = self.guard("clean", page.url, lambda: clean(extracted.text, cfg.clean))
        if isinstance(cleaned, Failure):
            return cleaned
        lang = self.guard(
            "language", page.url, lambda: detect_language(cleaned.text, cfg.language)
        )
        if isinstance(lang, Failure):
            return lang
        return Article(
            id=article_id(page.url, cleaned.text),
            url=page.url,
            source=page.source,
            fetched_at=page.fetched_at,
            title=extracted.title,
            author=extracted.author,
            date=extracted.date,
            sitename=extracted.sitename,
            description=extracted.description,
            canonical_url=extracted.canonical_url,
            page_language=extracted.page_language,
            text=cleaned.text,
            language=lang.code,
            language_confidence=lang.confidence,
            boilerplate_removed=dict(cleaned.removed),
        )

    def guard(self, stage: str, where: str, call: Callable[[], T], count: int = 1) -> T | Failure:
        """Time a stage call and turn an escaped exception into a counted failure value."""
        start = time.perf_counter()
        try:
            return call()
        except Exception as exc:  # the one place stage crashes are contained
            log.exception("stage %s crashed on %s", stage, where)
            return Failure("internal_error", stage, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += count
