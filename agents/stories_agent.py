"""Streaming story assignment: canonical articles in, the same articles with `story_id` out.

    dedup-gather (enrich-pages when dedup is off) --canonical article--> <app>-stories
                                  (stories-assign, one partition) --article + story_id--> articles

Why one partition: a story gathers articles from every raw-pages partition, and each decision
reads state spread over many keys (document frequencies, postings, centroids). With one owner
deciding every article, an article joins a story whose first article any partition or worker
handled, with no cross-partition protocol, and the decisions are exactly `StoryIndex`'s. The
cost is that one worker assigns all stories: `newsflow bench stories` measures that rate
(BENCHMARKS.md), far above the other stages' per-worker rate.

Why a hold: workers and partitions run at different speeds, so articles reach the stories
partition out of publication order. Each article is held `NEWSFLOW_STORY_HOLD` seconds and the
held ones are assigned in `(time, id)` order (`HoldBuffer`): within that much skew the stream
decides exactly as `newsflow enrich --stories` over the same inputs sorted by date. An article
arriving later than that is assigned when it comes; nothing waits longer than the hold.

State: four Faust tables, `stories` (story id -> centroid and span), `postings` (entity/word ->
story ids), `df` (key -> document counts per week) and `assigned` (article id -> its story, so
a replayed article gets the same story and is not counted twice). They are written through
`Staged` once per batch, and the articles go out only after those changelog records are
acknowledged; input offsets are committed only after that, in offset order. Stories, their
postings and assignments leave the state `window_hours` after their last article; document
frequencies after `df_days`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.records import Article, Failure
from agents.stories import DAY, Assignment, StoryConfig, StoryIndex, features, timestamp

log = logging.getLogger(__name__)

STORIES = "stories"  # role of the internal topic (topic map key, as ARTICLES is)
ARTICLES = "articles"
PRODUCED_HEADER = "newsflow-produced"  # the raw input's timestamp, for latency metrics
BATCH_EVENTS = 256
BATCH_WITHIN = 0.05
_DELETED = object()  # in the cache: known absent, or deleted and not yet flushed
_UNREAD = object()


class Staged(MutableMapping):
    """A write-behind JSON view of a bytes -> bytes table, with a read cache.

    Reads see staged writes; `flush` writes each changed key once. An article touches about a
    hundred document-frequency keys, most of them common words every article shares: staged,
    a batch costs one changelog record per distinct key instead of one per touch.

    The cache (parsed values, and keys known to be absent) outlives a flush: while the agent
    owns the partition it is the table's only writer, so the next batch reads the common
    words without a table lookup and a JSON parse each (2.3 of the 16.7 ms of a worker's Faust
    process an English page, BENCHMARKS.md run 8). `forget` empties it for when ownership may
    have changed (a rebalance: changelog recovery writes the table behind it). Once what it
    read and wrote passes `max_cached_bytes` of JSON, a flush empties it: a bounded working set
    (a live story is up to ~10 KB of JSON, a word's weekly counts up to ~0.5 KB).
    """

    def __init__(self, table: MutableMapping, max_cached_bytes: int = 8 << 20) -> None:
        self.table = table
        self.max_cached_bytes = max_cached_bytes
        self.cached_bytes = 0
        self.cache: dict[str, Any] = {}
        self.dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        """As `Mapping.get`, without raising and catching a KeyError for each absent key (the
        stories index asks for a few hundred keys an article, many absent)."""
        value = self.cache.get(key, _UNREAD)
        if value is _UNREAD:
            raw = self.table.get(key.encode("utf-8", "surrogatepass"))
            value = self.cache[key] = _DELETED if raw is None else orjson.loads(raw)
            self.cached_bytes += len(raw or b"")
        return default if value is _DELETED else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _DELETED)
        if value is _DELETED:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _DELETED) is not _DELETED  # type: ignore[arg-type]

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        self[key]  # a missing key raises KeyError, as a dict does
        self.cache[key] = _DELETED
        self.dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        stored = dict.fromkeys(k.decode("utf-8", "surrogatepass") for k in list(self.table.keys()))
        yield from (k for k in stored if self.cache.get(k) is not _DELETED)
        yield from (k for k, v in list(self.cache.items()) if v is not _DELETED and k not in stored)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> int:
        """Write the changed keys to the table; returns how many records that was."""
        written = len(self.dirty)
        for key in sorted(self.dirty):
            raw_key = key.encode("utf-8", "surrogatepass")
            value = self.cache[key]
            if value is _DELETED:
                if raw_key in self.table:
                    del self.table[raw_key]
            else:
                raw = self.table[raw_key] = orjson.dumps(value)
                self.cached_bytes += len(raw)
        self.dirty.clear()
        if self.cached_bytes > self.max_cached_bytes:
            self.forget()
        return written

    def forget(self) -> None:
        """Drop the cache and any unflushed writes: the next reads go to the table."""
        self.cache.clear()
        self.dirty.clear()
        self.cached_bytes = 0


@dataclass(order=True)
class Held:
    """One article waiting in the hold, ordered by (time, id) as the in-process run is."""

    time: float
    article_id: str
    arrived: float = field(compare=False)
    item: Any = field(compare=False)


class HoldBuffer:
    """Holds items up to `hold` seconds and releases them in key order.

    When any held item is due, it is released together with every item ordered before it, so
    an early article that came late still goes first; an item is never held past its due time.
    More than `max_items` held releases the oldest-ordered ones at once (a bounded memory).
    """

    def __init__(self, hold: float, max_items: int = 10_000) -> None:
        self.hold = hold
        self.max_items = max_items
        self.items: list[Held] = []  # sorted by (time, article_id)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, held: Held) -> None:
        bisect.insort(self.items, held)

    def release(self, now: float, everything: bool = False) -> list[Held]:
        if everything:
            cut = len(self.items)
        else:
            due = [i for i, h in enumerate(self.items) if now - h.arrived >= self.hold]
            cut = due[-1] + 1 if due else 0
            cut = max(cut, len(self.items) - self.max_items)
        out, self.items = self.items[:cut], self.items[cut:]
        return out

    def drop(self, keep) -> list[Held]:
        """Remove the items `keep` rejects (events of a previous consumer generation)."""
        gone = [h for h in self.items if not keep(h)]
        self.items = [h for h in self.items if keep(h)]
        return gone


class StoryAssigner:
    """`StoryIndex` over four mappings plus the replay memory: the agent's synchronous core.

    `place` gives an article its story (the same one again for a replayed article id);
    `flush` writes the batch's state changes. Plain dicts in tests, Faust tables in a worker.
    """

    def __init__(self, config: StoryConfig, stories: MutableMapping,
                 postings: MutableMapping, df: MutableMapping,
                 assigned: MutableMapping) -> None:  # fmt: skip
        self.maps = [Staged(t) for t in (stories, postings, df, assigned)]
        self.index = StoryIndex(config, *self.maps[:3])
        self.assigned = self.maps[3]
        self._swept_hour: int | None = None

    def place(self, article: Article, now: float | None = None) -> Assignment | Failure:
        known = self.assigned.get(article.id)
        if known is not None:
            return Assignment(known["s"], False, 0.0, 0)  # size 0: not counted again
        feats = features(article, self.index.config, now=now)
        if isinstance(feats, Failure):
            return feats
        outcome = self.index.add(feats)
        self.assigned[article.id] = {"s": outcome.story_id, "t": feats.time}
        self._maybe_forget()
        return outcome

    def _maybe_forget(self) -> None:
        """Once per hour of stream time: forget assignments older than the window (a replay
        of one after that would be assigned afresh)."""
        hour = int(self.index.watermark // 3600) if math.isfinite(self.index.watermark) else 0
        if hour == self._swept_hour:
            return
        self._swept_hour = hour
        cutoff = self.index.watermark - self.index.config.window_seconds - DAY
        for key in list(self.assigned):
            if self.assigned[key]["t"] < cutoff:
                del self.assigned[key]

    def flush(self) -> int:
        return sum(m.flush() for m in self.maps)

    def forget(self) -> None:
        """Read the tables afresh from the next `place` (see `Staged.forget`)."""
        for m in self.maps:
            m.forget()

    def live_stories(self) -> int:
        return len(self.index.stories)


def order_key(article: Article, now: float | None = None) -> tuple[float, str]:
    """Where an article sorts in the hold: its story time (as `features` caps it), then its
    id; an article with no time sorts first (it joins no story anyway)."""
    timed = timestamp(article)
    if timed is None:
        return (-math.inf, article.id or "")
    return (timed[0] if now is None else min(timed[0], now), article.id or "")


# ------------------------------------------------------------------------------- Faust glue


@dataclass
class StoryAgents:
    assigner: StoryAssigner
    buffer: HoldBuffer
    tables: dict[str, Any]
    agents: tuple[Any, ...]


def attach_story_agent(app: Any, topics: dict[str, Any], settings: Any) -> StoryAgents:
    """Declare the story tables and the `stories-assign` agent on `app`; `topics` maps roles
    to Faust topics: STORIES (internal, one partition) and ARTICLES."""
    from faust.streams import _current_event

    from agents.dedup_agent import (
        Send,
        _deliver_or_exit,
        changelog_futures,
        declare_table,
        deliver_outcomes,
    )
    from streams import metrics
    from streams.topics import worker_name

    def table(name: str, help_text: str):
        return declare_table(app, settings, name, help_text, partitions=1)

    tables = {
        "stories": table("stories-live", "story id -> centroid, span and size"),
        "postings": table("stories-postings", "entity or word -> ids of live stories"),
        "df": table("stories-df", "entity or word -> articles holding it, per week"),
        "assigned": table("stories-assigned", "article id -> its story (replays)"),
    }
    assigner = StoryAssigner(settings.story_config, *tables.values())
    worker = worker_name()
    buffer = HoldBuffer(settings.story_hold)
    arrivals: deque = deque()  # held and in-progress events, in offset order, for acking
    done: set[int] = set()  # id() of events whose article went out
    lock = asyncio.Lock()
    source: dict[str, Any] = {}  # the agent's stream, for acks from the timer
    owned: dict[str, Any] = {}  # the consumer generation the assigner's cache was read in

    def current(held: Held) -> bool:
        return held.item[0].message.generation_id == app.consumer_generation_id

    async def release(everything: bool = False) -> None:
        async with lock:
            if app.rebalancing or not buffer:
                metrics.METRICS.set_stories_held(len(buffer))
                return
            stale = buffer.drop(current)
            if stale:  # a rebalance: the group re-delivers them from the committed offset
                gone = {id(h.item[0]) for h in stale}
                kept = [e for e in arrivals if id(e) not in gone]
                arrivals.clear()
                arrivals.extend(kept)
                await ack_done()
            ready = buffer.release(time.time(), everything)
            metrics.METRICS.set_stories_held(len(buffer))
            if ready:
                await assign_and_send(ready)

    async def assign_and_send(ready: list[Held]) -> None:
        now = time.time()
        if owned.get("generation") != app.consumer_generation_id:  # a rebalance came between
            assigner.forget()
            owned["generation"] = app.consumer_generation_id
        sends, assignments = [], []
        token = _current_event.set(weakref.ref(ready[0].item[0]))  # one partition: any event
        try:
            for held in ready:
                event, article = held.item  # the article as parsed on arrival (None: unreadable)
                message = event.message
                value, outcome = message.value, None
                try:
                    if article is None:
                        raise ValueError("the stories message is not an article")
                    outcome = assigner.place(article, now=now)
                    if isinstance(outcome, Assignment):
                        article.story_id = outcome.story_id
                        value = orjson.dumps(article)
                except Exception:  # a bug: the article goes out as it came, without a story
                    log.exception("stories-assign crashed on %s", held.article_id)
                headers = tuple((k, v) for k, v in message.headers or () if k != PRODUCED_HEADER)
                sends.append(Send(ARTICLES, message.key, value, None, headers, article,
                                  _produced_at(message.headers)))  # fmt: skip
                if outcome is not None:
                    assignments.append(outcome)
            assigner.flush()
        finally:
            _current_event.reset(token)
        await _deliver_or_exit(await changelog_futures(tables.values()), "stories changelog")
        for sent in await deliver_outcomes(topics, sends, "stories-assign", worker):
            if sent.outcome is not None:  # the article, or the dead letter standing for it
                metrics.METRICS.record_outcome(sent.outcome, produced_at=sent.produced_at)
        for outcome in assignments:
            metrics.METRICS.record_story(outcome)
        done.update(id(h.item[0]) for h in ready)
        await ack_done()

    async def ack_done() -> None:
        """Ack the finished events at the head of the arrivals, in offset order: Faust
        commits past a gap of one unacked offset, so acking out of order could lose one."""
        while arrivals and id(arrivals[0]) in done:
            event = arrivals.popleft()
            done.discard(id(event))
            await source["stream"].ack(event)

    @app.agent(topics[STORIES], name="stories-assign")
    async def assign_stories(stream):
        source["stream"] = stream
        async for events in stream.noack_take(BATCH_EVENTS, within=BATCH_WITHIN):
            async with lock:
                now = time.time()
                for event in events:
                    try:
                        article = Article.from_dict(orjson.loads(event.message.value))
                        key = order_key(article, now)
                    except Exception:  # unreadable: first in line; assign_and_send reports it
                        article, key = None, (-math.inf, "")
                    arrivals.append(event)
                    buffer.add(Held(key[0], key[1], now, (event, article)))
            await release()

    # Also with no hold: a batch that arrives while a rebalance is still settling is held
    # (see `release`), and with a finite input no later batch would come to release it.
    @app.timer(interval=min(1.0, max(0.1, settings.story_hold / 4)), name="newsflow.stories.hold")
    async def release_due() -> None:
        if "stream" in source:
            await release()

    @app.timer(interval=10.0, name="newsflow.stories.state_size")
    async def report_live_stories() -> None:
        try:
            from agents.dedup_agent import state_entries

            metrics.METRICS.set_stories_live(state_entries(tables["stories"]))
        except Exception as exc:  # a failed reading must not stop the timer
            log.warning("cannot read the story state size: %s: %s", type(exc).__name__, exc)

    return StoryAgents(assigner, buffer, tables, (assign_stories,))


def _produced_at(headers: Any) -> float | None:
    raw = dict(headers or ()).get(PRODUCED_HEADER)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def produced_header(timestamp: float | None) -> list[tuple[str, bytes]]:
    """The header carrying the raw input's timestamp to the stories agent (latency metrics)."""
    return [] if timestamp is None else [(PRODUCED_HEADER, repr(float(timestamp)).encode())]
