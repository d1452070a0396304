"""Deduplication core: canonical URLs, exact fingerprints, MinHash-LSH near-duplicates, and the
decision rules the in-process `Deduper` and the streaming agents share. Pure: no Kafka, no Faust.

An article is checked in a fixed order and the first match wins:

1. `url`   - same `canonical_url` (tracking parameters, fragment, default port ... removed);
2. `exact` - same `fingerprint` of the normalised text;
3. `near`  - MinHash signatures that share an LSH band and whose estimated Jaccard similarity
   is at least `DedupConfig.threshold`.

URL and exact keys are single keys: whoever owns the key decides first-come (`claim`). Near
duplicates are found through many band keys that, in the streaming version, live on different
partitions; `decide` is the rule that keeps "exactly one canonical article per group of mutually
similar articles" true whatever the arrival order at each band owner (see its docstring).

Texts with fewer than `min_shingles` word shingles get no signature: only URL and exact
deduplication apply to them (a MinHash estimate over a handful of shingles is noise).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson

VerdictKind = Literal["url", "exact", "near"]


@dataclass(frozen=True)
class TextNorm:
    """How text is normalised before fingerprinting and shingling.

    NFKC + casefold make typographic variants (ligatures, full-width forms, case) equal;
    tokens are runs of letters/digits, so punctuation and whitespace never matter. Accent and
    digit folding are off: "résumé"/"resume" or "20 dead"/"30 dead" are different texts.
    """

    form: Literal["NFC", "NFKC"] = "NFKC"
    casefold: bool = True
    strip_accents: bool = False
    fold_digits: bool = False


@dataclass(frozen=True)
class DedupConfig:
    """Deduplication settings; the defaults are chosen by measurement.

    Measured with `newsflow bench dedup --articles 0 --sweep` (seed 7; texts through the
    pipeline's extract and clean): 106 corpus originals with 424 copies (syndicated into
    another site's HTML and re-extracted, ~5 % of words edited, truncated to 60-90 %, truncated
    and edited) against 343k negative pairs, including 300 BASIL pairs of two outlets'
    write-ups of one event and 15k pairs of pages of one site. Near-dup precision/recall over
    (copy, original) pairs, LSH banding included:

        threshold                       0.30       0.35       0.40       0.45       0.50
        3-word, 120 perm, 40 x 3     1.00/1.00  1.00/.998  1.00/.995  1.00/.993  1.00/.979
        3-word, 128 perm, 32 x 4     1.00/.986  1.00/.986  1.00/.986  1.00/.979  1.00/.953
        4-word, 120 perm, 40 x 3     1.00/.998  1.00/.993  1.00/.988  1.00/.984  1.00/.922
        5-word, 120 perm, 40 x 3     1.00/.995  1.00/.993  1.00/.981  1.00/.951  1.00/.899
        5-word,  64 perm, 32 x 2     .998/.993  1.00/.991  1.00/.972  1.00/.936  1.00/.882

    The most similar negatives are the same-event write-ups (0.26 at 3-word shingles); copies
    that are truncated *and* edited are the least similar positives (0.33). 0.4 sits between
    them with room for MinHash noise (sd ~0.045 at J=0.4 with 120 permutations). Shorter
    shingles keep edited copies similar (one changed word breaks k shingles). 40 bands of 3 rows
    put the LSH S-curve's midpoint at (1/40)^(1/3) = 0.29, below the threshold: a pair at
    J=0.4 becomes a candidate with p=0.93, at 0.5 with p=0.995, while 32 x 4 (midpoint 0.42)
    misses pairs just above the threshold. Seeds 8 and 9: precision 1.0, recall 0.998 / 1.0.
    """

    num_perm: int = 120
    bands: int = 40
    shingle_words: int = 3
    threshold: float = 0.4
    min_shingles: int = 8
    seed: int = 1
    max_band_members: int = 100
    max_text_chars: int = 1_000_000
    max_url_chars: int = 4_096
    max_id_chars: int = 256
    norm: TextNorm = field(default_factory=TextNorm)

    def __post_init__(self) -> None:
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(
                f"num_perm={self.num_perm} must be a positive multiple of bands={self.bands}"
            )
        if self.shingle_words < 1 or self.min_shingles < 1:
            raise ValueError("shingle_words and min_shingles must be positive")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1]")
        if self.max_band_members < 1:
            raise ValueError("max_band_members must be positive")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


# ----------------------------------------------------------------------------------------- URLs

# Beyond courlan's tracker list (utm_*, fbclid, gclid, mc_*, ref, source, ...): parameters that
# news sites and share buttons add and that never select different content.
EXTRA_TRACKING_PARAMS = frozenset(
    {"cmpid", "icid", "ocid", "smid", "smtyp", "s_cid", "mbid", "share", "soc_src", "soc_trk",
     "spm", "__twitter_impression", "amp", "outputtype"}
)  # fmt: skip


def canonical_url(url: str | None, max_chars: int = 4_096) -> str:
    """The URL-dedup key: courlan's scrub + normalise (scheme/host case, punycode, default port,
    repeated `/`, sorted query without tracking parameters), then `.`/`..` segments resolved
    and the fragment, the extra tracking parameters above and a trailing slash removed; an
    empty path becomes `/`. Returns "" for anything that is not an absolute http(s) URL or is
    longer than `max_chars`, so junk never claims a key. Scheme and `www.` are kept: they can
    differ in content, and exact/near dedup catch the copies anyway.
    """
    from courlan import clean_url

    if not url or len(url) > max_chars:
        return ""
    cleaned = clean_url(url)
    if not cleaned:
        return ""
    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    query = "&".join(
        p
        for p in parts.query.split("&")
        if p and p.split("=", 1)[0].lower() not in EXTRA_TRACKING_PARAMS
    )
    path = posixpath.normpath(parts.path) if parts.path not in ("", "/") else "/"
    path = "/" + path.lstrip("/")  # normpath keeps a leading "//"; "." and ".." are resolved
    netloc = parts.netloc.rstrip(".")
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def url_key(url: str | None, declared_canonical: str | None, max_chars: int = 4_096) -> str:
    """One URL key per article: the page's declared canonical URL when usable, else the fetched
    URL. A declared canonical pointing at a site's home page (a common misconfiguration that
    would make every page of the site one "duplicate") is ignored.

    One key, not both: two keys per article would be two independent first-come claims, and two
    articles could each win one of them and both end up duplicates.
    """
    declared = canonical_url(declared_canonical, max_chars)
    if declared and urlsplit(declared).path not in ("", "/"):
        return declared
    return canonical_url(url, max_chars)


# ----------------------------------------------------------------------------------------- text

# Scripts written without spaces: every character is a token, so shingles still mean something.
_NO_SPACE = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_NO_SPACE}]|[^\W{_NO_SPACE}]+")
_DIGIT_RE = re.compile(r"\d")


def tokens(text: str, norm: TextNorm | None = None, max_chars: int = 1_000_000) -> list[str]:
    """Normalised word tokens of `text` (at most `max_chars` characters of it are read)."""
    norm = norm or TextNorm()
    text = unicodedata.normalize(norm.form, text[:max_chars])
    if norm.casefold:
        text = text.casefold()
    if norm.strip_accents:
        decomposed = unicodedata.normalize("NFD", text)
        text = unicodedata.normalize(
            "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
        )
    if norm.fold_digits:
        text = _DIGIT_RE.sub("0", text)
    return _TOKEN_RE.findall(text)


def fingerprint_tokens(toks: Sequence[str]) -> str:
    """The exact-duplicate key of already normalised tokens; "" when there are none."""
    if not toks:
        return ""
    return hashlib.blake2b(
        " ".join(toks).encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


def fingerprint(text: str, norm: TextNorm | None = None, max_chars: int = 1_000_000) -> str:
    """Exact-duplicate key: 128-bit hash of the normalised token sequence ("" for no words)."""
    return fingerprint_tokens(tokens(text, norm, max_chars))


# ------------------------------------------------------------------------------------- MinHash


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations


def _identity(value: int) -> int:
    return value


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def shingle_hashes(toks: Sequence[str], k: int) -> np.ndarray:
    """Distinct 32-bit hashes of the k-word shingles (sorted uint32 array).

    Each token is hashed once (CRC-32, C speed) and the k hashes of a shingle are chained
    through a 64-bit mixer with numpy, instead of hashing each shingle's string: 3.4x faster
    than SHA-1 per shingle (one run, 300 texts) and just as stable across processes.
    """
    n = len(toks) - k + 1
    if n <= 0:
        return np.empty(0, np.uint32)
    joined = "\x00".join(toks).encode("utf-8", "surrogatepass")  # tokens never hold NUL
    th = np.fromiter(map(zlib.crc32, joined.split(b"\x00")), np.uint64, len(toks))
    h = np.zeros(n, np.uint64)
    for j in range(k):
        h = _mix64(h * _GOLDEN + th[j : j + n])
    return np.unique((h >> np.uint64(32)).astype(np.uint32))


def signature_from_tokens(toks: Sequence[str], cfg: DedupConfig) -> np.ndarray | None:
    """MinHash hash values (uint32, `cfg.num_perm` of them; datasketch's affine32 scheme with
    fixed seed) over the word shingles, or None when there are fewer than `cfg.min_shingles`
    distinct shingles."""
    from datasketch import MinHash

    grams = shingle_hashes(toks, cfg.shingle_words)
    if len(grams) < cfg.min_shingles:
        return None
    mh = MinHash(
        num_perm=cfg.num_perm,
        seed=cfg.seed,
        hashfunc=_identity,
        permutations=_permutations(cfg.num_perm, cfg.seed),
        scheme="affine32",
    )
    mh.update_batch(grams.tolist())
    return mh.hashvalues.astype("<u4", copy=False)


def signature(text: str, cfg: DedupConfig | None = None) -> np.ndarray | None:
    """MinHash signature of `text`, or None if it is too short for near-duplicate detection."""
    cfg = cfg or DedupConfig()
    return signature_from_tokens(tokens(text, cfg.norm, cfg.max_text_chars), cfg)


def band_keys(sig: np.ndarray, cfg: DedupConfig | None = None) -> list[str]:
    """LSH band keys "b{i}:{16 hex}": article pairs that share a key are near-dup candidates.

    Stable across processes and machines (blake2b of the band's rows, little-endian), so they
    can be Kafka keys: each band key then lives on exactly one partition.
    """
    cfg = cfg or DedupConfig()
    rows = np.ascontiguousarray(sig, dtype="<u4").reshape(cfg.bands, cfg.rows)
    return [
        f"b{i}:{hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest()}"
        for i, row in enumerate(rows)
    ]


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the share of equal MinHash values. Symmetric, so both sides
    of a pair always reach the same number."""
    if len(sig_a) != len(sig_b):
        raise ValueError(
            f"signatures of different lengths ({len(sig_a)} vs {len(sig_b)}): configs differ"
        )
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)


def sig_to_bytes(sig: np.ndarray) -> bytes:
    """Compact wire/state form: the raw little-endian uint32 values (4 bytes per permutation)."""
    return np.ascontiguousarray(sig, dtype="<u4").tobytes()


def sig_from_bytes(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise ValueError(f"signature bytes length {len(data)} is not a multiple of 4")
    return np.frombuffer(data, dtype="<u4").copy()


# ---------------------------------------------------------------------------------- decisions


def order_key(fetched_at: str | None, article_id: str) -> str:
    """Deterministic total order for tie-breaks: UTC fetch time (fixed width, so it sorts as a
    string), then the id. A missing or unparseable time sorts after every real one."""
    stamp = "~"
    if fetched_at:
        try:
            moment = datetime.fromisoformat(fetched_at.strip())
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}|{article_id}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why an article is a duplicate, and of which article (its canonical, or a duplicate whose
    chain of `duplicate_of` ends at the canonical)."""

    kind: VerdictKind
    duplicate_of: str
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "duplicate_of": self.duplicate_of, "similarity": self.similarity}


class MutableStore(Protocol):
    def get(self, key: Any, default: Any = None) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...


def claim(store: MutableStore, key: Any, me: Any) -> Any:
    """First-come ownership of a single key (URL or exact fingerprint): returns the winner.

    The key's owner processes claims one at a time (one partition, or one process), so there is
    exactly one winner per key. Replaying a claim returns the same winner.
    """
    winner = store.get(key)
    if winner is None:
        store[key] = me
        return me
    return winner


def band_register(
    members: Sequence[str], article_id: str, cap: int
) -> tuple[tuple[str, ...], bool, tuple[str, ...] | None]:
    """What a band owner does with one registration: `(present, saturated, new_members)`.

    `present` are the members that arrived before `article_id` (its candidates at this band);
    `saturated` says the band was full on arrival, so the article was not added; `new_members`
    is the list to store, or None if unchanged. Members are kept in arrival order, so a replayed
    registration gets exactly the reply of the first one.
    """
    if article_id in members:
        return tuple(members[: members.index(article_id)]), False, None
    if len(members) >= cap:
        return tuple(members), True, None
    return tuple(members), False, (*members, article_id)


@dataclass(frozen=True, slots=True)
class Probe:
    """The article being decided: its signature, order key and the bands whose owner said
    "full" (`saturated`) when it registered."""

    id: str
    order_key: str
    signature: np.ndarray
    saturated: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    """An article some band owner reported as present before the probe arrived.

    `present`: indices of the bands where it was present; `canonical`: its final near-dup
    outcome if known (True: not a duplicate, False: a duplicate, None: not decided yet or not
    looked up).
    """

    id: str
    order_key: str
    signature: np.ndarray
    present: frozenset[int]
    canonical: bool | None = None


@dataclass(frozen=True, slots=True)
class Pending:
    """`decide` cannot answer before these candidates' own verdicts are known."""

    waiting_for: tuple[str, ...]


def decide(
    me: Probe, candidates: Iterable[Candidate], cfg: DedupConfig | None = None
) -> Verdict | Pending | None:
    """The near-duplicate decision: a Verdict, None (canonical), or Pending.

    Setting: the probe registered at the owner of each of its band keys; each owner handles one
    registration at a time and replied with the members present before it. For a pair X, Y
    sharing bands S, at every band of S exactly one of them came first and the other sees it.

    The rule first proposed ("Y present at all of S: X loses; at some: larger order key loses;
    at none: X never saw Y") gives exactly one loser per *pair*, but not one canonical per
    *group*: with three articles whose shared band sets are disjoint and owners that saw A<B,
    B<C and C<A, every article loses to the one it saw and the group has no canonical. No rule
    can fix this from the replies alone (A's replies are the same as in a world without B, where
    A must lose to C). What breaks the cycle is a global order plus one look-up. For each
    verified-similar candidate Y (similarity >= threshold):

    * Y older (smaller order key): X loses. Whether Y won or lost, X is part of its group.
    * Y younger and present at only some shared bands: X was first somewhere, so Y saw X
      and loses to it (rule 1 on Y's side); X ignores Y.
    * Y younger and present at all shared bands: Y never saw X and decided without it, so
      X loses iff Y turned out canonical; if that is not known yet, the answer is Pending.

    Why it holds: per pair, if X (older) was first anywhere Y loses, else X defers to Y's
    outcome, so two similar articles are never both canonical. The oldest member of a group can
    only lose to a canonical, so a group never has zero canonicals. A wait always goes from an
    older to a younger article, so waits cannot form a cycle and always finish. Every
    `duplicate_of` points to an older article or to a canonical, so following it ends at the
    group's canonical. In one process every earlier article is present at all shared bands
    and its outcome is known, so this is never Pending there.

    A band that was full for both (`max_band_members`) is not counted as shared; both sides
    see the same full bands, so they still agree. A pair that shares only full bands is not
    compared: that is the price of bounding the state.
    """
    cfg = cfg or DedupConfig()
    mine = band_keys(me.signature, cfg)
    me_rank = (me.order_key, me.id)
    losses: list[tuple[float, tuple[str, str], str]] = []
    waits: list[str] = []
    for cand in candidates:
        if cand.id == me.id:
            continue
        sim = similarity(me.signature, cand.signature)
        if sim < cfg.threshold:
            continue
        theirs = band_keys(cand.signature, cfg)
        shared = {i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a == b}
        effective = shared - (me.saturated - cand.present)
        present = cand.present & effective
        if not present:
            continue
        rank = (cand.order_key, cand.id)
        if rank < me_rank:
            losses.append((sim, rank, cand.id))
        elif present == effective:
            if cand.canonical is None:
                waits.append(cand.id)
            elif cand.canonical:
                losses.append((sim, rank, cand.id))
    if losses:
        sim, _, winner = min(losses, key=lambda loss: (-loss[0], loss[1]))
        return Verdict("near", winner, sim)
    if waits:
        return Pending(tuple(sorted(waits)))
    return None


# ---------------------------------------------------------------------------- in-process store


class Store(Protocol):
    """What `Deduper` needs from its state: str keys, bytes values, and one atomic write of
    everything a check changed."""

    def get(self, key: str, default: None = None) -> bytes | None: ...

    def write_many(self, items: dict[str, bytes]) -> None: ...


class MemoryStore(dict):
    """State in a dict: for small batch runs and tests."""

    def write_many(self, items: dict[str, bytes]) -> None:
        self.update(items)

    def close(self) -> None:
        """Nothing to release; here so both stores can be used the same way."""

    def disk_bytes(self) -> int:
        return 0


class RocksStore:
    """State on disk in RocksDB (rocksdict, raw bytes): memory stays flat as articles grow.

    Block cache and memtables are bounded (`cache_mb`, `write_buffer_mb`). Most look-ups are
    of band keys never seen before, so bloom filters carry the load, and they and the index
    blocks stay out of the block cache, held by the table readers (~10 bits per key). Inside a
    32 MB cache they were evicted and re-read for every get once the state outgrew it:
    throughput fell from ~1000 to ~80 articles/s between 15k and 60k articles (one run each).
    """

    def __init__(self, path: str, cache_mb: int = 32, write_buffer_mb: int = 16) -> None:
        from rocksdict import BlockBasedOptions, Cache, Options, Rdict

        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(write_buffer_mb << 20)
        opts.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(cache_mb << 20))
        table.set_bloom_filter(10, False)
        opts.set_block_based_table_factory(table)
        self.path = path
        self._db = Rdict(path, options=opts)

    def get(self, key: str, default: None = None) -> bytes | None:
        return self._db.get(key.encode("utf-8", "surrogatepass"))

    def write_many(self, items: dict[str, bytes]) -> None:
        """One WriteBatch: one WAL append per article instead of ~45, and all or nothing."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in items.items():
            batch.put(key.encode("utf-8", "surrogatepass"), value)
        self._db.write(batch)

    def flush(self) -> None:
        self._db.flush()

    def memory_stats(self) -> dict[str, int]:
        """RocksDB's own accounting of the memory it holds, in bytes."""
        props = {
            "block_cache": "rocksdb.block-cache-usage",
            "memtables": "rocksdb.cur-size-all-mem-tables",
            "filters_and_indexes": "rocksdb.estimate-table-readers-mem",
        }
        return {name: self._db.property_int_value(prop) or 0 for name, prop in props.items()}

    def disk_bytes(self) -> int:
        """Bytes of the database files after flushing the memtable."""
        from pathlib import Path

        self._db.flush()
        return sum(p.stat().st_size for p in Path(self.path).rglob("*") if p.is_file())

    def close(self) -> None:
        self._db.close()


# ----------------------------------------------------------------------------------- Deduper


def _json(value: Any) -> bytes:
    """orjson.dumps, trimmed: orjson >= 3.12 returns bytes that keep a ~4 KB buffer behind a
    short value (ijl/orjson#483), which made the in-memory store hold ~136 KB per article."""
    return bytes(memoryview(orjson.dumps(value)))


def _pack(meta: dict[str, Any], sig: np.ndarray | None) -> bytes:
    head = orjson.dumps(meta)
    return len(head).to_bytes(4, "little") + head + (sig_to_bytes(sig) if sig is not None else b"")


def _unpack(data: bytes) -> tuple[dict[str, Any], np.ndarray | None]:
    size = int.from_bytes(data[:4], "little")
    meta = orjson.loads(data[4 : 4 + size])
    rest = data[4 + size :]
    return meta, (sig_from_bytes(rest) if rest else None)


def _verdict_from(meta: dict[str, Any]) -> Verdict | None:
    v = meta.get("v")
    return Verdict(v["kind"], v["duplicate_of"], v["similarity"]) if v else None


class _WriteBuffer:
    """Collects one check's writes (reads see them) so they reach the store in one batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: dict[str, bytes] = {}

    def get(self, key: str, default: None = None) -> bytes | None:
        value = self.writes.get(key)
        return value if value is not None else self.store.get(key)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes[key] = value


@dataclass
class DedupCounts:
    checked: int = 0
    replayed: int = 0
    url: int = 0
    exact: int = 0
    near: int = 0
    canonical: int = 0
    too_short: int = 0
    candidates: int = 0
    saturated_bands: int = 0


class Deduper:
    """The in-process deduplicator (`newsflow enrich --dedup`, the benchmark).

    Arrival order is total here, so `decide` sees every earlier article at all shared bands
    and is never Pending. Every article that reaches the near stage is registered in the band
    index, near duplicates included, as the streaming version must (registering is how a band
    owner answers), so a copy of a copy is still found. URL and exact duplicates stop before
    the near stage and are not indexed: an exact duplicate's text is its winner's.

    State layout (one key space, prefixes keep kinds apart): `u:<url key>` and
    `x:<fingerprint>` -> claiming id; `b:<band key>` -> member ids (JSON list, arrival order);
    `a:<id>` -> order key, verdict and signature; `m:seq` -> arrival counter. With a
    `RocksStore` the state outlives the process, so successive batch runs dedup against each
    other.
    """

    def __init__(self, cfg: DedupConfig | None = None, store: Store | None = None) -> None:
        self.cfg = cfg or DedupConfig()
        self.store: Store = store if store is not None else MemoryStore()
        self.counts = DedupCounts()
        seq = self.store.get("m:seq")  # arrival counter, kept with the state it orders
        self._seq = int(seq) if seq else 0

    def check(
        self,
        article_id: str,
        url: str | None,
        canonical_url: str | None,
        text: str,
        order_key: str | None = None,
    ) -> Verdict | None:
        """Decide whether this article duplicates one seen before, and remember it.

        `order_key` breaks ties the way the streaming version does (`order_key(fetched_at,
        id)`); without one, arrival order is used. A replayed id returns its first verdict.
        """
        article_id = article_id[: self.cfg.max_id_chars]
        self.counts.checked += 1
        seen = self.store.get("a:" + article_id)
        if seen is not None:
            self.counts.replayed += 1
            return _verdict_from(_unpack(seen)[0])
        buffer = _WriteBuffer(self.store)
        verdict = self._check(buffer, article_id, url, canonical_url, text, order_key)
        self.store.write_many(buffer.writes)
        if verdict is None:
            self.counts.canonical += 1
        else:
            setattr(self.counts, verdict.kind, getattr(self.counts, verdict.kind) + 1)
        return verdict

    def _check(
        self,
        store: _WriteBuffer,
        article_id: str,
        url: str | None,
        canonical_url: str | None,
        text: str,
        order_key: str | None,
    ) -> Verdict | None:
        cfg, counts = self.cfg, self.counts
        if order_key is None:
            self._seq += 1
            store["m:seq"] = str(self._seq).encode()
            order_key = f"{self._seq:015d}|{article_id}"
        order_key = order_key[: cfg.max_id_chars * 2]
        me = article_id.encode("utf-8", "surrogatepass")

        key = url_key(url, canonical_url, cfg.max_url_chars)
        if key:
            winner = claim(store, "u:" + key, me)
            if winner != me:
                return _remember(store, article_id, order_key, Verdict("url", winner.decode(), 1.0))

        toks = tokens(text or "", cfg.norm, cfg.max_text_chars)
        fp = fingerprint_tokens(toks)
        if fp:
            winner = claim(store, "x:" + fp, me)
            if winner != me:
                verdict = Verdict("exact", winner.decode(), 1.0)
                return _remember(store, article_id, order_key, verdict)

        sig = signature_from_tokens(toks, cfg)
        if sig is None:
            counts.too_short += 1
            return _remember(store, article_id, order_key, None)

        keys = band_keys(sig, cfg)
        present: dict[str, set[int]] = {}
        saturated: set[int] = set()
        for i, band in enumerate(keys):
            raw = store.get("b:" + band)
            members = orjson.loads(raw) if raw is not None else []
            before, full, new = band_register(members, article_id, cfg.max_band_members)
            if full:
                saturated.add(i)
            for member in before:
                present.setdefault(member, set()).add(i)
            if new is not None:  # buffered: reaches the store with the verdict, in one batch
                store["b:" + band] = _json(new)
        counts.saturated_bands += len(saturated)
        candidates = []
        for cid, bands in present.items():
            raw = store.get("a:" + cid)
            if raw is None:
                continue
            meta, csig = _unpack(raw)
            if csig is None:
                continue
            candidates.append(
                Candidate(cid, meta["k"], csig, frozenset(bands), meta.get("v") is None)
            )
        counts.candidates += len(candidates)
        verdict = decide(Probe(article_id, order_key, sig, frozenset(saturated)), candidates, cfg)
        if isinstance(verdict, Pending):  # every earlier outcome is known in one process
            raise AssertionError(f"in-process decide is never pending: {verdict}")
        return _remember(store, article_id, order_key, verdict, sig)


def _remember(
    store: _WriteBuffer,
    article_id: str,
    order_key: str,
    verdict: Verdict | None,
    sig: np.ndarray | None = None,
) -> Verdict | None:
    store["a:" + article_id] = _pack(
        {"k": order_key, "v": verdict.to_dict() if verdict else None}, sig
    )
    return verdict
