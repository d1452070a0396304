"""The stories agent's synchronous parts (agents/stories_agent.py): the hold that restores
date order, the write-behind table view, and the assigner over plain mappings, checked
against the in-process `StoryIndex` on the same articles."""

from __future__ import annotations

import random

import orjson
import pytest

from agents.records import Article, Entity, Failure
from agents.stories import StoryConfig, StoryIndex, features
from agents.stories_agent import Held, HoldBuffer, Staged, StoryAssigner, order_key
from streams.bench.stories import basil_items, enrich_items, pipeline_for


def held(t: float, ident: str, arrived: float) -> Held:
    return Held(t, ident, arrived, ident)


def test_hold_releases_due_items_with_everything_ordered_before_them():
    buf = HoldBuffer(hold=5.0)
    buf.add(held(30.0, "c", arrived=0.0))
    buf.add(held(10.0, "a", arrived=3.0))  # earlier story time, came later
    buf.add(held(50.0, "d", arrived=4.0))
    assert buf.release(now=4.9) == []
    # "c" is due; "a" sorts before it and goes first; "d" is not due and sorts after: stays.
    assert [h.item for h in buf.release(now=5.0)] == ["a", "c"]
    assert len(buf) == 1
    assert [h.item for h in buf.release(now=9.0)] == ["d"]


def test_hold_breaks_time_ties_by_id_and_zero_hold_releases_at_once():
    buf = HoldBuffer(hold=0.0)
    for ident in ("b", "c", "a"):
        buf.add(held(1.0, ident, arrived=0.0))
    assert [h.item for h in buf.release(now=0.0)] == ["a", "b", "c"]


def test_hold_is_bounded():
    buf = HoldBuffer(hold=60.0, max_items=3)
    for i in range(5):
        buf.add(held(float(i), str(i), arrived=0.0))
    assert [h.item for h in buf.release(now=1.0)] == ["0", "1"]
    assert len(buf) == 3


def test_hold_drops_what_the_predicate_rejects():
    buf = HoldBuffer(hold=60.0)
    for i in range(4):
        buf.add(held(float(i), str(i), arrived=0.0))
    gone = buf.drop(lambda h: int(h.item) % 2 == 0)
    assert [h.item for h in gone] == ["1", "3"]
    assert [h.item for h in buf.release(now=0.0, everything=True)] == ["0", "2"]


class CountingTable(dict):
    """A bytes -> bytes dict counting writes, as a Faust table counts changelog records."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)

    def __setitem__(self, key, value) -> None:
        assert isinstance(key, bytes) and isinstance(value, bytes)
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.writes += 1
        super().__delitem__(key)


def test_staged_writes_each_changed_key_once_and_reads_its_own_writes():
    table = CountingTable()
    view = Staged(table)
    for i in range(100):
        view["common"] = {"n": i}
        view[f"k{i % 3}"] = [i]
    assert view["common"] == {"n": 99} and view.get("k0") == [99]
    assert table.writes == 0
    assert view.flush() == 4 and table.writes == 4
    assert orjson.loads(table[b"common"]) == {"n": 99}
    del view["k1"]
    assert "k1" not in view and sorted(view) == ["common", "k0", "k2"]
    view["new"] = 1
    assert sorted(view) == ["common", "k0", "k2", "new"] and len(view) == 4
    with pytest.raises(KeyError):
        del view["missing"]
    view.flush()
    assert sorted(table) == [b"common", b"k0", b"k2", b"new"]
    assert Staged(table)["new"] == 1  # a fresh view (a restarted worker) reads the table


def test_staged_cache_outlives_a_flush_until_forgotten_or_full():
    table = CountingTable()
    table[b"word"] = orjson.dumps({"1": 5})
    view = Staged(table, max_cached_bytes=30)
    assert view["word"] == {"1": 5} and "absent" not in view
    assert table.reads == 2
    view["word"] = {"1": 6}
    view.flush()
    for _ in range(3):  # later batches: the parsed value and the known absence, no lookups
        assert view["word"] == {"1": 6} and view.get("absent") is None
        view.flush()
    assert table.reads == 2
    table[b"word"] = orjson.dumps({"1": 9})  # a new owner's writes, restored by recovery
    assert view["word"] == {"1": 6}
    view.forget()
    assert view["word"] == {"1": 9} and table.reads == 3
    view["big"] = "x" * 20
    view.flush()  # 7 + 22 bytes read and written since the forget: not over 30
    assert view["big"] and table.reads == 3
    view["word"] = {"1": 10}
    view.flush()  # 8 more: emptied
    assert view["word"] == {"1": 10} and table.reads == 4


def art(ident: str, day: int, title: str, names: list[str]) -> Article:
    return Article(
        id=ident,
        url=f"https://example.com/{ident}",
        canonical_url=None,
        title=title,
        text=title + ". " + " ".join(f"{n} said something about it." for n in names),
        language="en",
        entities=[Entity(n, "PERSON", 2) for n in names],
        date=f"2016-12-{day:02d}",
        fetched_at=None,
    )


ARTICLES = [
    art("a1", 10, "Syrian army retakes Palmyra from Islamic State", ["Assad", "Palmyra"]),
    art("a2", 10, "Palmyra falls to government forces again", ["Palmyra", "Assad"]),
    art("b1", 11, "Budget talks stall in Congress", ["Ryan", "Schumer"]),
    art("a3", 11, "Palmyra ruins back in army hands", ["Palmyra"]),
    art("b2", 12, "Congress budget deadline looms", ["Schumer", "Ryan"]),
]


def reference(articles: list[Article]) -> dict[str, str]:
    index = StoryIndex(StoryConfig())
    return {a.id: index.add(features(a)).story_id for a in sorted(articles, key=order_key)}


def test_assigner_over_tables_decides_as_the_in_process_index():
    tables = [CountingTable() for _ in range(4)]
    assigner = StoryAssigner(StoryConfig(), *tables)
    got = {}
    for a in sorted(ARTICLES, key=order_key):
        got[a.id] = assigner.place(a).story_id
        assigner.flush()  # one batch per article, and a new owner's each: state only through
        assigner.forget()  # the tables
    assert got == reference(ARTICLES)
    assert got["a1"] == got["a2"] == got["a3"] != got["b1"] == got["b2"]


def test_replayed_article_keeps_its_story_and_is_not_counted_again():
    tables = [CountingTable() for _ in range(4)]
    assigner = StoryAssigner(StoryConfig(), *tables)
    first = {a.id: assigner.place(a) for a in sorted(ARTICLES, key=order_key)}
    assigner.flush()
    sizes = {k: orjson.loads(v)["size"] for k, v in tables[0].items()}
    again = StoryAssigner(StoryConfig(), *tables)  # a restarted worker, same tables
    for a in ARTICLES:
        replay = again.place(a)
        assert replay.story_id == first[a.id].story_id and replay.size == 0
    again.flush()
    assert {k: orjson.loads(v)["size"] for k, v in tables[0].items()} == sizes


def test_article_without_time_gets_no_story():
    undated = Article(id="x", url="https://example.com/x", canonical_url=None, title="t",
                      text="some text here", language="en", entities=[], date=None,
                      fetched_at=None)  # fmt: skip
    assert isinstance(StoryAssigner(StoryConfig(), {}, {}, {}, {}).place(undated), Failure)
    assert order_key(undated)[0] == float("-inf")


@pytest.mark.slow
def test_hold_restores_the_in_process_stories_on_real_articles():
    """BASIL articles (real reports, three per event) arriving shuffled within the hold get
    exactly the stories of the in-process run over the same articles in date order."""
    items = basil_items(limit=60)
    articles = [a for a in enrich_items(items, pipeline_for("basil")) if isinstance(a, Article)]
    assert len(articles) >= 55
    expected = reference(articles)
    rnd = random.Random(7)
    # each article arrives up to 2.5 s late, so arrivals cross; the hold is 3 s
    arrival = sorted(
        ((i + rnd.uniform(0.0, 2.5), a) for i, a in enumerate(sorted(articles, key=order_key))),
        key=lambda pair: pair[0],
    )
    assert [a.id for _, a in arrival] != [a.id for a in sorted(articles, key=order_key)]
    assigner = StoryAssigner(StoryConfig(), {}, {}, {}, {})
    buf = HoldBuffer(hold=3.0)
    got = {}
    for clock, a in arrival:
        buf.add(Held(*order_key(a), clock, a))
        for h in buf.release(now=clock):
            got[h.item.id] = assigner.place(h.item).story_id
    for h in buf.release(now=1e9, everything=True):
        got[h.item.id] = assigner.place(h.item).story_id
    assert got == expected
    # without the hold, arrival order decides differently (so the hold is what matters)
    unheld = StoryAssigner(StoryConfig(), {}, {}, {}, {})
    assert {a.id: unheld.place(a).story_id for _, a in arrival} != expected


def test_state_leaves_the_tables_with_the_window():
    tables = [CountingTable() for _ in range(4)]
    assigner = StoryAssigner(StoryConfig(window_hours=48.0), *tables)
    old = art("old", 1, "Palmyra retaken by the army", ["Palmyra", "Assad"])
    new = art("new", 20, "Budget talks stall in Congress", ["Ryan", "Schumer"])
    for a in (old, new):
        assigner.place(a)
        assigner.flush()
    stories, postings, _, assigned = tables
    assert list(stories) == [b"s-new"] and list(assigned) == [b"new"]
    assert not any(b"s-old" in v for v in postings.values())
