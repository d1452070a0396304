"""The `entities` stage: the seed articles' people, places and organisations, English only,
normalised mentions, majority labels and alias merging, what NER reads (windows around names,
or a bounded head), propagation of later mentions, agreement with full-text NER, lazy
loading. The seeds also check the second pass: "Palmyra" and "Aleppo" only become places
when more of their occurrences are read than the windows' first three."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from agents.clean import clean
from agents.entities import (
    NEWS_LABELS,
    EntitiesConfig,
    EntityTagger,
    aggregate,
    bounded,
    name_windows,
    ner_spans,
    normalise,
    propagated,
)
from agents.extract import extract
from agents.language import detect_language
from agents.records import Entity, Failure, RawPage

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"

PLACE = {"GPE", "LOC"}
GROUP_OR_PLACE = {"NORP", "GPE"}
ORGANISATION = {"ORG", "NORP"}
PERSON = {"PERSON"}

# What the seeds name (acceptance criterion), each with the labels a correct tagger may give.
EXPECTED = [
    (("Palmyra",), PLACE),
    (("Syria",), PLACE),
    (("Aleppo",), PLACE),
    (("Raqqa",), PLACE),
    (("Mosul",), PLACE),
    (("Russia", "Russian"), GROUP_OR_PLACE),
    (("ISIS", "Islamic State"), ORGANISATION),
    (("Bashar Assad",), PERSON),
    (("Ash Carter",), PERSON),
    (("Syrian Observatory for Human Rights",), ORGANISATION),
]


@pytest.fixture(scope="module")
def tagger() -> EntityTagger:
    tagger = EntityTagger(EntitiesConfig())
    tagger.load()
    return tagger


def tag(tagger: EntityTagger, text: str, language: str = "en") -> tuple[list[Entity], str | None]:
    return tagger.tag_many([(text, language)])[0]


@pytest.mark.parametrize("seed", sorted(p.name for p in SEEDS.glob("*.txt")))
def test_seed_articles_name_their_people_places_and_organisations(
    tagger: EntityTagger, seed: str
) -> None:
    text = (SEEDS / seed).read_text(encoding="utf-8")
    entities, note = tag(tagger, text)
    assert note is None
    found = {(e.text, e.label) for e in entities}
    checked = 0
    for names, labels in EXPECTED:
        named = [n for n in names if n in text]
        if not named:
            continue
        checked += 1
        assert any((n, label) in found for n in named for label in labels), (names, labels)
    assert checked >= 8  # both seeds name nearly all of them


def test_seed_output_is_clean(tagger: EntityTagger) -> None:
    entities, _ = tag(tagger, (SEEDS / "004_75160a5f16c4fa04.txt").read_text(encoding="utf-8"))
    assert entities == sorted(entities, key=lambda e: (-e.count, e.text))
    assert all(e.label in NEWS_LABELS for e in entities)
    assert all(e.count >= 1 for e in entities)
    texts = [e.text for e in entities]
    assert len(texts) == len({t.casefold() for t in texts})
    assert not any(t.lower().startswith("the ") or t.endswith(("'s", "’s")) for t in texts)
    assert "Islamic State" in texts  # "The Islamic State's new push ..."


def test_other_languages_get_a_note_and_no_model() -> None:
    tagger = EntityTagger(EntitiesConfig())
    german = "Bundeskanzler Olaf Scholz traf am Montag in Berlin den französischen Präsidenten."
    results = tagger.tag_many([(german, "de"), ("", "en"), ("  \n ", "en"), (german, "und")])
    assert results == [
        ([], "language_not_supported: de"),
        ([], "no_text"),
        ([], "no_text"),
        ([], "language_not_supported: und"),
    ]
    assert not tagger.loaded  # nothing English came, so spaCy was never loaded


def test_results_follow_input_order(tagger: EntityTagger) -> None:
    english = "Angela Merkel met Emmanuel Macron in Paris on Monday."
    results = tagger.tag_many([("Ein Text.", "de"), (english, "en"), ("", "en")])
    assert results[0] == ([], "language_not_supported: de")
    assert results[2] == ([], "no_text")
    entities, note = results[1]
    assert note is None
    assert {(e.text, e.label) for e in entities} >= {("Paris", "GPE")}
    assert results[1] == tag(tagger, english)  # batched or alone, the same answer


def test_only_ner_is_loaded(tagger: EntityTagger) -> None:
    assert tagger.loaded
    assert tagger._nlp.pipe_names == ["ner"]
    tagger.load()  # idempotent
    assert tagger._nlp.pipe_names == ["ner"]


def test_load_refuses_a_ner_that_listens_to_an_excluded_component(tmp_path: Path) -> None:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec")
    listener = {"@architectures": "spacy.Tok2VecListener.v1", "width": 96, "upstream": "tok2vec"}
    model = {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": "ner",
        "hidden_width": 16,
        "maxout_pieces": 2,
        "use_upper": True,
        "tok2vec": listener,
    }
    nlp.add_pipe("ner", config={"model": model}).add_label("GPE")
    nlp.initialize()
    nlp.to_disk(tmp_path)
    cfg = EntitiesConfig(model=str(tmp_path), place_gazetteer=False)
    with pytest.raises(ValueError, match="listens to 'tok2vec'"):
        EntityTagger(cfg).load()
    kept = EntityTagger(EntitiesConfig(model=str(tmp_path), exclude=(), place_gazetteer=False))
    kept.load()
    assert kept._nlp.pipe_names == ["tok2vec", "ner"]


def test_numeric_labels_are_dropped(tagger: EntityTagger) -> None:
    text = (
        "On March 3, 2021, Microsoft paid $2 billion for 40 percent of a Seattle startup, "
        "its third deal in two weeks, at 9 a.m."
    )
    entities, _ = tag(tagger, text)
    labels = {e.label for e in entities}
    assert labels <= set(NEWS_LABELS)
    assert ("Microsoft", "ORG") in {(e.text, e.label) for e in entities}


def test_alias_merged_into_full_name(tagger: EntityTagger) -> None:
    text = (
        "President Bashar Assad spoke in Damascus on Monday. Critics of Assad said the "
        "speech changed nothing, and Assad did not take questions."
    )
    entities, _ = tag(tagger, text)
    people = [e for e in entities if e.label == "PERSON"]
    assert [(e.text, e.count) for e in people] == [("Bashar Assad", 3)]


def test_head_mode_reads_a_bounded_head(tagger: EntityTagger) -> None:
    head = "Officials in Paris said the talks would resume. " * 10
    tail = "\n\nIn Tokyo, the reaction was muted."
    cfg = EntitiesConfig(select="head", max_chars=len(head) + 5, propagate=False)
    entities, _ = tag(tagger.sharing(cfg), head + tail)
    assert {e.text for e in entities} == {"Paris"}
    assert entities[0].count == 10
    full, _ = tag(tagger, head + tail)
    assert {"Paris", "Tokyo"} <= {e.text for e in full}


# Filler with no capitalised word: the windows skip it, a head of 5,000 characters ends in it.
FILLER = "the talks went on for hours and nothing much was said about the plan. " * 80


def test_a_name_first_named_past_the_old_bound_is_found(tagger: EntityTagger) -> None:
    text = (
        "Officials in Paris said the talks would resume.\n"
        + FILLER
        + ("\nLater, Angela Merkel flew to Tokyo to meet the Japanese prime minister.")
    )
    assert len(text) > 5_000
    head = tagger.sharing(EntitiesConfig(select="head", max_chars=5_000, propagate=False))
    assert "Tokyo" not in {e.text for e in tag(head, text)[0]}  # what the old bound lost
    found = {(e.text, e.label) for e in tag(tagger, text)[0]}
    assert {("Paris", "GPE"), ("Angela Merkel", "PERSON"), ("Tokyo", "GPE")} <= found
    spans = ner_spans(text, tagger.cfg)
    assert sum(b - a for a, b in spans) < 1_000  # the filler was not read


def test_later_mentions_are_counted_by_propagation(tagger: EntityTagger) -> None:
    text = " ".join(f"Paris had a quiet day number {i}. " + FILLER[:200] for i in range(12))
    read = "\n".join(text[a:b] for a, b in ner_spans(text, tagger.cfg))
    assert read.count("Paris") < 12  # NER did not read them all ...
    entities, _ = tag(tagger, text)
    assert ("Paris", "GPE", 12) in {(e.text, e.label, e.count) for e in entities}  # ... yet
    unpropagated = tagger.sharing(EntitiesConfig(propagate=False))
    (paris,) = [e for e in tag(unpropagated, text)[0] if e.text == "Paris"]
    assert paris.count == EntitiesConfig().name_windows  # NER read only the first three


def test_propagation_matches_whole_words_longest_first() -> None:
    text = "Bashar Assad spoke. Assad left. Bashar Assad returned. Assadi and Parisian were not."
    found = [("Bashar Assad", "PERSON", ""), ("Assad", "PERSON", "")]
    read = [(0, 19)]  # "Bashar Assad spoke."
    out = propagated(text, read, found)
    assert [m[0] for m in out] == ["Assad", "Bashar Assad"]
    assert all(label == "PERSON" for _, label, _ in out)
    assert propagated(text, read, [("bin", "PERSON", "")]) == []  # no capital: not matched


def test_name_windows_skip_text_without_names() -> None:
    rain = "It rained all day, and then it rained. "
    text = rain * 20 + "Barack Obama spoke in Chicago. " + rain * 20
    (window,) = name_windows(text, per_name=3, context=2)
    assert text[window[0] : window[1]] == "it rained. Barack Obama spoke in Chicago. It rained"
    # A sentence's first word is a name only if the text never writes it in lower case.
    assert name_windows("The day was long. Then the rain came, and then it stopped.", 3, 2) == []
    assert len(name_windows("Russia said no, and it rained. It did.", 3, 0)) == 1


def test_name_windows_read_each_name_a_few_times() -> None:
    text = "Obama spoke in Chicago. " * 10
    windows = name_windows(text, per_name=2, context=0)
    read = "".join(text[a:b] for a, b in windows)
    assert read.count("Obama") == 2 and read.count("Chicago") == 2


def _english_corpus_texts() -> list[str]:
    texts = []
    for line in (CORPUS / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        page = RawPage(entry["url"], gzip.decompress((CORPUS / entry["file"]).read_bytes()))
        extracted = extract(page)
        if isinstance(extracted, Failure):
            continue
        cleaned = clean(extracted.text)
        if not isinstance(cleaned, Failure) and detect_language(cleaned.text).code == "en":
            texts.append(cleaned.text)
    return texts


@pytest.mark.slow
def test_entities_agree_with_full_text_ner_on_the_english_corpus_pages(
    tagger: EntityTagger,
) -> None:
    """Issue 10: >= 0.95 F1 against NER of the whole text, on real pages (34 English corpus
    pages, 11 of them over 5,000 characters; reading the first 5,000 gave 0.87)."""
    texts = _english_corpus_texts()
    assert len(texts) >= 30
    whole = tagger.sharing(EntitiesConfig(select="head", max_chars=10**9, propagate=False))
    want = [
        {(e.text, e.label) for e in ents} for ents, _ in whole.tag_many([(t, "en") for t in texts])
    ]
    got = [
        {(e.text, e.label) for e in ents} for ents, _ in tagger.tag_many([(t, "en") for t in texts])
    ]
    tp = sum(len(g & w) for g, w in zip(got, want, strict=True))
    fp = sum(len(g - w) for g, w in zip(got, want, strict=True))
    fn = sum(len(w - g) for g, w in zip(got, want, strict=True))
    assert 2 * tp / (2 * tp + fp + fn) >= 0.95


# --- pure parts: normalisation, bounding, aggregation ----------------------------------------


@pytest.mark.parametrize(
    ("mention", "expected"),
    [
        ("the Islamic State's", "Islamic State"),
        ("The Islamic State’s", "Islamic State"),
        ("THE  Pentagon\n", "Pentagon"),
        ("“Palmyra”,", "Palmyra"),
        ("(Syrian Observatory for Human Rights)", "Syrian Observatory for Human Rights"),
        ("U.S.", "U.S."),
        ("Thomas J. Bliley Jr.", "Thomas J. Bliley Jr."),
        ("’s Monitor", "Monitor"),
        ("Reuters'", "Reuters"),
        ("Theresa May", "Theresa May"),
        ("al-Bab", "al-Bab"),
        ("---", ""),
    ],
)
def test_normalise(mention: str, expected: str) -> None:
    assert normalise(mention) == expected


def test_bounded_cuts_at_paragraph_then_sentence_then_space() -> None:
    paragraphs = "First paragraph here.\n\nSecond one is longer than that.\n\nThird."
    assert bounded(paragraphs, 1_000) == paragraphs
    assert bounded(paragraphs, 58) == "First paragraph here.\n\nSecond one is longer than that."
    sentences = "One sentence here. Another sentence there. And a third one."
    assert bounded(sentences, 50) == "One sentence here. Another sentence there."
    words = "alpha beta gamma delta epsilon zeta eta theta"
    assert bounded(words, 20) == "alpha beta gamma"
    assert bounded("x" * 100, 10) == "x" * 10
    for cap in (1, 7, 33, 64):
        assert len(bounded(paragraphs, cap)) <= cap


def test_aggregate_counts_merges_and_sorts() -> None:
    mentions = [
        ("Bashar Assad", "PERSON", "President"),
        ("Assad", "PERSON", "said"),
        ("Assad's", "PERSON", "of"),
        ("Syria", "GPE", "in"),
        ("Syria", "GPE", "in"),
        ("the Syrian Observatory for Human Rights", "ORG", "said"),
        ("SOHR", "ORG", "the"),
        ("United States", "GPE", "the"),
        ("U.S.", "GPE", "the"),
        ("Sunday", "DATE", "on"),
        ("two", "CARDINAL", "killed"),
    ]
    assert aggregate(mentions) == [
        Entity("Bashar Assad", "PERSON", 3),
        Entity("Syria", "GPE", 2),
        Entity("Syrian Observatory for Human Rights", "ORG", 2),
        Entity("United States", "GPE", 2),
    ]


def test_aggregate_leaves_ambiguous_short_names_alone() -> None:
    mentions = [
        ("George W. Bush", "PERSON", ""),
        ("Jeb Bush", "PERSON", ""),
        ("Bush", "PERSON", "Mr."),
    ]
    assert {e.text for e in aggregate(mentions)} == {"George W. Bush", "Jeb Bush", "Bush"}


def test_aggregate_majority_label() -> None:
    mentions = [("Raqqa", "GPE", "in")] * 3 + [("Raqqa", "ORG", "in")]
    assert aggregate(mentions) == [Entity("Raqqa", "GPE", 4)]


def test_unintroduced_one_word_person_read_as_place_becomes_a_place() -> None:
    palmyra = [("Palmyra", "PERSON", "of")] * 5 + [("Palmyra", "GPE", "in"), ("Palmyra", "LOC", "")]
    assert aggregate(palmyra) == [Entity("Palmyra", "GPE", 7)]
    # A title introduces a person: "Mr. Trump" next to one stray GPE stays PERSON.
    trump = (
        [("Trump", "PERSON", "Mr.")] + [("Trump", "PERSON", "said")] * 4 + [("Trump", "GPE", "")]
    )
    assert aggregate(trump) == [Entity("Trump", "PERSON", 6)]
    # So does a full name elsewhere in the article.
    carter = [
        ("Ash Carter", "PERSON", "Secretary"),
        ("Carter", "PERSON", ""),
        ("Carter", "GPE", ""),
    ]
    assert aggregate(carter) == [Entity("Ash Carter", "PERSON", 3)]


def test_gazetteer_fixes_place_names_only_where_the_model_wavers() -> None:
    places = frozenset({"Aleppo", "Roman"})
    aleppo = [("Aleppo", "NORP", "")] * 3 + [("Aleppo", "PERSON", ""), ("Aleppo", "LANGUAGE", "")]
    assert aggregate(aleppo, places=places) == [Entity("Aleppo", "GPE", 5)]
    assert aggregate(aleppo) == [Entity("Aleppo", "NORP", 5)]  # without the gazetteer
    roman = [("Roman", "NORP", "")] * 2
    assert aggregate(roman, places=places) == [Entity("Roman", "NORP", 2)]


def test_place_names_come_from_geonames(tagger: EntityTagger) -> None:
    places = tagger._places
    assert {"Syria", "Aleppo", "Mosul", "Damascus", "Texas"} <= places
    assert "Palmyra" not in places  # only primary names: GeoNames calls it Tadmur


def test_place_is_not_merged_into_an_organisation_named_after_it() -> None:
    mentions = [("Syria", "GPE", "")] * 2 + [("Syrian Observatory for Human Rights", "ORG", "")]
    result = aggregate(mentions)
    assert Entity("Syria", "GPE", 2) in result
    assert Entity("Syrian Observatory for Human Rights", "ORG", 1) in result


def test_config_validates() -> None:
    for bad in ({"max_chars": 0}, {"batch_size": 0}, {"name_windows": 0}, {"scan_chars": 0},
                {"context_words": -1}, {"select": "middle"}):  # fmt: skip
        with pytest.raises(ValueError):
            EntitiesConfig(**bad)


def test_nationality_adjective_joins_the_organisation_it_names(tagger: EntityTagger) -> None:
    # en_core_web_sm tags this "Islamic" NORP + "State" ORG (seed 004's second paragraph)
    text = (
        "The Islamic State's new push came hours after government troops and Russian air raids"
        " pushed the group out the city.\nIslamic State militants seized the ancient Syrian city"
        " of Palmyra on Sunday."
    )
    entities, _ = tag(tagger, text)
    assert ("Islamic State", "ORG") in {(e.text, e.label) for e in entities}
