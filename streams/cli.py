"""The `newsflow` command line.

    newsflow demo [PATH...] [--json]      the streaming path end to end (embedded broker unless
                                          KAFKA_BOOTSTRAP_SERVERS), with a summary
    newsflow worker [FAUST WORKER OPTIONS] a Faust worker running the enrich agent
    newsflow produce PATH...|-            put pages (files, folders, .jsonl, .warc, stdin) on
                                          raw-pages
    newsflow tail [articles|dead-letter|duplicates|raw-pages]  print records as they arrive
    newsflow enrich PATH... [--url URL]   enrich files/folders in-process, JSON lines on stdout;
                                          --dedup marks duplicates of earlier inputs
    newsflow bench stages [PATH...]       per-stage time over a folder of pages (default: corpus);
                                          --supervised: in the worker's budgeted child process
    newsflow bench worker [PATH...]       a backlog through real workers; web latency meanwhile
    newsflow bench [pipeline [PATH...]]   in-process and broker throughput per language group,
                                          NER F1, latency, memory (BENCHMARKS.md)
    newsflow bench produce [WARC...]      pages/s and MB/s from a WARC into raw-pages
    newsflow bench dedup                  near-dup precision/recall, dedup throughput

Commands that talk to Kafka import their Kafka code only when run, so `enrich` works on a
machine with no broker at all. Settings come from environment variables (README, "Settings").
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

    return tqdm(total=total, desc=desc, unit="page", file=sys.stderr, disable=not enabled,
                leave=False)


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
    outcomes = enrich_outcomes(args.paths, settings, args.url, progress=True)
    if args.dedup:
        outcomes = with_dedup(outcomes, settings)
    if args.stories:
        outcomes = with_stories(outcomes, settings)
    for source, outcome in outcomes:
        if isinstance(outcome, Failure):
            counts[outcome.reason] += 1
        else:
            kind = outcome.duplicate_kind
            counts[f"duplicate_{kind}" if kind else "article"] += 1
        out.write(orjson.dumps(outcome_json(source, outcome)) + b"\n")
    out.flush()
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"newsflow enrich: {sum(counts.values())} inputs: {summary}", file=sys.stderr)
    return 0


def with_dedup(
    outcomes: Iterator[tuple[str, Article | Failure]], settings: Settings
) -> Iterator[tuple[str, Article | Failure]]:
    """Mark each article that duplicates an earlier one (`duplicate_of`, `duplicate_kind`,
    `similarity`), with the worker's rules and order key (fetch time, then id), in memory."""
    from agents.dedup import Deduper, MemoryStore, order_key

    deduper = Deduper(settings.dedup_config, MemoryStore())
    for source, outcome in outcomes:
        if isinstance(outcome, Article):
            verdict = deduper.check(outcome.id, outcome.url, outcome.canonical_url, outcome.text,
                                    order_key(outcome.fetched_at, outcome.id))  # fmt: skip
            if verdict is not None:
                outcome.duplicate_of, outcome.duplicate_kind = verdict.duplicate_of, verdict.kind
                outcome.similarity = verdict.similarity
        yield source, outcome


def with_stories(
    outcomes: Iterator[tuple[str, Article | Failure]], settings: Settings
) -> Iterator[tuple[str, Article | Failure]]:
    """Give each article its `story_id`, in input order (callers sort inputs by date), as the
    worker's stories agent does. An article with no usable time (no date, no fetched_at) keeps
    `story_id` None; so does a duplicate (its story is its canonical's), as on the worker."""
    import time

    from agents.stories import StoryIndex, features

    index = StoryIndex(settings.story_config)
    now = time.time()
    for source, outcome in outcomes:
        if isinstance(outcome, Article) and not outcome.duplicate_of:
            feats = features(outcome, index.config, now=now)
            if not isinstance(feats, Failure):
                outcome.story_id = index.add(feats).story_id
        yield source, outcome


def default_corpus() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def cmd_bench_stages(args: argparse.Namespace, settings: Settings) -> int:
    from agents.pipeline import STAGES, Enricher

    paths = args.paths or [str(default_corpus())]
    if args.supervised:  # as the worker runs it: in a child process, with the page budget
        from agents.supervisor import PageBudget, SupervisedEnricher

        budget = settings.page_budget or PageBudget()
        enricher = SupervisedEnricher(settings.pipeline, budget).start()
    else:
        enricher = Enricher(settings.pipeline)
        enricher.tagger.load()  # model load is set-up, not per-page cost
    n = 0
    start = time.perf_counter()
    outcomes: Counter[str] = Counter()
    pages = [p for p in iter_pages(paths, max_bytes=settings.max_page_bytes)
             if isinstance(p, RawPage)]  # fmt: skip
    read = time.perf_counter()
    try:
        for batch in _batched(iter(pages), BATCH):
            for outcome in enricher.enrich_many(batch):
                outcomes["article" if isinstance(outcome, Article) else outcome.reason] += 1
            n += len(batch)
    finally:
        if args.supervised:
            enricher.close()
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
    rate = report["pages_per_second"]
    print(f"{n} pages in {wall:.2f}s = {rate} pages/s  outcomes: {dict(outcomes)}")
    print(f"{'stage':<10} {'seconds':>9} {'ms/page':>9} {'share':>7}")
    for s, row in report["stages"].items():
        print(f"{s:<10} {row['seconds']:>9.2f} {row['ms_per_page']:>9.1f} {row['share']:>7.1%}")
    return 0


def _need_broker(settings: Settings, command: str) -> bool:
    if settings.servers:
        return True
    print(f"newsflow {command}: set KAFKA_BOOTSTRAP_SERVERS=host:port (or run `newsflow demo`, "
          "which starts an embedded broker)", file=sys.stderr)  # fmt: skip
    return False


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Create the topics if asked to, then hand over to Faust's own `worker` command."""
    if not _need_broker(settings, "worker"):
        return 2
    from streams.app import create_app
    from streams.topics import create_topics

    if settings.create_topics and "--help" not in args.faust_args:
        from aiokafka.errors import KafkaError

        try:
            create_topics(settings)
        except (KafkaError, RuntimeError) as exc:
            print(f"newsflow worker: cannot create topics on {settings.bootstrap_servers}: "
                  f"{exc}", file=sys.stderr)  # fmt: skip
            return 1
    newsflow = create_app(settings)
    sys.argv = ["newsflow", "worker", *args.faust_args]
    newsflow.app.main()  # never returns: Faust's CLI exits the process
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from streams.producer import ProduceOptions, ProduceReport, produce
    from streams.sources import SourceStats, input_bytes
    from streams.topics import ensure_topics

    if not _need_broker(settings, "produce"):
        return 2
    try:
        options = ProduceOptions(key=args.key, partition_by=args.partition_by, rate=args.rate)
    except ValueError as exc:
        print(f"newsflow produce: {exc}", file=sys.stderr)
        return 2
    stats = SourceStats()
    report = ProduceReport()
    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    from tqdm import tqdm

    total = input_bytes(args.paths) if show else None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="produce", file=sys.stderr,
               disable=not show, leave=False)  # fmt: skip

    def progress(r: ProduceReport) -> None:
        bar.update(stats.bytes_read - bar.n)
        bar.set_postfix(sent=r.sent, skipped=r.skipped, failed=r.failed, refresh=False)

    async def run() -> None:
        if settings.create_topics:
            await ensure_topics(settings)
        pages = iter_pages(args.paths, stats=stats, limits=settings.envelope_limits)
        await produce(pages, settings, options, progress=progress, report=report)

    from aiokafka.errors import KafkaError

    interrupted = False
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        interrupted = True
    except KafkaError as exc:  # no broker at all; a failed send is counted, not raised
        print(f"newsflow produce: {settings.bootstrap_servers}: {exc!r}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    result = {**report.to_dict(), "not_pages": dict(stats.skipped), "interrupted": interrupted}
    for problem in report.problems:
        print(f"newsflow produce: {problem}", file=sys.stderr)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
        sys.stdout.flush()
    not_pages = ", ".join(f"{k} {v}" for k, v in stats.skipped.most_common()) or "none"
    print(f"newsflow produce: {report.read} inputs -> {settings.topic_raw_pages}: sent "
          f"{report.sent}, skipped {report.skipped}, failed {report.failed} "
          f"({report.retried} retries) in {report.seconds:.1f}s; not pages: {not_pages}"
          + (" [interrupted]" if interrupted else ""), file=sys.stderr)  # fmt: skip
    return 130 if interrupted else 1 if report.failed else 0


TAIL_TOPICS = ("articles", "dead-letter", "duplicates", "raw-pages")


def tail_line(kind: str, record) -> str:
    """One readable line per record (`--format summary`)."""
    from streams.topics import decode_outcome

    where = f"{record.partition}@{record.offset}"
    if kind == "raw-pages":
        key = (record.key or b"").decode("utf-8", "replace")
        return f"{where:>10}  {len(record.value or b''):>9} B  {key}"
    outcome = decode_outcome(kind, record.key, record.value, record.headers)
    doc = outcome.value or {}
    if outcome.value is None:
        return f"{where:>10}  (unreadable value, {len(record.value or b'')} bytes)"
    if kind == "dead-letter":
        ref = doc.get("input") or {}
        what = doc.get("url") or ref.get("key") or f"{ref.get('partition')}@{ref.get('offset')}"
        reason = f"{doc.get('stage')}/{doc.get('reason')}"
        return f"{where:>10}  {reason:<28} {what}  {str(doc.get('message', ''))[:80]}"
    if kind == "duplicates":
        what = f"{doc.get('kind')} {doc.get('similarity') or 0:.2f}"
        return f"{where:>10}  {what:<10} {doc.get('url')}  -> {doc.get('duplicate_of')}"
    ents = len(doc.get("entities") or [])
    title = (doc.get("title") or "")[:60]
    lang = doc.get("language", "?")
    return f"{where:>10}  {lang:<3} {ents:>3} ent  {title:<60}  {doc.get('url')}"


class StoryBoard:
    """`newsflow tail --stories`: the live stories seen on the articles topic, each with its
    articles (a replayed article is not counted twice)."""

    def __init__(self) -> None:
        self.stories: dict[str, dict[str, str]] = {}  # story id -> article id -> title

    def add(self, doc: dict) -> dict:
        """Record one article; returns what `tail` prints for it."""
        story, ident = doc.get("story_id"), str(doc.get("id"))
        members = self.stories.setdefault(story, {}) if story else {}
        new_story = story is not None and not members
        if story:
            members.setdefault(ident, str(doc.get("title") or doc.get("url") or ident))
        return {"story_id": story, "articles": len(members), "new_story": new_story,
                "id": ident, "title": doc.get("title"), "url": doc.get("url"),
                "date": doc.get("date")}  # fmt: skip

    @staticmethod
    def line(entry: dict) -> str:
        story = entry["story_id"] or "(no story: no date)"
        mark = "new" if entry["new_story"] else f"{entry['articles']:>3}"
        return f"{story:<24} {mark:>3}  {(entry['title'] or entry['url'] or '')[:90]}"

    def summary(self, top: int = 20, titles: int = 5) -> str:
        """The biggest stories with their articles' titles."""
        ranked = sorted(self.stories.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        lines = [f"{len(self.stories)} stories; the {len(ranked)} largest:"]
        for story, members in ranked:
            lines.append(f"  {story}  {len(members)} article(s)")
            lines.extend(f"      {t[:100]}" for t in list(members.values())[:titles])
        return "\n".join(lines)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from streams.consumer import read_records

    if not _need_broker(settings, "tail"):
        return 2
    topic = {"articles": settings.topic_articles, "dead-letter": settings.topic_dead_letter,
             "duplicates": settings.topic_duplicates,
             "raw-pages": settings.topic_raw_pages}[args.topic]  # fmt: skip
    if args.stories:
        topic = settings.topic_articles
    out = sys.stdout.buffer
    board = StoryBoard()

    async def run() -> int:
        count = 0
        start = "beginning" if args.from_beginning else "end"
        records = read_records(settings, [topic], start=start, idle_timeout=args.idle_timeout,
                               limit=args.limit)  # fmt: skip
        async for record in records:
            if args.stories:
                try:
                    doc = orjson.loads(record.value or b"null")
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    continue
                entry = board.add(doc)
                line = orjson.dumps(entry) if args.format == "json" else \
                    board.line(entry).encode("utf-8", "replace")
                out.write(line + b"\n")
            elif args.format == "json":
                out.write((record.value or b"null") + b"\n")
            else:
                out.write(tail_line(args.topic, record).encode("utf-8", "replace") + b"\n")
            out.flush()
            count += 1
        return count

    from aiokafka.errors import KafkaError

    try:
        count = asyncio.run(run())
    except KeyboardInterrupt:
        count = None
    except (LookupError, KafkaError) as exc:
        print(f"newsflow tail: {exc}", file=sys.stderr)
        return 1
    if args.stories and args.format == "summary":
        print(board.summary())
    if count is None:
        return 130
    print(f"newsflow tail: {count} records from {topic}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker import BrokerError
    from streams.demo import Demo, DemoError, default_inputs, format_summary

    demo = Demo(settings, args.paths or default_inputs(), workers=args.workers,
                timeout=args.timeout, show_progress=not args.quiet)  # fmt: skip
    try:
        summary = demo.run()
    except KeyboardInterrupt:
        print("newsflow demo: interrupted; workers and broker stopped", file=sys.stderr)
        return 130
    except (DemoError, BrokerError) as exc:
        print(f"newsflow demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
    else:
        print(format_summary(summary))
    return 0


def cmd_bench_worker(args: argparse.Namespace, settings: Settings) -> int:
    """A backlog through real workers, with the web endpoint timed while they work."""
    from streams.broker import BrokerError
    from streams.demo import Demo, DemoError, default_inputs

    demo = Demo(settings, args.paths or default_inputs(), workers=args.workers,
                timeout=args.timeout, show_progress=not args.json, repeat=args.repeat,
                backlog=True, probe_interval=args.interval)  # fmt: skip
    try:
        summary = demo.run()
    except KeyboardInterrupt:
        return 130
    except (DemoError, BrokerError) as exc:
        print(f"newsflow bench worker: {exc}", file=sys.stderr)
        return 1
    keys = ("broker", "workers", "workers_used", "outcomes", "articles", "dead_letters",
            "redelivered", "seconds", "pages_per_second", "probe")  # fmt: skip
    report = {k: summary[k] for k in keys}
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the streaming path end to end, with a summary")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="inputs to produce (default: ../shared/seeds ../shared/corpus)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for all outcomes (default 600)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", add_help=False, prefix_chars="\0",
                       help="run a Faust worker (all `faust worker` options pass through)")
    p.add_argument("faust_args", nargs=argparse.REMAINDER, metavar="FAUST_WORKER_OPTIONS")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("produce", help="put pages on the raw-pages topic")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="page files, folders, .jsonl envelopes, .warc[.gz], or - for stdin")
    p.add_argument("--key", choices=("url", "none"), default="url",
                   help="record key: the page URL (default) or none")
    p.add_argument("--partition-by", choices=("key", "host"), default="key",
                   help="partition by record key (Kafka default) or by the URL's host")
    p.add_argument("--rate", type=float, help="at most this many pages per second")
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
    p.add_argument("--progress", action="store_true", help="progress bar even if not a tty")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("tail", help="print records of an output topic as they arrive")
    p.add_argument("topic", nargs="?", choices=TAIL_TOPICS, default="articles")
    p.add_argument("--stories", action="store_true",
                   help="live stories: each article with its story and the story's size so "
                   "far; with --format summary, the largest stories at the end")  # fmt: skip
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--limit", type=int, help="stop after this many records")
    p.add_argument("--idle-timeout", type=float,
                   help="stop when nothing arrived for this many seconds")
    p.add_argument("--format", choices=("json", "summary"), default="json",
                   help="JSON lines (the record values) or one readable line per record")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("enrich", help="enrich files/folders in-process; JSON lines on stdout")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--url", help="the page's URL (single input file only)")
    p.add_argument("--stories", action="store_true",
                   help="add a story_id grouping reports of the same event (inputs in date order)")
    p.add_argument("--dedup", action="store_true",
                   help="mark URL, exact and near duplicates of earlier inputs (duplicate_of, "
                   "duplicate_kind, similarity; NEWSFLOW_DEDUP_THRESHOLD)")
    p.set_defaults(func=cmd_enrich)

    bench_parser = sub.add_parser("bench", help="measure throughput (default: bench pipeline)")
    bench = bench_parser.add_subparsers(dest="what")
    p = bench.add_parser("stages", help="in-process time per stage over a folder of pages")
    p.add_argument("paths", nargs="*", metavar="PATH", help="default: ../shared/corpus")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--supervised", action="store_true",
                   help="run the stages as the worker does: in a child process with the page "
                   "budget (NEWSFLOW_PAGE_TIMEOUT)")
    p.set_defaults(func=cmd_bench_stages)
    p = bench.add_parser("worker", help="a backlog through workers on a broker, web endpoint "
                         "latency measured meanwhile (embedded broker unless configured)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="default: seeds and corpus")
    p.add_argument("--repeat", type=int, default=3, help="produce the inputs this many times")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between probes")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_bench_worker)
    from streams.bench import pipeline as bench_pipeline
    from streams.bench import produce as bench_produce

    # Plain `newsflow bench` is `newsflow bench pipeline` with its defaults.
    bench_parser.set_defaults(**vars(bench_pipeline.add_parser(bench).parse_args([])))
    bench_produce.add_parser(bench)
    from streams.bench import dedup as bench_dedup
    from streams.bench import stories as bench_stories

    bench_stories.add_parser(bench)
    bench_dedup.add_parser(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command != "worker":  # Faust configures the worker's logging (--loglevel)
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
