"""Story clustering quality on labelled news: pairwise precision, recall and F1.

    newsflow bench stories                    both sets at the default StoryConfig
    newsflow bench stories --sweep            also the grid the defaults were chosen from
    newsflow bench stories --set basil --limit 60 --json

Sets (../shared/stories, see its README; the data are read, never written):

- `basil`: 100 events x 3 outlets. Each article becomes an HTML page (<title>, <h1>, one <p>
  per paragraph, `article:published_time`) and goes through the real chain (trafilatura,
  clean, langdetect, spaCy), so extraction and tagging noise are part of the test.
- `uci`: 6,365 Google News headlines in 87 stories, titles only. Each becomes a tiny HTML page
  holding just the headline, fetched at its TIMESTAMP; a headline is shorter than the clean
  stage's `min_chars`, so that one cap is lowered for this set (as a headline feed would).

Articles are clustered in time order (ties by article id: never grouped by label), and every
article counts: one the chain rejects is a story of its own, so it costs recall. Pairwise
scores follow the README: over all pairs of articles, precision = pairs put together that
share a label / pairs put together; recall = pairs sharing a label put together / pairs
sharing a label.
"""

from __future__ import annotations

import argparse
import csv
import html
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agents.pipeline import Enricher, PipelineConfig
from agents.records import Article, Failure, RawPage
from agents.stories import StoryConfig, StoryIndex, article_time, features

STORIES_DIR = Path(__file__).resolve().parents[3] / "shared" / "stories"
SETS = ("basil", "uci")
BATCH = 32
HEADLINE_MIN_CHARS = 10  # the clean stage's min_chars for the headline set

# The grids behind StoryConfig's defaults (`--sweep`): each varies one or two knobs around the
# defaults and is scored on the sets those knobs act on (thresholds and weights for articles
# with a lead only move BASIL; the headline knobs only move UCI).
SWEEPS: tuple[tuple[dict[str, Sequence[Any]], tuple[str, ...]], ...] = (
    ({"threshold": (0.1, 0.15, 0.2), "off_subject_threshold": (0.15, 0.2, 0.23, 0.25, 0.3)},
     ("basil",)),
    ({"decay_hours": (48.0, 72.0, 96.0, 1e9), "subject_entities": (1, 3, 5, 10)}, ("basil",)),
    ({"entity_weight": (0.5, 1.0, 2.0), "title_weight": (0.5, 1.0, 2.0)}, ("basil",)),
    ({"headline_threshold": (0.06, 0.08, 0.1, 0.12), "headline_entity_weight": (0.0, 0.25, 0.5)},
     ("uci",)),
    ({"window_hours": (48.0, 72.0, 96.0, 144.0)}, ("basil", "uci")),
    ({"decay_hours": (24.0, 48.0, 72.0, 1e9)}, ("uci",)),
    ({"centroid_articles": (1, 5, 20, 100, 1000)}, ("basil", "uci")),
)


@dataclass(frozen=True, slots=True)
class Labelled:
    """One test page and the story it belongs to."""

    label: str
    page: RawPage


@dataclass(frozen=True, slots=True)
class PairScore:
    precision: float
    recall: float
    f1: float
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int
    stories: int
    labels: int


# --- rendering the data sets as pages ---------------------------------------------------------


def render_article_page(title: str, paragraphs: Iterable[str], published: str) -> str:
    """A minimal news page: what a publisher's template leaves once the chrome is gone."""
    t = html.escape(title.strip())
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p.strip())
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{t}</title>"
        f"<meta property=\"article:published_time\" content=\"{html.escape(published)}\">"
        f"</head><body><article><h1>{t}</h1>\n{body}\n</article></body></html>"
    )


def basil_items(folder: Path | None = None, limit: int | None = None) -> list[Labelled]:
    """BASIL articles as pages, labelled by triplet (event); `limit` keeps whole triplets."""
    folder = folder or STORIES_DIR / "basil"
    items: list[Labelled] = []
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        paragraphs = [" ".join(group) for group in doc.get("body-paragraphs") or []]
        body = render_article_page(doc["title"], paragraphs, doc["date"])
        page = RawPage(url=doc["url"], body=body.encode("utf-8"), source=f"basil/{path.name}")
        items.append(Labelled(doc["triplet-uuid"], page))
    if limit is not None:
        keep = sorted({i.label for i in items})[: max(1, limit // 3)]
        items = [i for i in items if i.label in keep]
    return items


def uci_items(path: Path | None = None, limit: int | None = None) -> list[Labelled]:
    """UCI headlines as title-only pages fetched at their TIMESTAMP, labelled by STORY.

    `limit` keeps every k-th row in time order, so all stories stay represented."""
    path = path or STORIES_DIR / "uci-headlines.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (int(r["TIMESTAMP"]), r["ID"]))
    if limit is not None and limit < len(rows):
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    items = []
    for row in rows:
        when = datetime.fromtimestamp(int(row["TIMESTAMP"]) / 1000, UTC).isoformat()
        page = RawPage(
            url=row["URL"],
            body=render_article_page(row["TITLE"], [row["TITLE"]], when).encode("utf-8"),
            fetched_at=when,
            source=f"uci/{row['ID']}",
        )
        items.append(Labelled(row["STORY"], page))
    return items


def pipeline_for(name: str, base: PipelineConfig | None = None) -> PipelineConfig:
    base = base or PipelineConfig()
    if name == "uci":
        return replace(base, clean=replace(base.clean, min_chars=HEADLINE_MIN_CHARS))
    return base


def enrich_items(
    items: Sequence[Labelled], config: PipelineConfig, progress: bool = False
) -> list[Article | Failure]:
    """Run the real chain over the pages, in batches; the list is parallel to `items`."""
    from tqdm import tqdm

    enricher = Enricher(config)
    out: list[Article | Failure] = []
    with tqdm(total=len(items), desc="enrich", unit="page", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            out.extend(enricher.enrich_many([i.page for i in batch]))
            bar.update(len(batch))
    return out


# --- clustering and scoring --------------------------------------------------------------------


def time_order(outcomes: Sequence[Article | Failure]) -> list[int]:
    """Indexes of the articles by article time, ties by article id (never by label)."""
    keyed = [
        (article_time(o) or 0.0, o.id, i) for i, o in enumerate(outcomes) if isinstance(o, Article)
    ]
    return [i for _, _, i in sorted(keyed)]


def assign_stories(outcomes: Sequence[Article | Failure], config: StoryConfig) -> list[str]:
    """Story id per input (a rejected page or an article without time gets its own)."""
    predicted = [f"unassigned-{i}" for i in range(len(outcomes))]
    index = StoryIndex(config)
    for i in time_order(outcomes):
        feats = features(outcomes[i], config)
        if not isinstance(feats, Failure):
            predicted[i] = index.add(feats).story_id
    return predicted


def assign_streaming(outcomes: Sequence[Article | Failure], config: StoryConfig) -> list[str]:
    """`assign_stories` as the stories agent runs it: `StoryAssigner` over write-behind views
    of bytes tables (dicts here, Faust tables there), flushed once per agent batch."""
    from agents.stories_agent import BATCH_EVENTS, StoryAssigner

    predicted = [f"unassigned-{i}" for i in range(len(outcomes))]
    assigner = StoryAssigner(config, {}, {}, {}, {})
    for n, i in enumerate(time_order(outcomes), 1):
        placed = assigner.place(outcomes[i])
        if not isinstance(placed, Failure):
            predicted[i] = placed.story_id
        if n % BATCH_EVENTS == 0:
            assigner.flush()
    assigner.flush()
    return predicted


def pairwise(labels: Sequence[str], predicted: Sequence[str]) -> PairScore:
    """Pairwise precision/recall/F1 from cluster sizes (no pair enumeration)."""

    def pairs(counts: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counts.values())

    correct = pairs(Counter(zip(labels, predicted, strict=True)))
    made, true = pairs(Counter(predicted)), pairs(Counter(labels))
    precision = correct / made if made else 1.0
    recall = correct / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScore(
        round(precision, 4), round(recall, 4), round(f1, 4), made, true, correct,
        len(set(predicted)), len(set(labels)),
    )


def sweep_rows(
    sets: dict[str, tuple[list[str], list[Article | Failure]]], base: StoryConfig
) -> list[dict]:
    """Score every grid point of `SWEEPS` on the sets it applies to (of those loaded)."""
    rows = []
    for grid, names in SWEEPS:
        names = tuple(n for n in names if n in sets)
        if not names:
            continue
        knobs = list(grid)
        for values in itertools.product(*(grid[k] for k in knobs)):
            config = replace(base, **dict(zip(knobs, values, strict=True)))
            row: dict[str, Any] = {"knobs": dict(zip(knobs, values, strict=True))}
            for name in names:
                labels, outcomes = sets[name]
                row[name] = asdict(pairwise(labels, assign_stories(outcomes, config)))
            rows.append(row)
    return rows


# --- command ---------------------------------------------------------------------------------


def cmd_bench_stories(args: argparse.Namespace, settings: Any) -> int:
    base_pipeline = settings.pipeline if settings is not None else PipelineConfig()
    config = StoryConfig()
    report: dict[str, Any] = {"config": asdict(config), "sets": {}}
    loaded: dict[str, tuple[list[str], list[Article | Failure]]] = {}
    for name in args.set or SETS:
        items = basil_items(limit=args.limit) if name == "basil" else uci_items(limit=args.limit)
        start = time.perf_counter()
        outcomes = enrich_items(items, pipeline_for(name, base_pipeline), progress=not args.json)
        enrich_s = time.perf_counter() - start
        labels = [i.label for i in items]
        start = time.perf_counter()
        predicted = assign_stories(outcomes, config)
        cluster_s = time.perf_counter() - start
        start = time.perf_counter()
        streamed = assign_streaming(outcomes, config)
        stream_s = time.perf_counter() - start
        rejected = Counter(o.reason for o in outcomes if isinstance(o, Failure))
        report["sets"][name] = {
            **asdict(pairwise(labels, predicted)),
            "articles": len(items),
            "rejected": dict(rejected),
            "enrich_seconds": round(enrich_s, 2),
            "cluster_seconds": round(cluster_s, 3),
            "articles_per_second": round(len(items) / cluster_s, 1) if cluster_s else None,
            # the stories agent's core: same ids (checked), with its serialised state
            "agent_core_same_stories": streamed == predicted,
            "agent_core_articles_per_second": round(len(items) / stream_s, 1) if stream_s else None,
        }
        loaded[name] = (labels, outcomes)
    if args.sweep:
        report["sweep"] = sweep_rows(loaded, config)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{'set':<6} {'articles':>8} {'stories':>7} {'labels':>6} {'P':>6} {'R':>6} {'F1':>6}"
          f" {'rejected':>8} {'clustered/s':>11} {'agent core/s':>12}")
    for name, r in report["sets"].items():
        print(f"{name:<6} {r['articles']:>8} {r['stories']:>7} {r['labels']:>6}"
              f" {r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f}"
              f" {sum(r['rejected'].values()):>8} {r['articles_per_second']:>11}"
              f" {r['agent_core_articles_per_second']:>12}"
              + ("" if r["agent_core_same_stories"] else "  AGENT CORE DIFFERS"))
    for row in report.get("sweep", []):
        knobs = " ".join(f"{k}={v:g}" for k, v in row["knobs"].items())
        scores = "  ".join(
            f"{n}: P={row[n]['precision']:.4f} R={row[n]['recall']:.4f} F1={row[n]['f1']:.4f}"
            for n in SETS
            if n in row
        )
        print(f"{knobs:<48} {scores}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `stories` under `newsflow bench`."""
    p = subparsers.add_parser("stories", help="story clustering pairwise P/R/F1 on BASIL and UCI")
    p.add_argument("--set", action="append", choices=SETS, help="only this set (repeatable)")
    p.add_argument("--limit", type=int, help="at most N articles per set (whole BASIL triplets)")
    p.add_argument("--sweep", action="store_true", help="also score the grid behind the defaults")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_bench_stories)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="newsflow bench")
    add_parser(parser.add_subparsers(dest="what", required=True))
    args = parser.parse_args(["stories", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args, None)


if __name__ == "__main__":
    sys.exit(main())
