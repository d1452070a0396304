"""Story clustering: give every article the id of the story it reports, in one pass over a stream.

Near-duplicate detection finds copies; this finds *different write-ups of one event*, which share
few sentences but the same people, places and days. Each article becomes three small weighted
vectors (title words, lead words, normalised entities) and a time; it joins the live story whose
centroid scores highest when that score clears the threshold, else it opens a story of its own
with id `"s-" + first article id`, the same whichever process or partition saw it first.

Why it is built this way:
- The score is the weighted mean of the three TF-IDF cosines (over the parts both sides have),
  times exp(-gap / decay_hours): different events a few days apart share names and words, and
  time is what tells them apart. Document frequencies are counted online from the stream itself
  (`DocumentFrequencies`, day buckets over a horizon): a deployment has no future documents.
- A story is compared through its *centroid*, not its nearest member: nearest-member rules chain
  big, dense stories into one blob, one near pair at a time.
- Stories are found through an inverted index (entity/word key -> story ids) and leave all state
  once `window_hours` pass without a new article: the state is bounded by the window, not by
  the length of the stream.
- All state lives in three `MutableMapping`s with JSON-able values (`stories` keyed by story id,
  `postings` and `df` keyed by entity/word), plain dicts in-process. A Faust table is a
  `MutableMapping` too, so the streaming version can keep the same state in tables and shard it
  by those keys.

`cluster(articles)` is the in-process entry point (`newsflow enrich --stories`); `features` turns
an Article into `StoryFeatures`; `StoryIndex.add` places one; `assign` is the pure decision over
a list of candidate stories. Measured defaults and the sweeps behind them: BENCHMARKS.md.
"""

from __future__ import annotations

import heapq
import importlib.util
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from agents.records import Article, Failure

STAGE = "stories"
DOCS_KEY = "#docs"  # the df entry counting documents; no term or entity key starts with "#"
DAY = 86_400.0

# Labels that name a quantity or a moment, not who or where: they match across unrelated stories.
NON_NAME_LABELS = frozenset(
    {"DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL"}
)
PERSON_LABELS = frozenset({"PERSON", "PER"})

_WORD = re.compile(r"\w+")
_POSSESSIVE = re.compile(r"['’]s?$")
_ACRONYM = re.compile(r"\b(?:\w\.){2,}(?!\w)")


@dataclass(frozen=True)
class StoryConfig:
    """Clustering settings; defaults chosen by `newsflow bench stories --sweep` (BENCHMARKS.md).

    window_hours: a story stays joinable this long after its latest article, then expires
      from the state (BASIL events run up to 4 days).
    threshold: the minimum score (0..1) for an article with a lead to join a story whose top
      `subject_entities` entities include the article's main one (its subject)...
    off_subject_threshold: ...and the minimum when they do not: on BASIL every wrong candidate
      scoring over 0.1 was off-subject, against a third of the right ones.
    headline_threshold: the same for a headline-only item (no text beyond its title): titles
      of one story often share only one or two words, so their cosines run lower.
    title_weight, lead_weight, entity_weight: the score is the weighted mean of the title,
      lead and entity cosines over the parts both sides have (NER finds nothing in some
      languages; a headline has no lead).
    headline_entity_weight: entity weight for headline-only items, whose entities are the
      title's own words tagged by a model trained on sentence-case prose: mostly noise.
    decay_hours: the score is multiplied by exp(-gap / decay), gap = time from the story's
      span to the article, less the article's date slack; related but different events a
      few days apart fall below the threshold this way.
    lead_words: how many words of the text, from the top, count as the lead.
    stem_chars: words are cut to this many characters (a crude multilingual stemmer; 0 = off).
    centroid_articles: the first k articles of a story make its centroid.
    centroid_keys: most keys a centroid (and an article) keeps per part.
    index_terms: how many top centroid words a story is indexed under (all its entities are).
    lookup_keys: how many of an article's heaviest keys are looked up for candidates.
    postings_per_key: most recent stories kept per index key.
    df_days, df_bucket_days: horizon of the online document frequencies, in days of article
      time, counted in buckets of this many days (fewer buckets, smaller state).
    max_*: input caps; anything longer is cut, never rejected.
    """

    window_hours: float = 96.0
    threshold: float = 0.15
    off_subject_threshold: float = 0.25
    subject_entities: int = 5
    headline_threshold: float = 0.08
    title_weight: float = 1.0
    lead_weight: float = 1.0
    entity_weight: float = 1.0
    headline_entity_weight: float = 0.25
    decay_hours: float = 72.0
    lead_words: int = 60
    stem_chars: int = 7
    centroid_articles: int = 1000
    centroid_keys: int = 100
    index_terms: int = 10
    lookup_keys: int = 24
    postings_per_key: int = 64
    df_days: int = 365
    df_bucket_days: int = 7
    max_title_chars: int = 1_024
    max_lead_chars: int = 8_192
    max_entities: int = 64
    max_entity_chars: int = 128
    max_id_chars: int = 256

    @property
    def window_seconds(self) -> float:
        return self.window_hours * 3600.0

    def weight(self, part: str, headline: bool) -> float:
        if part == "title":
            return self.title_weight
        if part == "lead":
            return self.lead_weight
        return self.headline_entity_weight if headline else self.entity_weight


# The parts of an article that are compared, and the df namespace each one's keys live in:
# title and lead words share one ("t:"), so a word's rarity is counted once.
PARTS = {"title": "t:", "lead": "t:", "entities": "e:"}


@dataclass(frozen=True, slots=True)
class StoryFeatures:
    """What clustering needs from an article: per part, key weights summing to 1 (or empty)."""

    article_id: str
    time: float  # seconds since the epoch, UTC
    parts: dict[str, dict[str, float]]
    slack: float = 0.0  # the true time may be up to this much later (a day-only date)

    def keys(self) -> dict[str, float]:
        """Index/df keys with their summed weights: entity keys "e:...", words "t:..."."""
        out: dict[str, float] = {}
        for part, vector in self.parts.items():
            prefix = PARTS[part]
            for k, w in vector.items():
                out[prefix + k] = out.get(prefix + k, 0.0) + w
        return out


@dataclass(slots=True)
class Story:
    """A live story: its centroid (summed member weights, first k members) and its time span."""

    id: str
    first_time: float
    last_time: float
    size: int = 1
    centroid_size: int = 1
    parts: dict[str, dict[str, float]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "size": self.size,
            "centroid_size": self.centroid_size,
            "parts": self.parts,
            "keys": self.keys,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Story:
        return cls(**data)

    def gap(self, t: float) -> float:
        """Seconds between `t` and this story's span (0 inside it): out-of-order safe."""
        return max(0.0, t - self.last_time, self.first_time - t)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The outcome for one article: its story, whether it opened it, the score it joined with
    (0 for a new story) and the story's size after it: what the story metrics count."""

    story_id: str
    new: bool
    score: float
    size: int


# --- features --------------------------------------------------------------------------------


def article_time(article: Article) -> float | None:
    """Publication time if the page gave one, else fetch time; None if neither parses."""
    timed = timestamp(article)
    return None if timed is None else timed[0]


def timestamp(article: Article) -> tuple[float, float] | None:
    """`(time, slack)`: the article's time and how many seconds later it may really be.

    Extraction keeps only the day of a publication date, so such a time is midnight with a
    day of slack, unless the fetch time falls on that day and pins it down. A page cannot be
    published after it was fetched: such a date (often guessed from the URL) loses to the
    fetch time.
    """
    published, fetched = parse_time(article.date), parse_time(article.fetched_at)
    if published is None:
        return None if fetched is None else (fetched, 0.0)
    slack = 0.0 if len((article.date or "").strip()) > 10 else DAY
    if fetched is not None and fetched < published + slack:
        return fetched, 0.0
    return published, slack


def parse_time(value: str | None) -> float | None:
    if not value or not isinstance(value, str):
        return None
    text = value.strip()[:64].replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@lru_cache(maxsize=64)
def stop_words(language: str) -> frozenset[str]:
    """spaCy's stop-word list for the language, or none if it has none.

    Only the list's own file is loaded (spacy/lang/<code>/stop_words.py, plain data), not the
    language package around it, which would import all of spaCy: 0.6 s per language.
    """
    code = (language or "").split("-")[0].lower()
    if not code.isalpha() or len(code) > 3:
        return frozenset()
    spacy_spec = importlib.util.find_spec("spacy")
    if spacy_spec is None or not spacy_spec.submodule_search_locations:
        return frozenset()
    for root in spacy_spec.submodule_search_locations:
        path = Path(root) / "lang" / code / "stop_words.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"_stop_words_{code}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return frozenset(w.casefold() for w in getattr(module, "STOP_WORDS", ()))
    return frozenset()


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so "Pokémon" and "POKEMON" are one key, and dotted
    acronyms closed up, so "I.R.S." is the word "irs" as in an outlet that writes "IRS"."""
    text = _ACRONYM.sub(lambda m: m.group(0).replace(".", ""), text)
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    if decomposed.isascii():  # nothing to strip: most news text, and the per-character pass
        return decomposed  # is most of clustering's cost
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _words(text: str, limit: int) -> list[str]:
    """The first `limit` folded words of `text`, folding only as much of it as they need (a
    lead is 60 words of up to 8 KB). The text is cut at a space, so no word or dotted acronym
    is split and the words are those of folding it all."""
    size = 16 * max(limit, 1)
    while size < len(text):
        cut = text.rfind(" ", 0, size)
        if cut > 0:
            words = _WORD.findall(_fold(text[:cut]))
            if len(words) >= limit:
                return words[:limit]
        size *= 4
    return _WORD.findall(_fold(text))[:limit]


def entity_key(text: str, label: str, max_chars: int = 128) -> str | None:
    """One key per real-world name: folded, without "the" or possessive; a person by surname.

    Surnames make "Donald Trump", "Trump" and "Mr. Trump" one key, as news text refers to people;
    the label is left out of the key because the tagger often disagrees with itself on it.
    """
    if label.upper() in NON_NAME_LABELS:
        return None
    words = _WORD.findall(_POSSESSIVE.sub("", _fold(text[:max_chars]).strip()))
    if words and words[0] == "the":
        words = words[1:]
    if not words:
        return None
    if label.upper() in PERSON_LABELS:
        return words[-1] if len(words[-1]) > 1 else None
    return " ".join(words)


def _terms(text: str, language: str, limit_words: int, config: StoryConfig) -> list[str]:
    stops = stop_words(language)
    out = []
    for word in _words(text, limit_words):
        if len(word) < 3 or word.isdigit() or word in stops:
            continue
        out.append(word[: config.stem_chars] if config.stem_chars else word)
    return out


def _normalised(weights: dict[str, float], limit: int) -> dict[str, float]:
    if len(weights) > limit:
        weights = dict(heapq.nlargest(limit, weights.items(), key=lambda kv: (kv[1], kv[0])))
    total = sum(weights.values())
    return {k: w / total for k, w in sorted(weights.items())} if total > 0 else {}


def _counts(words: Iterable[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in words:
        out[w] = out.get(w, 0.0) + 1.0
    return out


def features(
    article: Article, config: StoryConfig | None = None, now: float | None = None
) -> StoryFeatures | Failure:
    """Turn an enriched article into clustering features; a Failure only if it has no time.

    The lead is the top of the text; when it only repeats the title (a headline-only item)
    the article has no lead part, so the title is not counted twice. `now` (a live
    consumer's clock) caps the time, so one page dated years ahead cannot move the stream's
    watermark and expire every live story.
    """
    config = config or StoryConfig()
    timed = timestamp(article)
    if timed is None:
        return Failure("no_time", STAGE, "neither date nor fetched_at is an ISO 8601 time")
    if now is not None and timed[0] > now:
        timed = (now, 0.0)
    language = article.language or ""
    title_text = (article.title or "")[: config.max_title_chars]
    title = _counts(_terms(title_text, language, len(title_text), config))
    lead_text = (article.text or "")[: config.max_lead_chars]
    lead = _counts(_terms(lead_text, language, config.lead_words, config))
    if lead.keys() <= title.keys():
        lead = {}
    entities: dict[str, float] = {}
    for entity in (article.entities or [])[: config.max_entities]:
        key = entity_key(entity.text or "", entity.label or "", config.max_entity_chars)
        if key:
            count = max(1, min(int(entity.count or 1), 1000))
            entities[key] = entities.get(key, 0.0) + 1.0 + math.log(count)
    parts = {"title": title, "lead": lead, "entities": entities}
    return StoryFeatures(
        article_id=(article.id or "")[: config.max_id_chars],
        time=timed[0],
        slack=timed[1],
        parts={p: _normalised(v, config.centroid_keys) for p, v in parts.items() if v},
    )


# --- online statistics -----------------------------------------------------------------------


class DocumentFrequencies:
    """Document frequency per key, counted in buckets of days so old days leave the horizon.

    Stored as key -> {str(bucket): count} in any MutableMapping; counts are commutative, so
    the same articles give the same numbers whatever order partitions deliver them in.
    """

    def __init__(
        self, table: MutableMapping[str, dict[str, int]], horizon_days: int, bucket_days: int = 1
    ) -> None:
        self.table = table
        self.bucket_days = max(1, bucket_days)
        self.horizon = max(1, horizon_days // self.bucket_days)  # in buckets

    def bucket(self, day: int) -> int:
        return day // self.bucket_days

    def add(self, keys: Iterable[str], day: int) -> None:
        b = str(self.bucket(day))
        for key in (DOCS_KEY, *keys):
            buckets = dict(self.table.get(key) or {})
            buckets[b] = buckets.get(b, 0) + 1
            self.table[key] = buckets

    def _live(self, day: int) -> frozenset[str]:
        """The bucket names inside the horizon ending at `day` (later buckets not counted)."""
        newest = self.bucket(day)
        return frozenset(str(b) for b in range(newest - self.horizon + 1, newest + 1))

    def count(self, key: str, day: int, live: frozenset[str] | None = None) -> int:
        """Documents holding `key` in the horizon ending at `day`."""
        buckets = self.table.get(key)
        if not buckets:
            return 0
        live = self._live(day) if live is None else live
        return sum(n for b, n in buckets.items() if b in live)

    def idf_function(self, day: int) -> Callable[[str], float]:
        """A memoised smoothed IDF as of `day`: ln((N+1)/(df+1)) + 1, never below 1."""
        live = self._live(day)
        n_docs = self.count(DOCS_KEY, day, live)
        cache: dict[str, float] = {}

        def idf(key: str) -> float:
            value = cache.get(key)
            if value is None:
                value = math.log((n_docs + 1) / (self.count(key, day, live) + 1)) + 1.0
                cache[key] = value
            return value

        return idf

    def sweep(self, day: int) -> int:
        """Forget buckets that left the horizon; returns how many keys were dropped."""
        oldest = self.bucket(day) - self.horizon
        dropped = 0
        for key in list(self.table.keys()):
            buckets = self.table[key]
            kept = {b: n for b, n in buckets.items() if int(b) > oldest}
            if not kept:
                del self.table[key]
                dropped += 1
            elif len(kept) != len(buckets):
                self.table[key] = kept
        return dropped


# --- the decision ----------------------------------------------------------------------------


def _cosine(a: dict[str, float], b: dict[str, float], idf: Callable[[str], float]) -> float:
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(w * large[k] * idf(k) ** 2 for k, w in small.items() if k in large)
    if dot <= 0.0:
        return 0.0
    norm_a = math.sqrt(sum((w * idf(k)) ** 2 for k, w in a.items()))
    norm_b = math.sqrt(sum((w * idf(k)) ** 2 for k, w in b.items()))
    return dot / (norm_a * norm_b)


def score(
    article: StoryFeatures,
    story: Story,
    idf: Callable[[str], float],
    config: StoryConfig,
) -> float:
    """Similarity of an article to a story's centroid, 0..1; 0 outside the window.

    The weighted mean of the per-part cosines over the parts both sides have.
    """
    gap = max(0.0, story.gap(article.time) - article.slack)
    if gap > config.window_seconds:
        return 0.0
    headline = "lead" not in article.parts
    total = weights = 0.0
    for part, prefix in PARTS.items():
        a, b = article.parts.get(part), story.parts.get(part)
        if not a or not b:
            continue
        w = config.weight(part, headline)
        total += w * _cosine(a, b, lambda k, p=prefix: idf(p + k))
        weights += w
    if not weights:
        return 0.0
    return total / weights * math.exp(-gap / (config.decay_hours * 3600.0))


def _top(vector: dict[str, float], idf: Callable[[str], float], k: int) -> list[str]:
    return heapq.nlargest(k, vector, key=lambda key: (vector[key] * idf("e:" + key), key))


def on_subject(
    article: StoryFeatures, story: Story, idf: Callable[[str], float], k: int
) -> bool:
    """Whether the article's main entity is among the story's top k, both ranked by weight x
    idf: the most mentioned *distinctive* name. (Ranked by mentions alone, "Trump" would be
    every 2017 article's subject; measured on BASIL, that lets the wrong merges back in.)

    Related events a few days apart share many names (the Indiana and Arkansas religious
    freedom laws, both naming Pence) but not their protagonist; without entities on either
    side there is nothing to check and the answer is yes.
    """
    mine, theirs = article.parts.get("entities"), story.parts.get("entities")
    if not mine or not theirs:
        return True
    return _top(mine, idf, 1)[0] in _top(theirs, idf, k)


def assign(
    article: StoryFeatures,
    candidates: Iterable[Story],
    idf: Callable[[str], float],
    config: StoryConfig,
) -> tuple[Story | None, float]:
    """Pick the best-scoring candidate at or above the threshold, or None for a new story.

    Ties go to the older story, then the smaller id, so the same input gives the same answer.
    """
    best: Story | None = None
    best_key: tuple[float, float, str] | None = None
    best_score = 0.0
    headline = "lead" not in article.parts
    for story in candidates:
        s = score(article, story, idf, config)
        if headline:
            passed = s >= config.headline_threshold
        elif (s >= config.threshold) == (s >= config.off_subject_threshold):
            passed = s >= config.threshold  # clears both or neither: the subject cannot matter
        else:  # ranking entities costs more than scoring, and most candidates score ~0
            on = on_subject(article, story, idf, config.subject_entities)
            passed = s >= (config.threshold if on else config.off_subject_threshold)
        if not passed:
            continue
        key = (-s, story.first_time, story.id)
        if best_key is None or key < best_key:
            best, best_key, best_score = story, key, s
    return best, best_score


# --- the index -------------------------------------------------------------------------------


class StoryIndex:
    """Live stories, their inverted index and the online statistics, over pluggable mappings.

    `stories`: story id -> Story.to_dict(); `postings`: "e:"/"t:" key -> story ids (newest
    last); `df`: see DocumentFrequencies. Plain dicts by default.
    """

    def __init__(
        self,
        config: StoryConfig | None = None,
        stories: MutableMapping[str, dict] | None = None,
        postings: MutableMapping[str, list[str]] | None = None,
        df: MutableMapping[str, dict[str, int]] | None = None,
    ) -> None:
        self.config = config or StoryConfig()
        self.stories = {} if stories is None else stories
        self.postings = {} if postings is None else postings
        self.df = DocumentFrequencies(
            {} if df is None else df, self.config.df_days, self.config.df_bucket_days
        )
        self.watermark = -math.inf
        self._swept_hour: int | None = None
        self._swept_bucket: int | None = None

    def add(self, article: StoryFeatures) -> Assignment:
        """Place one article: join the best live story or open a new one; update all state."""
        day = int(article.time // DAY)
        self.df.add(article.keys(), day)
        if article.time > self.watermark:
            self.watermark = article.time
            self._maybe_expire()
        idf = self.df.idf_function(day)
        story, best = assign(article, self.candidates(article, idf), idf, self.config)
        if story is None:
            story = Story(
                id="s-" + article.article_id,
                first_time=article.time,
                last_time=article.time,
                parts={p: dict(v) for p, v in article.parts.items()},
            )
            self._index(story, idf)
            self.stories[story.id] = story.to_dict()
            return Assignment(story.id, True, 0.0, 1)
        story.size += 1
        story.first_time = min(story.first_time, article.time)
        story.last_time = max(story.last_time, article.time)
        if story.centroid_size < self.config.centroid_articles:
            story.centroid_size += 1
            for part, vector in article.parts.items():
                story.parts[part] = _merged(
                    story.parts.get(part, {}), vector, self.config.centroid_keys
                )
            self._index(story, idf)
        self.stories[story.id] = story.to_dict()
        return Assignment(story.id, False, best, story.size)

    def candidates(self, article: StoryFeatures, idf: Callable[[str], float]) -> list[Story]:
        """Live stories posted under the article's heaviest keys, each once, in a fixed order."""
        keys = article.keys()
        ranked = heapq.nlargest(
            self.config.lookup_keys, keys, key=lambda k: (keys[k] * idf(k), k)
        )
        seen: dict[str, Story] = {}
        for key in ranked:
            for story_id in self.postings.get(key, ()):
                if story_id in seen:
                    continue
                data = self.stories.get(story_id)
                if data is not None:
                    seen[story_id] = Story.from_dict(data)
        return list(seen.values())

    def _index(self, story: Story, idf: Callable[[str], float]) -> None:
        """Post the story under all its entities and its top words (by weight x idf)."""
        words: dict[str, float] = {}
        for part in ("title", "lead"):
            for k, w in story.parts.get(part, {}).items():
                words["t:" + k] = words.get("t:" + k, 0.0) + w / story.centroid_size
        top = heapq.nlargest(
            self.config.index_terms, words, key=lambda k: (words[k] * idf(k), k)
        )
        keys = ["e:" + k for k in sorted(story.parts.get("entities", {}))] + sorted(top)
        for key in keys:
            if key in story.keys:
                continue
            posting = [s for s in self.postings.get(key, ()) if s != story.id]
            posting.append(story.id)
            self.postings[key] = posting[-self.config.postings_per_key :]
        story.keys = sorted(set(story.keys) | set(keys))

    def _maybe_expire(self) -> None:
        """At most once per hour of stream time, drop expired stories and their postings; at
        most once per df bucket, document frequencies that left the horizon. Each costs one
        pass over that part of the state (the df sweep the larger: every word seen)."""
        hour = int(self.watermark // 3600)
        if self._swept_hour == hour:
            return
        self._swept_hour = hour
        self.expire(self.watermark)
        bucket = self.df.bucket(int(self.watermark // DAY))
        if self._swept_bucket != bucket:
            self._swept_bucket = bucket
            self.df.sweep(int(self.watermark // DAY))

    def expire(self, now: float) -> int:
        """Drop stories whose latest article is more than the window before `now`."""
        cutoff = now - self.config.window_seconds
        dropped = 0
        for story_id, data in list(self.stories.items()):
            if data["last_time"] >= cutoff:
                continue
            del self.stories[story_id]
            dropped += 1
            for key in data["keys"]:
                posting = [s for s in self.postings.get(key, ()) if s != story_id]
                if posting:
                    self.postings[key] = posting
                else:
                    self.postings.pop(key, None)
        return dropped


def _merged(a: dict[str, float], b: dict[str, float], limit: int) -> dict[str, float]:
    out = dict(a)
    for k, w in b.items():
        out[k] = out.get(k, 0.0) + w
    if len(out) > limit:
        out = dict(heapq.nlargest(limit, out.items(), key=lambda kv: (kv[1], kv[0])))
    return out


def cluster(
    articles: Iterable[Article], config: StoryConfig | None = None
) -> Iterator[tuple[Article, Assignment | Failure]]:
    """Assign stories in input order (callers sort by date); sets `article.story_id`."""
    index = StoryIndex(config)
    for article in articles:
        feats = features(article, index.config)
        if isinstance(feats, Failure):
            yield article, feats
            continue
        outcome = index.add(feats)
        article.story_id = outcome.story_id
        yield article, outcome
