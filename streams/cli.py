"""The `newsflow` command line.

    newsflow enrich PATH... [--url URL]   enrich files/folders in-process, JSON lines on stdout
    newsflow bench stages [PATH...]       per-stage time over a folder of pages (default: corpus)

Commands that talk to Kafka live beside these and import their Kafka code only when run, so
`enrich` works on a machine with no broker at all.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson

from agents.records import Article, Failure, RawPage
from streams.settings import Settings, SettingsError
from streams.sources import SourceError, iter_pages

BATCH = 16


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="page", file=sys.stderr, disable=not enabled, leave=False)


def _count_inputs(paths: list[str]) -> int:
    from streams.sources import iter_page_files

    return sum(1 for _ in iter_page_files(paths))


def _batched(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def enrich_outcomes(
    paths: list[str], settings: Settings, url: str | None = None, progress: bool = False
) -> Iterator[tuple[str, Article | Failure]]:
    """Yield `(source, outcome)` for every input, in input order, with one model load."""
    from agents.pipeline import Enricher

    enricher = Enricher(settings.pipeline)
    total = _count_inputs(paths) if progress else None
    bar = _progress(total, "enrich", progress and (total or 0) > 1)
    pages = iter_pages(paths, url=url, max_bytes=settings.max_page_bytes)
    try:
        for batch in _batched(pages, BATCH):
            good: list[RawPage] = [p for p in batch if isinstance(p, RawPage)]
            results = iter(enricher.enrich_many(good))
            for item in batch:
                if isinstance(item, SourceError):
                    yield item.source, item.failure
                else:
                    yield item.source, next(results)
            bar.update(len(batch))
    finally:
        bar.close()


def outcome_json(source: str, outcome: Article | Failure) -> dict:
    if isinstance(outcome, Failure):
        return {"source": source, **outcome.to_dict()}
    return outcome.to_dict()


def cmd_enrich(args: argparse.Namespace, settings: Settings) -> int:
    if args.url and len(args.paths) != 1:
        print("newsflow enrich: --url applies to a single input file", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    counts: Counter[str] = Counter()
    for source, outcome in enrich_outcomes(args.paths, settings, args.url, progress=True):
        counts["article" if isinstance(outcome, Article) else outcome.reason] += 1
        out.write(orjson.dumps(outcome_json(source, outcome)) + b"\n")
    out.flush()
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"newsflow enrich: {sum(counts.values())} inputs: {summary}", file=sys.stderr)
    return 0


def default_corpus() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def cmd_bench_stages(args: argparse.Namespace, settings: Settings) -> int:
    from agents.pipeline import STAGES, Enricher

    paths = args.paths or [str(default_corpus())]
    enricher = Enricher(settings.pipeline)
    enricher.tagger.load()  # model load is set-up, not per-page cost
    n = 0
    start = time.perf_counter()
    outcomes: Counter[str] = Counter()
    pages = [p for p in iter_pages(paths, max_bytes=settings.max_page_bytes) if isinstance(p, RawPage)]
    read = time.perf_counter()
    for batch in _batched(iter(pages), BATCH):
        for outcome in enricher.enrich_many(batch):
            outcomes["article" if isinstance(outcome, Article) else outcome.reason] += 1
        n += len(batch)
    wall = time.perf_counter() - read
    report = {
        "pages": n,
        "outcomes": dict(outcomes),
        "read_seconds": round(read - start, 3),
        "wall_seconds": round(wall, 3),
        "pages_per_second": round(n / wall, 2) if wall else None,
        "stages": {
            s: {
                "seconds": round(enricher.seconds[s], 3),
                "calls": enricher.calls[s],
                "ms_per_page": round(1000 * enricher.seconds[s] / max(enricher.calls[s], 1), 2),
                "share": round(enricher.seconds[s] / wall, 3) if wall else None,
            }
            for s in STAGES
        },
    }
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{n} pages in {wall:.2f}s = {report['pages_per_second']} pages/s  outcomes: {dict(outcomes)}")
    print(f"{'stage':<10} {'seconds':>9} {'ms/page':>9} {'share':>7}")
    for s, row in report["stages"].items():
        print(f"{s:<10} {row['seconds']:>9.2f} {row['ms_per_page']:>9.1f} {row['share']:>7.1%}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enrich", help="enrich files/folders in-process; JSON lines on stdout")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--url", help="the page's URL (single input file only)")
    p.set_defaults(func=cmd_enrich)

    bench = sub.add_parser("bench", help="measure throughput").add_subparsers(dest="what", required=True)
    p = bench.add_parser("stages", help="in-process time per stage over a folder of pages")
    p.add_argument("paths", nargs="*", metavar="PATH", help="default: ../shared/corpus")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_bench_stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"newsflow: {exc}", file=sys.stderr)
        return 2
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
