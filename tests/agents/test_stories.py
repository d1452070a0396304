"""Story clustering core: features, online statistics, the decision, the index and its state.

Hand-made articles for the rules; the two seeds and the 110 corpus pages through the real
chain for "two outlets, one story" and "unrelated pages stay out".
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.records import Article, Entity, Failure, RawPage
from agents.stories import (
    DAY,
    DocumentFrequencies,
    Story,
    StoryConfig,
    StoryFeatures,
    StoryIndex,
    _fold,
    _words,
    assign,
    cluster,
    entity_key,
    features,
    on_subject,
    parse_time,
    score,
    timestamp,
)

T0 = "2016-12-11T12:00:00+00:00"


def art(
    id: str,
    title: str,
    text: str,
    entities: list[tuple[str, str, int]] = (),
    date: str | None = None,
    fetched_at: str | None = T0,
    language: str = "en",
) -> Article:
    return Article(
        id=id,
        url=f"https://example.org/{id}",
        title=title,
        text=text,
        date=date,
        fetched_at=fetched_at,
        language=language,
        entities=[Entity(t, label, n) for t, label, n in entities],
    )


PALMYRA_A = art(
    "palmyra-a",
    "ISIS militants retake ancient city of Palmyra from Syrian forces",
    "ISIS militants recaptured the ancient city of Palmyra from Syrian troops on Sunday, "
    "scoring a major advance after a year of setbacks in Syria and Iraq. Government troops "
    "and Russian air raids had pushed the group out of the city hours earlier.",
    [("Palmyra", "GPE", 6), ("ISIS", "ORG", 4), ("Syria", "GPE", 3), ("Russian", "NORP", 2),
     ("Bashar Assad", "PERSON", 1)],
)
PALMYRA_B = art(
    "palmyra-b",
    "Syrian activists say IS has recaptured Palmyra",
    "Islamic State militants seized the ancient Syrian city of Palmyra on Sunday from "
    "government troops despite a wave of Russian airstrikes, activists said. The militants "
    "regrouped and attacked the city from multiple fronts, forcing the troops to retreat.",
    [("Palmyra", "GPE", 5), ("Islamic State", "ORG", 3), ("Syria", "GPE", 2),
     ("Russian", "NORP", 3), ("Assad", "PERSON", 1)],
)
BUDGET = art(
    "budget",
    "Parliament passes the annual budget after a long night session",
    "Lawmakers approved the spending plan by a narrow margin early on Sunday, ending weeks "
    "of talks over school funding, pensions and a new tax on sugary drinks.",
    [("Parliament", "ORG", 2), ("Treasury", "ORG", 1)],
)


# --- features --------------------------------------------------------------------------------


def test_entity_keys_fold_names_people_by_surname_and_skip_numbers():
    assert entity_key("Donald Trump", "PERSON") == entity_key("Trump", "PERSON") == "trump"
    assert entity_key("the Islamic State's", "ORG") == "islamic state"
    assert entity_key("I.R.S.", "ORG") == entity_key("IRS", "ORG") == "irs"
    assert entity_key("Pokémon", "PRODUCT") == "pokemon"
    assert entity_key("Sunday", "DATE") is None
    assert entity_key("40,000", "CARDINAL") is None
    assert entity_key("—", "ORG") is None


_PIECES = ["U.S.", "I.R.S.", "Pokémon", "ﬁnance", "Straße", "naïve", "war", "the", "Dr.", "2016",
           "l'été", "ÉCOLE", "a.b.c.d.", "北京", " ", "  ", "\n", "-", ".", "A.",
           "a.b.c.d.e.f.g.h.i.", "Donaudampfschifffahrtsgesellschaft", "x" * 40]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=400), st.integers(0, 80))
def test_leading_words_fold_only_what_they_need_and_match_folding_everything(pieces, limit):
    text = " ".join(pieces)
    assert _words(text, limit) == re.findall(r"\w+", _fold(text))[:limit]


def test_features_split_title_lead_and_entities_without_stop_words():
    f = features(PALMYRA_A)
    assert isinstance(f, StoryFeatures)
    assert set(f.parts) == {"title", "lead", "entities"}
    for vector in f.parts.values():
        assert sum(vector.values()) == pytest.approx(1.0)
    assert "palmyra" in f.parts["title"] and "the" not in f.parts["lead"]
    assert "assad" in f.parts["entities"]
    assert f.time == parse_time(T0) and f.slack == 0.0


def test_headline_only_item_has_no_lead():
    item = art("h1", "Mt. Gox files for US bankruptcy", "Mt. Gox files for US bankruptcy")
    f = features(item)
    assert "lead" not in f.parts and "title" in f.parts


def test_features_cap_every_input():
    config = StoryConfig(max_title_chars=20, max_lead_chars=50, max_entities=2, centroid_keys=5)
    long = art(
        "x" * 1000,
        "word " * 10_000,
        " ".join(f"w{i}xyz" for i in range(50_000)),
        [(f"Name{i}", "ORG", 1) for i in range(1000)],
    )
    f = features(long, config)
    assert len(f.article_id) == config.max_id_chars
    assert len(f.parts["entities"]) == 2
    assert all(len(v) <= 5 for v in f.parts.values())


def test_article_without_any_time_is_a_failure_value():
    result = features(art("t", "A title", "Some text here", fetched_at=None, date="not a date"))
    assert isinstance(result, Failure) and result.reason == "no_time"


def test_time_day_only_dates_carry_slack_unless_fetch_pins_them():
    day_only = art("d", "t", "x", date="2016-12-11", fetched_at=None)
    assert timestamp(day_only) == (parse_time("2016-12-11T00:00:00+00:00"), DAY)
    pinned = dataclasses.replace(day_only, fetched_at="2016-12-11T15:30:00Z")
    assert timestamp(pinned) == (parse_time("2016-12-11T15:30:00+00:00"), 0.0)
    fetched_later = dataclasses.replace(day_only, fetched_at="2016-12-20T08:00:00Z")
    assert timestamp(fetched_later) == (parse_time("2016-12-11T00:00:00+00:00"), DAY)
    # A page cannot be published after it was fetched: the fetch time wins.
    future = dataclasses.replace(pinned, date="2016-12-25")
    assert timestamp(future) == (parse_time("2016-12-11T15:30:00+00:00"), 0.0)


def test_now_caps_a_far_future_time():
    item = art("f", "t", "x", date="2099-01-01T00:00:00Z", fetched_at=None)
    assert features(item, now=parse_time(T0)).time == parse_time(T0)


# --- online statistics -----------------------------------------------------------------------


def test_document_frequencies_count_within_the_horizon_and_sweep_old_buckets():
    df = DocumentFrequencies({}, horizon_days=10, bucket_days=1)
    df.add(["t:a", "t:b"], day=100)
    df.add(["t:a"], day=105)
    assert df.count("t:a", 105) == 2 and df.count("t:b", 105) == 1
    assert df.count("t:a", 104) == 1  # no peeking at later days
    assert df.count("t:a", 112) == 1  # day 100 left the horizon
    idf = df.idf_function(105)
    assert idf("t:b") > idf("t:a") >= 1.0
    assert df.sweep(112) == 1  # t:b only had day 100
    assert "t:b" not in df.table and df.table["t:a"] == {"105": 1}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sets(st.sampled_from("abcde"), max_size=3))))
def test_document_frequencies_do_not_depend_on_arrival_order(docs):
    forward, backward = DocumentFrequencies({}, 14, 7), DocumentFrequencies({}, 14, 7)
    for day, keys in docs:
        forward.add(sorted(keys), day)
    for day, keys in reversed(docs):
        backward.add(sorted(keys), day)
    assert forward.table == backward.table


# --- the decision and the index --------------------------------------------------------------


def ids(articles: list[Article], config: StoryConfig | None = None) -> list[str]:
    out = []
    for _, outcome in cluster([dataclasses.replace(a) for a in articles], config):
        assert not isinstance(outcome, Failure)
        out.append(outcome.story_id)
    return out


def test_two_reports_of_one_event_share_a_story_an_unrelated_one_does_not():
    a, b, c = ids([PALMYRA_A, PALMYRA_B, BUDGET])
    assert a == b == "s-palmyra-a"
    assert c == "s-budget"


def test_cluster_sets_story_id_on_the_article():
    item = dataclasses.replace(PALMYRA_A)
    [(same, outcome)] = list(cluster([item]))
    assert same is item and item.story_id == outcome.story_id == "s-palmyra-a" and outcome.new


def test_same_event_beyond_the_window_starts_a_new_story():
    later = dataclasses.replace(PALMYRA_B, fetched_at="2016-12-20T12:00:00+00:00")
    a, b = ids([PALMYRA_A, later], StoryConfig(window_hours=96))
    assert a != b and b == "s-palmyra-b"


def test_decay_lowers_the_score_with_the_gap():
    config = StoryConfig()
    index = StoryIndex(config)
    index.add(features(PALMYRA_A, config))
    story = Story.from_dict(index.stories["s-palmyra-a"])
    idf = index.df.idf_function(int(parse_time(T0) // DAY))
    now = features(PALMYRA_B, config)
    later = dataclasses.replace(now, time=now.time + 2 * DAY)
    beyond = dataclasses.replace(now, time=now.time + 5 * DAY)
    assert score(now, story, idf, config) > score(later, story, idf, config) > 0.0
    assert score(beyond, story, idf, config) == 0.0  # outside the 96 h window


def test_same_input_order_gives_the_same_ids():
    stream = [PALMYRA_A, BUDGET, PALMYRA_B]
    assert ids(stream) == ids(stream)


def test_assign_breaks_ties_by_older_story_then_id():
    config = StoryConfig()
    f = features(PALMYRA_B, config)
    twin = {p: dict(v) for p, v in f.parts.items()}
    t = f.time
    older = Story("s-z", t - 3600, t, parts=twin)
    newer = Story("s-a", t - 60, t, parts=twin)
    same_age = Story("s-b", t - 3600, t, parts=twin)
    best, score = assign(f, [newer, same_age, older], lambda k: 1.0, config)
    assert best.id == "s-b" and score == pytest.approx(1.0)


def test_nothing_clears_the_threshold_means_new_story():
    config = StoryConfig()
    f = features(BUDGET, config)
    story = Story("s-x", f.time, f.time, parts=features(PALMYRA_A, config).parts)
    assert assign(f, [story], lambda k: 1.0, config) == (None, 0.0)


INDIANA = art(
    "indiana",
    "Indiana governor says legislators may clarify religious freedom law",
    "Indiana Governor Mike Pence said lawmakers could clarify the state's religious freedom "
    "law after businesses and Washington state announced boycotts over discrimination.",
    [("Indiana", "GPE", 6), ("Mike Pence", "PERSON", 4), ("Washington", "GPE", 2)],
)
ARKANSAS = art(
    "arkansas",
    "Arkansas governor seeks changes in religious freedom bill",
    "Asa Hutchinson asked the legislature in Little Rock to recall the bill and amend it to "
    "mirror the federal statute, after Walmart and other employers protested, as they had "
    "against Indiana.",
    [("Asa Hutchinson", "PERSON", 5), ("Arkansas", "GPE", 4), ("Indiana", "GPE", 2),
     ("Mike Pence", "PERSON", 1)],
)


def test_an_article_about_another_protagonist_needs_the_higher_threshold():
    config = StoryConfig()
    index = StoryIndex(config)
    index.add(features(INDIANA, config))
    story = Story.from_dict(index.stories["s-indiana"])
    f = features(ARKANSAS, config)
    idf = index.df.idf_function(int(f.time // DAY))
    s = score(f, story, idf, config)
    assert config.threshold <= s < config.off_subject_threshold
    assert not on_subject(f, story, idf, config.subject_entities)
    assert assign(f, [story], idf, config) == (None, 0.0)
    # The same article, about Pence, is on the story's subject and joins it.
    pence_first = [Entity("Mike Pence", "PERSON", 9), Entity("Arkansas", "GPE", 1)]
    about_pence = dataclasses.replace(ARKANSAS, id="pence", entities=pence_first)
    g = features(about_pence, config)
    assert on_subject(g, story, idf, config.subject_entities)
    assert assign(g, [story], idf, config)[0] is not None


def test_expiry_drops_stories_and_postings_so_state_stays_bounded():
    config = StoryConfig(window_hours=12)  # each day's articles open new stories
    index = StoryIndex(config)
    for day in range(30):
        when = f"2016-12-{day + 1:02d}T12:00:00+00:00"
        for k, base in enumerate((PALMYRA_A, BUDGET)):
            item = dataclasses.replace(base, id=f"{base.id}-{day}-{k}", fetched_at=when)
            index.add(features(item, config))
    live = set(index.stories)
    assert 2 <= len(live) <= 4  # the last day or two, not 60 stories
    posted = {s for posting in index.postings.values() for s in posting}
    assert posted <= live


class JsonTable(MutableMapping):
    """A mapping that stores values as JSON, as a Faust table does: no shared objects,
    string keys only in nested dicts. The index must give the same answers over it."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def __getitem__(self, key: str):
        return json.loads(self.data[key])

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = json.dumps(value)

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_index_over_serialising_tables_matches_dicts():
    stream = [PALMYRA_A, BUDGET, PALMYRA_B]
    config = StoryConfig()
    in_dicts = StoryIndex(config)
    in_tables = StoryIndex(config, stories=JsonTable(), postings=JsonTable(), df=JsonTable())
    for item in stream:
        f = features(item, config)
        assert in_dicts.add(f) == in_tables.add(f)
    assert {k: in_tables.stories[k] for k in in_tables.stories} == json.loads(
        json.dumps(in_dicts.stories)
    )


# --- real pages: the seeds and the corpus -----------------------------------------------------


@pytest.fixture(scope="module")
def seeds_then_corpus(seeds_dir: Path, corpus_dir: Path) -> list[Article]:
    from agents.pipeline import Enricher
    from streams.sources import iter_pages

    pages = [p for p in iter_pages([seeds_dir, corpus_dir]) if isinstance(p, RawPage)]
    enricher = Enricher()
    out: list[Article] = []
    for start in range(0, len(pages), 16):
        batch = enricher.enrich_many(pages[start : start + 16])
        out.extend(o for o in batch if isinstance(o, Article))
    assert len(out) >= 100 and "palmyra" in (out[0].title or "").lower()
    return out


def test_seeds_share_a_story_and_corpus_pages_stay_out(seeds_then_corpus):
    results = list(cluster([dataclasses.replace(a) for a in seeds_then_corpus]))
    seed_story = results[0][1].story_id
    assert results[1][1].story_id == seed_story
    assert [a.url for a, o in results[2:] if o.story_id == seed_story] == []


def test_corpus_stays_out_on_content_alone(seeds_then_corpus):
    """Same again with every page at the seeds' time, so the window cannot do the work."""
    same_time = [
        dataclasses.replace(a, date=None, fetched_at=T0) for a in seeds_then_corpus
    ]
    results = list(cluster(same_time))
    seed_story = results[0][1].story_id
    assert results[1][1].story_id == seed_story
    assert [a.url for a, o in results[2:] if o.story_id == seed_story] == []
