"""Streaming deduplication: the pure decision rules of `agents/dedup.py`, sharded over partitions.

Every dedup key (URL key, text fingerprint, LSH band key) is owned by exactly one partition of
the internal claims topic, so one agent decides it, one claim at a time; every article's
verdict is gathered on the partition of the internal gather topic that owns its id:

    enrich-pages --page----------------------------------------------> <app>-dedup-gather
         |                                                                 | (dedup-gather)
         +--url claim--> <app>-dedup-claims --exact claim--> (same topic)  |  ask / info
                          (dedup-claims)   --band claims, one per partition--> bands reply
                               | lost / won reply ---------------------------> |
                                                      articles <-- canonical --+
                                                    duplicates <-- duplicate --+

1. The enrich agent sends the article (the *page* message, with its probe: ids, keys and
   MinHash signature in a header) to the gather partition of its id, and only once that is
   delivered the first claim; then it acks the input. A claim therefore never refers to an
   article the gather agent will not see, and any message about X lands after X's page.
2. Claims are chained like `Deduper`'s checks: URL key first; only its winner claims the
   fingerprint; only that winner registers in its 40 bands (grouped into one message per
   claims partition). A URL or exact duplicate stops there, so its claims never compete with
   the canonical's, and `duplicate_of` chains always end at a canonical (no two articles can
   win "half" of each other). Every loser is told at once (`lost`).
3. Each band owner answers with the members that registered before the article
   (`band_register`); the gather agent then asks every candidate's gather partition for its
   order key and signature (`ask`/`info`) and runs `decide`. When `decide` is Pending on a
   younger candidate, it asks again for that one's final outcome; waits only go from older to
   younger articles, so they always end (see `agents.dedup.decide`).
4. The verdict is stored, then the article goes to articles (by way of the stories agent,
   agents/stories_agent.py, when stories are on), or a duplicate record
   (`{id, url, duplicate_of, kind, similarity}`) to duplicates, with the raw input's
   `newsflow-input` header: every input still has exactly one outcome.

State: five Faust tables (RocksDB with `NEWSFLOW_STORE=rocksdb://`, and their changelog
topics): URL/exact owners and band members on the claims side, article records and the
articles waiting for their outcome on the gather side. An agent handles a batch, waits until
the batch's changelog records are acknowledged, and only then sends what it decided, so a
replay (after a crash or a rebalance, on any worker) finds the state behind those sends. The
claims agent derives its answers from that state, and writes it again on a replay, so a write
that reached the local RocksDB but not the changelog cannot be lost later. The gather agent
keeps what it must send in the article's record (an outbox) until the sends are acknowledged,
and sends it again if a replay finds it there. If a send or a changelog write fails, the
worker exits without committing (as the enrich agent does); the batch replays after restart.
An outcome record the broker refuses for good (too large for the topic) is the exception: it
becomes an `output_rejected` dead letter (`deliver_outcomes`), since a replay cannot help.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from agents.dedup import (
    Candidate,
    DedupConfig,
    Pending,
    Probe,
    Verdict,
    band_keys,
    band_register,
    decide,
    fingerprint_tokens,
    order_key,
    sig_from_bytes,
    sig_to_bytes,
    signature_from_tokens,
    tokens,
    url_key,
)
from agents.records import Article, Failure
from agents.stories_agent import STORIES, produced_header
from streams.producer import exit_without_committing
from streams.topics import INPUT_HEADER, WORKER_HEADER, InputRef, dead_letter_value

log = logging.getLogger(__name__)

# Roles of the records the dedup path sends (topic map keys, as ARTICLES / DEAD_LETTER are).
GATHER = "dedup_gather"
CLAIMS = "dedup_claims"
ARTICLES = "articles"
DUPLICATES = "duplicates"
PROBE_HEADER = "newsflow-dedup"
DUPLICATE_SCHEMA_VERSION = 1
# Inputs of one article id (re-fetches of one URL) waiting together for its verdict; more
# than this within the verdict's round trips is a runaway producer: they are dead-lettered.
MAX_WAITING_INPUTS = 64
# Input positions per article id remembered after their outcome went out, so a replayed page
# (its enrich batch ran again after a stop) gets no second outcome.
MAX_DONE_INPUTS = 32
# Dedup messages are tiny and cheap: big batches, and a short wait to fill one, because each
# verdict takes 3-5 hops through the broker.
BATCH_EVENTS = 256
BATCH_WITHIN = 0.02
# RocksDB per table partition (Faust's defaults are a 2 GB block cache and 3 x 64 MB
# memtables per partition: with 5 tables x N partitions that is not "flat memory").
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 << 20,
    "bloom_filter_size": 10,
}


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2) on the key's UTF-8 bytes: every producer and
    every worker, in any language, puts one key on one partition."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF) % partitions


def _b64(sig: np.ndarray | None) -> str | None:
    return None if sig is None else base64.b64encode(sig_to_bytes(sig)).decode("ascii")


def _unb64(text: str | None) -> np.ndarray | None:
    return None if text is None else sig_from_bytes(base64.b64decode(text))


@dataclass(frozen=True, slots=True)
class Send:
    """One record a dedup agent sends; `outcome` is set on articles/duplicates (for metrics)."""

    role: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    outcome: Article | Failure | None = None
    produced_at: float | None = None


@dataclass(frozen=True, slots=True)
class PageProbe:
    """What dedup needs of an article, computed once by the enrich agent: its keys and
    signature travel in the page message's `newsflow-dedup` header."""

    id: str
    order_key: str
    url_key: str  # "" when the page has no usable http(s) URL
    fingerprint: str  # "" when the text has no words
    signature: np.ndarray | None  # None when the text is too short for near-dup detection
    produced_at: float | None = None  # the input record's timestamp (s), for latency metrics

    @classmethod
    def of(cls, article: Article, cfg: DedupConfig, produced_at: float | None = None) -> PageProbe:
        ident = article.id[: cfg.max_id_chars]
        toks = tokens(article.text or "", cfg.norm, cfg.max_text_chars)
        return cls(
            id=ident,
            order_key=order_key(article.fetched_at, ident)[: 2 * cfg.max_id_chars],
            url_key=url_key(article.url, article.canonical_url, cfg.max_url_chars),
            fingerprint=fingerprint_tokens(toks),
            signature=signature_from_tokens(toks, cfg),
            produced_at=produced_at,
        )

    def header(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "ok": self.order_key,
                "url": self.url_key,
                "fp": self.fingerprint,
                "sig": _b64(self.signature),
                "ts": self.produced_at,
            }
        )

    @classmethod
    def from_header(cls, raw: bytes) -> PageProbe:
        doc = orjson.loads(raw)
        return cls(doc["id"], doc["ok"], doc["url"], doc["fp"], _unb64(doc["sig"]), doc["ts"])


def first_claim(probe: PageProbe, cfg: DedupConfig, partitions: int) -> list[Send]:
    """The claims that start the chain: the URL key's, else the fingerprint's (nothing for an
    article with neither: it is canonical as soon as the gather agent sees it)."""
    msg = {"id": probe.id, "fp": probe.fingerprint, "sig": _b64(probe.signature)}
    if probe.url_key:
        return [_claim_send("url", probe.url_key, msg, partitions)]
    if probe.fingerprint:
        return [_claim_send("exact", probe.fingerprint, msg, partitions)]
    return _band_sends(probe.id, probe.signature, cfg, partitions)


def _claim_send(stage: str, key: str, msg: dict, partitions: int) -> Send:
    value = orjson.dumps({**msg, "stage": stage, "key": key})
    return Send(CLAIMS, key.encode("utf-8", "surrogatepass"), value, partition_for(key, partitions))


def band_partitions(sig: np.ndarray, cfg: DedupConfig, partitions: int) -> dict[int, list]:
    """Band keys grouped by the claims partition that owns them: `{partition: [[i, key]]}`."""
    groups: dict[int, list] = {}
    for i, key in enumerate(band_keys(sig, cfg)):
        groups.setdefault(partition_for(key, partitions), []).append([i, key])
    return groups


@functools.lru_cache(maxsize=1024)
def _band_parts(sig_b64: str, cfg: DedupConfig, partitions: int) -> frozenset[str]:
    """The partitions a page's band replies come from, asked once per reply: memoised, since
    each asking hashes every band key twice (blake2b, then murmur2 in pure Python)."""
    return frozenset(str(p) for p in band_partitions(_unb64(sig_b64), cfg, partitions))


def _band_sends(ident: str, sig: np.ndarray | None, cfg: DedupConfig, partitions: int) -> list:
    if sig is None:
        return []
    return [
        Send(
            CLAIMS,
            ident.encode(),
            orjson.dumps({"id": ident, "stage": "bands", "part": part, "bands": bands}),
            part,
        )
        for part, bands in sorted(band_partitions(sig, cfg, partitions).items())
    ]


def _to_gather(target: str, msg: dict, partitions: int) -> Send:
    return Send(GATHER, target.encode(), orjson.dumps(msg), partition_for(target, partitions))


# ------------------------------------------------------------------------------- claims side


class ClaimsCore:
    """The claims agent's logic over three mappings (Faust tables in the worker, dicts in
    tests): URL key -> owner id, fingerprint -> owner id, band key -> member ids (JSON list,
    arrival order). One call per claim message; returns what to send."""

    def __init__(
        self,
        url_owners: MutableMapping,
        exact_owners: MutableMapping,
        band_members: MutableMapping,
        cfg: DedupConfig,
        partitions: int,
    ) -> None:
        self.owners = {"url": url_owners, "exact": exact_owners}
        self.bands = band_members
        self.cfg = cfg
        self.partitions = partitions

    def handle(self, value: bytes) -> list[Send]:
        msg = orjson.loads(value)
        me = str(msg["id"])[: self.cfg.max_id_chars]
        stage = msg["stage"]
        if stage == "bands":
            return [self._register(me, msg)]
        table = self.owners[stage]
        key = str(msg["key"]).encode("utf-8", "surrogatepass")
        if len(key) > 4 * self.cfg.max_url_chars:  # our own producers cap it: a bug upstream
            raise ValueError(f"{stage} key of {len(key)} bytes")
        # `claim`, with the owner written back even when it was already there: a replay then
        # re-sends a changelog record that a crash may have kept from the broker.
        winner = table.get(key) or me.encode()
        table[key] = winner
        if winner != me.encode():
            lost = {"t": "lost", "id": me, "kind": stage, "winner": winner.decode()}
            return [_to_gather(me, lost, self.partitions)]
        if stage == "url" and msg.get("fp"):
            return [
                _claim_send("exact", msg["fp"], {"id": me, "sig": msg.get("sig")}, self.partitions)
            ]
        sends = _band_sends(me, _unb64(msg.get("sig")), self.cfg, self.partitions)
        return sends or [_to_gather(me, {"t": "won", "id": me}, self.partitions)]

    def _register(self, me: str, msg: dict) -> Send:
        present: dict[str, list[str]] = {}
        saturated: list[int] = []
        for index, key in msg["bands"]:
            raw_key = str(key).encode()
            raw = self.bands.get(raw_key)
            members = orjson.loads(raw) if raw is not None else []
            before, full, new = band_register(members, me, self.cfg.max_band_members)
            if full:
                saturated.append(int(index))
            elif new is not None:
                self.bands[raw_key] = orjson.dumps(new)
            else:  # a replay: same answer, and the stored list written again
                self.bands[raw_key] = raw
            if before:
                present[str(int(index))] = list(before)
        reply = {
            "t": "bands",
            "id": me,
            "part": int(msg["part"]),
            "present": present,
            "sat": saturated,
        }
        return _to_gather(me, reply, self.partitions)


# ------------------------------------------------------------------------------- gather side


@dataclass
class DedupStats:
    """What this worker's dedup agents did, for its status page."""

    messages: Counter = field(default_factory=Counter)  # by agent/message type
    verdicts: Counter = field(default_factory=Counter)  # canonical / url / exact / near
    orphans: int = 0  # messages about an article this partition has no record of (a bug)
    errors: int = 0  # messages that raised (a bug), logged and skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "verdicts": dict(self.verdicts),
            "orphans": self.orphans,
            "errors": self.errors,
        }


def duplicate_value(article: dict, verdict: Verdict) -> bytes:
    """The duplicates record (streams/schemas/duplicate.schema.json)."""
    return orjson.dumps(
        {
            "schema_version": DUPLICATE_SCHEMA_VERSION,
            "id": article.get("id"),
            "url": article.get("url"),
            "duplicate_of": verdict.duplicate_of,
            "kind": verdict.kind,
            "similarity": verdict.similarity,
        }
    )


class GatherCore:
    """The gather agent's logic over two mappings: `records` (article id -> JSON state: order
    key, signature, progress, verdict, outbox) and `waiting` (id + input position -> the
    article and its input reference, until its outcome is delivered). One `handle` call per
    gather message; `confirm(id)` once the sends it returned for `id` are acknowledged.

    Outbox: every message a state change must send is stored with the state before it is
    sent, and cleared by `confirm`. If the process dies in between, the replayed message finds
    the outbox still full and sends it again (a duplicate, never a loss); an input whose
    outcome was confirmed is remembered (`done`), so a replayed page does not get a second
    outcome.
    """

    def __init__(
        self,
        records: MutableMapping,
        waiting: MutableMapping,
        cfg: DedupConfig,
        partitions: int,
        worker: str = "",
        stats: DedupStats | None = None,
        stories: bool = False,
    ) -> None:
        self.stories = stories  # canonical articles go to the stories agent, not to articles
        self.records = records
        self.waiting = waiting
        self.cfg = cfg
        self.partitions = partitions
        self.worker = worker
        self.stats = stats or DedupStats()
        # Ids whose outbox this process has sent and not yet confirmed, in order.
        self.unconfirmed: dict[str, None] = {}

    # -- state --------------------------------------------------------------------------

    def _load(self, ident: str) -> dict | None:
        raw = self.records.get(ident.encode())
        return orjson.loads(raw) if raw is not None else None

    def _save(self, ident: str, state: dict) -> None:
        self.records[ident.encode()] = orjson.dumps(state)

    def _post(self, ident: str, state: dict, messages: list[tuple[str, dict]]) -> list[Send]:
        """Save `state` with `messages` ((target id, message)) added to its outbox; return
        them as sends."""
        state.setdefault("outbox", []).extend([to, msg] for to, msg in messages)
        self._save(ident, state)
        self.unconfirmed[ident] = None
        return [_to_gather(to, msg, self.partitions) for to, msg in messages]

    def confirm(self, ident: str) -> None:
        """Everything sent for `ident` is acknowledged: clear its outbox and let go of the
        articles whose outcome went out."""
        self.unconfirmed.pop(ident, None)
        state = self._load(ident)
        if state is None:
            return
        state["outbox"] = []
        if state["phase"] == "final":
            for wait_key in state["inputs"]:
                self.waiting.pop(wait_key.encode(), None)
                state["done"].append(wait_key.split("|", 1)[1])
            state["inputs"], state["done"] = [], state["done"][-MAX_DONE_INPUTS:]
        self._save(ident, state)

    def _resend(self, ident: str, state: dict) -> list[Send]:
        """What a crash may have kept from going out: the outbox and, once final, the
        outcomes of the waiting inputs."""
        if ident in self.unconfirmed:
            return []  # sent by this process, in this batch: not lost
        sends = [_to_gather(to, msg, self.partitions) for to, msg in state.get("outbox", [])]
        if state["phase"] == "final":
            sends.extend(self._outcomes(ident, state, state["inputs"]))
        if sends:
            self.stats.messages["resent"] += len(sends)
            self.unconfirmed[ident] = None
        return sends

    # -- messages -----------------------------------------------------------------------

    def handle(self, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None) -> list:
        found = dict(headers or ())
        if PROBE_HEADER in found:
            self.stats.messages["page"] += 1
            probe = PageProbe.from_header(found[PROBE_HEADER])
            state = self._load(probe.id)
            input_header = found.get(INPUT_HEADER, b"{}")
            position = self._position(input_header)
            if state:
                self._restore_waiting(probe, state, value or b"", input_header, position)
            sends = self._resend(probe.id, state) if state else []
            return sends + self._page(probe, state, value or b"", input_header, position)
        msg = orjson.loads(value or b"{}")
        kind = msg.get("t")
        self.stats.messages[str(kind)] += 1
        ident = str(msg["id"])
        state = self._load(ident)
        if kind == "ask":
            return self._ask(ident, state, str(msg["from"]), bool(msg["final"]))
        if state is None:
            self.stats.orphans += 1
            log.warning("dedup: %r message for unknown article %s", kind, ident)
            return []
        sends = self._resend(ident, state)
        if state["phase"] == "final":
            return sends  # a replayed reply: the verdict is already out
        if kind == "lost":
            verdict = Verdict(msg["kind"], str(msg["winner"]), 1.0)
            return sends + self._finish(ident, state, verdict)
        if kind == "won":
            return sends + self._finish(ident, state, None)
        if kind == "bands":
            return sends + self._bands(ident, state, msg)
        if kind == "info":
            return sends + self._info(ident, state, msg)
        raise ValueError(f"unknown dedup message type {kind!r}")

    def _restore_waiting(self, probe: PageProbe, state: dict, article: bytes,
                         input_header: bytes, position: str) -> None:  # fmt: skip
        """A replayed page that its record lists as waiting while the article itself is gone:
        a crash let the record's changelog write land and not the article's. They are sent in
        write order, but a partition's records beyond one batch go in a later produce request
        (an article is ~10 KB, a batch 16 KB). Store the article again before its outcome is
        looked for, so the outcome can still go out."""
        wait_key = f"{probe.id}|{position}"
        if wait_key in state["inputs"] and self.waiting.get(wait_key.encode()) is None:
            log.warning("dedup: waiting article %s was lost in a crash; stored again", wait_key)
            self._wait(probe, article, input_header, wait_key)

    def _wait(self, probe: PageProbe, article: bytes, input_header: bytes, wait_key: str) -> None:
        """Keep the article until its outcome is out, with where it came from."""
        meta = {"input": input_header.decode(), "ts": probe.produced_at}
        self.waiting[wait_key.encode()] = _pack(meta, article)

    def _page(self, probe: PageProbe, state: dict | None, article: bytes,
              input_header: bytes, position: str) -> list[Send]:  # fmt: skip
        ident = probe.id
        wait_key = f"{ident}|{position}"
        if state is None:
            state = {"ok": probe.order_key, "sig": _b64(probe.signature), "phase": "claims",
                     "keys": bool(probe.url_key or probe.fingerprint), "inputs": [],
                     "done": [], "parts": {}, "watchers": [], "outbox": []}  # fmt: skip
        if position in state["done"] or wait_key in state["inputs"]:
            return []  # a replayed page: its outcome is out, or on its way
        if len(state["inputs"]) >= MAX_WAITING_INPUTS:
            return [self._overflow(ident, article, input_header)]
        self._wait(probe, article, input_header, wait_key)
        state["inputs"].append(wait_key)
        if state["phase"] == "final":  # a re-fetch of a decided article: the same verdict
            self._save(ident, state)
            self.unconfirmed[ident] = None
            return self._outcomes(ident, state, [wait_key])
        if not state["keys"] and probe.signature is None:  # nothing to claim: canonical
            return self._finish(ident, state, None)
        self._save(ident, state)
        return []

    def _bands(self, ident: str, state: dict, msg: dict) -> list[Send]:
        if state["sig"] is None or state["phase"] != "claims":
            return []
        state["parts"][str(msg["part"])] = {"present": msg["present"], "sat": msg["sat"]}
        if not _band_parts(state["sig"], self.cfg, self.partitions) <= state["parts"].keys():
            self._save(ident, state)
            return []
        candidates: dict[str, set[int]] = {}
        saturated: set[int] = set()
        for reply in state.pop("parts").values():
            saturated.update(int(i) for i in reply["sat"])
            for index, members in reply["present"].items():
                for member in members:
                    if member != ident:
                        candidates.setdefault(member, set()).add(int(index))
        if not candidates:
            return self._finish(ident, state, None)
        state.update(phase="lookup", sat=sorted(saturated), infos={}, asked_final=[],
                     cands={c: sorted(b) for c, b in candidates.items()})  # fmt: skip
        asks = [(c, {"t": "ask", "id": c, "from": ident, "final": False}) for c in candidates]
        return self._post(ident, state, sorted(asks, key=lambda a: a[0]))

    def _info(self, ident: str, state: dict, msg: dict) -> list[Send]:
        about = str(msg["about"])
        if state["phase"] != "lookup" or about not in state["cands"]:
            return []
        seen = state["infos"].get(about)
        info = {"ok": msg.get("ok"), "sig": msg.get("sig"), "canonical": msg.get("canonical")}
        if seen is not None and seen["canonical"] is not None and info["canonical"] is None:
            return []  # an older, less informed answer replayed: keep what we know
        state["infos"][about] = info
        if set(state["infos"]) != set(state["cands"]):
            self._save(ident, state)
            return []
        return self._decide(ident, state)

    def _decide(self, ident: str, state: dict) -> list[Send]:
        candidates = []
        for cid, info in state["infos"].items():
            sig = _unb64(info["sig"])
            if info["ok"] is None or sig is None:
                continue  # no record of it (see `_ask`): it cannot be compared
            candidates.append(Candidate(cid, info["ok"], sig, frozenset(state["cands"][cid]),
                                        info["canonical"]))  # fmt: skip
        me = Probe(ident, state["ok"], _unb64(state["sig"]), frozenset(state["sat"]))
        verdict = decide(me, candidates, self.cfg)
        if not isinstance(verdict, Pending):
            return self._finish(ident, state, verdict)
        new = [c for c in verdict.waiting_for if c not in state["asked_final"]]
        state["asked_final"].extend(new)
        return self._post(ident, state,
                          [(c, {"t": "ask", "id": c, "from": ident, "final": True}) for c in new])

    def _ask(self, ident: str, state: dict | None, asker: str, final: bool) -> list[Send]:
        if state is None:  # cannot happen while page-before-claims holds; answer, never hang
            self.stats.orphans += 1
            log.warning("dedup: %s asked about unknown article %s", asker, ident)
            return [_to_gather(asker, _info_message(asker, ident, None), self.partitions)]
        sends = self._resend(ident, state)
        if final and state["phase"] != "final":
            if asker not in state["watchers"]:
                state["watchers"].append(asker)
                self._save(ident, state)
            return sends
        info = _info_message(asker, ident, state)
        return [*sends, _to_gather(asker, info, self.partitions)]

    # -- verdicts -----------------------------------------------------------------------

    def _finish(self, ident: str, state: dict, verdict: Verdict | None) -> list[Send]:
        """Store the verdict; send the waiting inputs' outcomes and tell the watchers."""
        self.stats.verdicts[verdict.kind if verdict else "canonical"] += 1
        final = {"ok": state["ok"], "sig": state["sig"], "phase": "final",
                 "canonical": verdict is None, "verdict": verdict.to_dict() if verdict else None,
                 "inputs": state["inputs"], "done": state.get("done", []), "watchers": [],
                 "outbox": state.get("outbox", [])}  # fmt: skip
        tell = [(w, _info_message(w, ident, final)) for w in state["watchers"]]
        return self._post(ident, final, tell) + self._outcomes(ident, final, final["inputs"])

    def _outcomes(self, ident: str, state: dict, wait_keys: list[str]) -> list[Send]:
        verdict = _verdict_of(state)
        sends = []
        for wait_key in wait_keys:
            raw = self.waiting.get(wait_key.encode())
            if raw is None:  # a bug: they leave together, and a replayed page restores a lost one
                log.error("dedup: waiting article %s is missing", wait_key)
                continue
            meta, article = _unpack(raw)
            headers = ((INPUT_HEADER, meta["input"].encode()),
                       (WORKER_HEADER, self.worker.encode()))  # fmt: skip
            doc = orjson.loads(article)
            record = Article.from_dict(doc)
            if verdict is None and self.stories:  # counted when the stories agent sends it
                headers += tuple(produced_header(meta.get("ts")))
                sends.append(Send(STORIES, ident.encode(), article, 0, headers))
                continue
            if verdict is None:
                sends.append(Send(ARTICLES, ident.encode(), article, None, headers, record,
                                  meta.get("ts")))  # fmt: skip
                continue
            record.duplicate_of, record.duplicate_kind = verdict.duplicate_of, verdict.kind
            record.similarity = verdict.similarity
            sends.append(Send(DUPLICATES, ident.encode(), duplicate_value(doc, verdict), None,
                              headers, record, meta.get("ts")))  # fmt: skip
        return sends

    def _overflow(self, ident: str, article: bytes, input_header: bytes) -> Send:
        ref = orjson.loads(input_header)
        where = InputRef(ref["topic"], ref["partition"], ref["offset"])
        failure = Failure("dedup_overflow", "dedup",
                          f"more than {MAX_WAITING_INPUTS} inputs of article {ident} waiting")
        url = orjson.loads(article).get("url")
        value = dead_letter_value(where, failure, url=url, worker=self.worker)
        headers = ((INPUT_HEADER, input_header), (WORKER_HEADER, self.worker.encode()))
        return Send("dead_letter", None, value, None, headers, failure)

    @staticmethod
    def _position(input_header: bytes) -> str:
        ref = orjson.loads(input_header)
        return f"{ref.get('topic')}:{ref.get('partition')}:{ref.get('offset')}"


def _info_message(asker: str, ident: str, state: dict | None) -> dict:
    """What `asker` learns about `ident`: order key, signature, and whether it is canonical
    (None until its verdict; ok/sig None if there is no record of it)."""
    canonical = state.get("canonical") if state and state["phase"] == "final" else None
    return {"t": "info", "id": asker, "about": ident, "ok": state and state["ok"],
            "sig": state and state["sig"], "canonical": canonical}  # fmt: skip


def _verdict_of(state: dict) -> Verdict | None:
    v = state.get("verdict")
    return Verdict(v["kind"], v["duplicate_of"], v["similarity"]) if v else None


def _pack(meta: dict, blob: bytes) -> bytes:
    head = orjson.dumps(meta)
    return len(head).to_bytes(4, "little") + head + blob


def _unpack(data: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(data[:4], "little")
    return orjson.loads(data[4 : 4 + size]), data[4 + size :]


# ------------------------------------------------------------------------------- enrich side


class DedupRouter:
    """Turns the enrich agent's article outputs into page messages for the gather topic, each
    with its first claim as a follow-up (sent only once the page is delivered). Runs in the
    enrich executor: the probe (tokens, MinHash) costs about a millisecond per article."""

    def __init__(self, cfg: DedupConfig, partitions: int, max_url_chars: int = 4_096) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.max_url_chars = max_url_chars

    def route(
        self,
        outputs: Sequence[Any],
        produced_at: Sequence[float | None],
        make_output: Callable[..., Any],
    ) -> list[Any]:
        """`outputs` are enrich `Output`s; `make_output(**fields)` builds one (the enrich
        agent's dataclass, passed in so this module does not import the agent)."""
        routed = []
        for out, stamp in zip(outputs, produced_at, strict=True):
            if out.role != ARTICLES:
                routed.append(out)
                continue
            try:
                probe = PageProbe.of(out.outcome, self.cfg, stamp)
                claims = first_claim(probe, self.cfg, self.partitions)
            except Exception as exc:  # a bug in the probe: this page dead-letters, not the batch
                log.exception("dedup probe crashed on %s", out.url)
                routed.append(self._failed(out, exc, make_output))
                continue
            follow = tuple(
                make_output(
                    role=c.role,
                    key=c.key,
                    value=c.value,
                    headers=[],
                    ref=out.ref,
                    outcome=out.outcome,
                    url=out.url,
                    partition=c.partition,
                )
                for c in claims
            )
            routed.append(
                replace(
                    out,
                    role=GATHER,
                    partition=partition_for(probe.id, self.partitions),
                    follow_up=follow,
                    headers=[*out.headers, (PROBE_HEADER, probe.header())],
                )
            )
        return routed

    def _failed(self, out: Any, exc: Exception, make_output: Callable[..., Any]) -> Any:
        failure = Failure("internal_error", "dedup", f"{type(exc).__name__}: {exc}"[:500])
        worker = dict(out.headers).get(WORKER_HEADER, b"").decode()
        value = dead_letter_value(
            out.ref, failure, url=out.url, worker=worker, max_key_chars=self.max_url_chars
        )
        return make_output(
            role="dead_letter",
            key=out.ref.key,
            value=value,
            headers=out.headers,
            ref=out.ref,
            outcome=failure,
            url=out.url,
        )


# ------------------------------------------------------------------------------- Faust glue


_WRITE_ORDER = itertools.count()  # across tables: changelog records go out in write order


@functools.cache
def _tracked_table_class():
    """A Faust Table whose changelog records the agent sends and waits for itself
    (`changelog_futures`), so it can hold back its answers until the state behind them is
    durable.

    A write stages its record. Faust's own path (a future message, its producer buffer, a
    background task, sensors around each send) cost ~45 us a record more, and a page writes
    ~96 of them (40 band keys, ~47 of the stories' words): 4.3 of a worker's Faust process's
    16.7 ms a page (BENCHMARKS.md run 8). Under exactly-once (a transaction open), and for
    anything but bytes, writes keep Faust's path.
    """
    import faust

    class TrackedTable(faust.Table):
        def on_key_set(self, key: Any, value: Any) -> None:
            if not self._stage(key, value):
                return super().on_key_set(key, value)
            self._sensor_on_set(self, key, value)

        def on_key_del(self, key: Any) -> None:
            if not self._stage(key, None):
                return super().on_key_del(key)
            self._sensor_on_del(self, key)

        def _stage(self, key: Any, value: Any) -> bool:
            if self.app.in_transaction or not isinstance(key, bytes):
                return False
            if value is not None and not isinstance(value, bytes):
                return False
            # The current event's partition, as Faust's own write would use.
            record = (next(_WRITE_ORDER), self.partition_for_key(key), key, value)
            self.__dict__.setdefault("staged", []).append(record)
            return True

        def send_changelog(self, *args: Any, **kwargs: Any):
            fut = super().send_changelog(*args, **kwargs)
            self.__dict__.setdefault("unacked", []).append(fut)
            return fut

        def take_changelog(self) -> tuple[list, list]:
            """(futures of records Faust sent, records staged) since the last call."""
            return self.__dict__.pop("unacked", []), self.__dict__.pop("staged", [])

        def persisted(self, partition: int, fut: Any) -> None:
            """Note an acknowledged offset in the store, as Faust's `_on_changelog_sent` does
            (RocksDB keeps it, to resume recovery from)."""
            from faust.types import TP

            if not fut.cancelled() and fut.exception() is None:
                tp = TP(self.changelog_topic.get_topic_name(), partition)
                self.data.set_persisted_offset(tp, fut.result().offset)

    return TrackedTable


async def changelog_futures(tables: Iterable[Any]) -> list:
    """Send the records `tables` staged, and return the futures of every changelog record they
    wrote since the last call. The records go out in the order they were written across the
    tables, as through Faust's buffer, so a crash mostly keeps a prefix of a batch's writes.
    Not always: a partition's records past one batch go in a later produce request, so the
    replay paths must not rely on it (`GatherCore._restore_waiting`). A record the producer
    will not take comes back as a failed future."""
    futures: list = []
    staged: list = []
    topics: dict[int, str] = {}
    for table in tables:
        sent, records = table.take_changelog()
        futures += sent
        staged += [(record, table) for record in records]
        topics[id(table)] = table.changelog_topic.get_topic_name()
    staged.sort(key=lambda item: item[0][0])
    last: dict[tuple[int, int], tuple[Any, Any]] = {}
    try:
        for (_, partition, key, value), table in staged:
            producer = table.app.producer._ensure_producer()  # aiokafka's
            fut = await producer.send(topics[id(table)], value, key=key, partition=partition)
            futures.append(fut)
            last[(id(table), partition)] = (table, fut)
    except Exception as exc:
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        futures.append(failed)
    for (_, partition), (table, fut) in last.items():  # each partition's records land in order
        fut.add_done_callback(functools.partial(table.persisted, partition))
    return futures


def declare_table(app: Any, settings: Any, name: str, help_text: str, partitions: int) -> Any:
    """A bytes -> bytes tracked table on `app`, with bounded RocksDB memory and changelog
    records up to our record size (the dedup and stories agents' state)."""
    return app.tables.add(
        _tracked_table_class()(
            app,
            name=name,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            beacon=app.tables.beacon,
            help=help_text,
            options=dict(ROCKSDB_OPTIONS),
            extra_topic_configs={"max.message.bytes": str(settings.max_message_bytes)},
        )
    )


def state_entries(table: Any) -> int:
    """Entries of a table on this worker's active partitions, without a scan: RocksDB's own
    estimate per partition database, or the dict's length for memory://."""
    store = table.data
    actives = getattr(store, "_dbs_for_actives", None)  # Faust's RocksDB store
    if actives is None:
        return len(store)
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in actives())


@dataclass
class DedupAgents:
    router: DedupRouter
    stats: DedupStats
    tables: dict[str, Any]
    agents: tuple[Any, ...]


def attach_dedup_agents(app: Any, topics: dict[str, Any], settings: Any) -> DedupAgents:
    """Declare the dedup tables and the `dedup-claims` / `dedup-gather` agents on `app`.

    `topics` maps roles to Faust topics: GATHER, CLAIMS (internal), ARTICLES, DUPLICATES and
    "dead_letter", and STORIES when stories are on (canonical articles then go there).
    Returns the router the enrich agent hands its articles to."""
    from faust.streams import _current_event  # Faust's own "event being processed" context

    from streams import metrics
    from streams.topics import worker_name

    cfg: DedupConfig = settings.dedup_config
    partitions = settings.partitions
    stats = DedupStats()
    def table(name: str, help_text: str):
        return declare_table(app, settings, name, help_text, partitions)

    tables = {
        "url": table("dedup-url-owners", "URL key -> id of the article that claimed it first"),
        "exact": table("dedup-exact-owners", "text fingerprint -> id of its first article"),
        "near": table("dedup-band-members", "LSH band key -> member ids, in arrival order"),
        "records": table("dedup-articles", "article id -> order key, signature, verdict"),
        "waiting": table("dedup-waiting", "article id + input -> article awaiting its verdict"),
    }
    claims = ClaimsCore(tables["url"], tables["exact"], tables["near"], cfg, partitions)
    worker = worker_name()
    gather = GatherCore(tables["records"], tables["waiting"], cfg, partitions, worker, stats,
                        stories=STORIES in topics)  # fmt: skip

    async def durable(own: Sequence[Any]) -> None:
        """Wait until the changelog records of the agent's own tables are acknowledged (the
        other agent runs concurrently and waits for its own)."""
        await _deliver_or_exit(await changelog_futures(own), "changelog")

    claim_tables = (tables["url"], tables["exact"], tables["near"])
    gather_tables = (tables["records"], tables["waiting"])

    async def run_batch(events: Sequence[Any], agent: str, handle: Callable[[Any], list],
                        own: Sequence[Any], core: GatherCore | None = None) -> None:  # fmt: skip
        """Handle `events` (each with its partition's tables), make the state durable, send
        what it decided and wait for the acknowledgements; then confirm the gather outboxes."""
        sends: list[Send] = []
        sent_by: dict[str, Any] = {}  # gather: id -> the event whose partition holds its state
        for event in events:
            token = _current_event.set(weakref.ref(event))  # table I/O goes to its partition
            try:
                sends.extend(handle(event.message))
            except Exception:  # a bug: logged with where it came from; the batch goes on
                stats.errors += 1
                m = event.message
                log.exception("%s crashed on %s[%d]@%d", agent, m.topic, m.partition, m.offset)
            finally:
                _current_event.reset(token)
            for ident in core.unconfirmed if core else ():
                sent_by.setdefault(ident, event)
        await durable(own)
        for s in await deliver_outcomes(topics, sends, agent, worker):
            if s.outcome is not None:
                metrics.METRICS.record_outcome(s.outcome, produced_at=s.produced_at)
        if core is not None and sent_by:
            for ident, event in sent_by.items():
                token = _current_event.set(weakref.ref(event))
                try:
                    core.confirm(ident)
                except Exception:  # a bug: the outbox is sent again on the next message
                    stats.errors += 1
                    log.exception("%s could not confirm %s", agent, ident)
                finally:
                    _current_event.reset(token)
            await durable(own)

    # `noack_take`, acked by hand once a batch is done: `take_events` acks its batch when the
    # agent is cancelled, and a stopping worker commits those acks (measured: inputs lost on
    # SIGTERM). Unacked, a batch cut short is handed back and replayed.
    @app.agent(topics[CLAIMS], name="dedup-claims")
    async def claim_keys(stream):
        async for events in stream.noack_take(BATCH_EVENTS, within=BATCH_WITHIN):
            stats.messages["claim"] += len(events)
            await run_batch(events, "dedup-claims", lambda m: claims.handle(m.value),
                            claim_tables)  # fmt: skip
            for event in events:
                await stream.ack(event)

    @app.agent(topics[GATHER], name="dedup-gather")
    async def gather_verdicts(stream):
        async for events in stream.noack_take(BATCH_EVENTS, within=BATCH_WITHIN):
            await run_batch(events, "dedup-gather", lambda m: gather.handle(m.value, m.headers),
                            gather_tables, gather)  # fmt: skip
            for event in events:
                await stream.ack(event)

    @app.timer(interval=10.0, name="newsflow.dedup.state_size")
    async def report_state_size() -> None:
        for kind in ("url", "exact", "near"):
            try:
                metrics.METRICS.set_dedup_state_size(kind, state_entries(tables[kind]))
            except Exception as exc:  # a failed reading must not stop the timer
                log.warning("cannot read dedup state size: %s: %s", type(exc).__name__, exc)

    return DedupAgents(
        DedupRouter(cfg, partitions, settings.max_url_chars),
        stats,
        tables,
        (claim_keys, gather_verdicts),
    )


async def deliver_outcomes(topics: dict[str, Any], sends: Sequence[Send], what: str,
                           worker: str) -> list[Send]:  # fmt: skip
    """Send `sends` and wait for every acknowledgement; returns what was delivered.

    An outcome record (article, duplicate, story input) that the broker refuses for good
    (`record_refused`: too large for the topic's limit, not authorised) is delivered as an
    `output_rejected` dead letter instead, as the enrich agent does: sending it again cannot
    help, and exiting would replay the batch into the same refusal forever. Any other failure
    (a timeout in an outage, a lost connection) exits without committing, so the batch
    replays after the restart."""
    from streams.producer import record_refused, send_all

    errors = await send_all(topics, sends)
    failed = [(r, e) for r, e in zip(sends, errors, strict=True) if e is not None]
    dead = [_rejected(r, e, worker) if record_refused(e) else None for r, e in failed]
    fatal = [e for (_, e), d in zip(failed, dead, strict=True) if d is None]
    if failed and not fatal:
        for r, e in failed:
            log.error("dedup: broker refused the %s record of %s for good (%r); dead-lettered",
                      r.role, r.key, e)  # fmt: skip
        fatal = [e for e in await send_all(topics, dead) if e is not None]
    _exit_if_refused(fatal, what)
    refused = {id(r) for r, _ in failed}
    return [r for r in sends if id(r) not in refused] + [d for d in dead if d is not None]


def _rejected(send: Send, error: BaseException, worker: str) -> Send | None:
    """The dead letter standing for a refused outcome record; None for a record that stands
    for no input (a claim, a gather message): those are the pipeline's own and small."""
    raw_ref = dict(send.headers).get(INPUT_HEADER)
    if send.role not in (ARTICLES, DUPLICATES, STORIES) or raw_ref is None:
        return None
    ref = orjson.loads(raw_ref)
    where = InputRef(ref["topic"], ref["partition"], ref["offset"])
    while isinstance(error.__cause__, BaseException):  # Faust's ProducerSendError: the why
        error = error.__cause__
    failure = Failure("output_rejected", "output", f"{type(error).__name__}: {error}"[:500])
    if isinstance(send.outcome, Article):
        url = send.outcome.url
    else:
        try:
            url = orjson.loads(send.value).get("url")
        except (orjson.JSONDecodeError, AttributeError):
            url = None
    value = dead_letter_value(where, failure, url=url, worker=worker)
    return Send("dead_letter", None, value, None, send.headers, failure, send.produced_at)


async def _deliver_or_exit(futures: list, what: str) -> None:
    """Wait for every acknowledgement; if one failed, exit without committing, so the batch
    replays after the restart (Faust would commit it if the agent raised)."""
    if not futures:
        return
    results = await asyncio.gather(*futures, return_exceptions=True)
    _exit_if_refused([r for r in results if isinstance(r, BaseException)], what)


def _exit_if_refused(errors: Sequence[BaseException], what: str) -> None:
    if errors:
        exit_without_committing(f"dedup: broker refused {len(errors)} {what} record(s) "
                                f"({errors[0]!r})")  # fmt: skip
