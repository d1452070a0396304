"""`newsflow bench produce [WARC...]`: how fast pages go from WARC files onto raw-pages (issue 7).

    newsflow bench produce                      a WARC built from ../shared/corpus (x6)
    newsflow bench produce crawl.warc.gz --json a real crawl

The broker is the embedded Tansu unless `KAFKA_BOOTSTRAP_SERVERS` names one; each run writes
to a topic of its own. The same files are timed twice: reading alone (`iter_pages`: WARC
parsing and decompression, no broker) and reading + producing (`streams.producer.produce`:
envelope, compression, pipelined sends, every acknowledgement awaited), so the report shows
which of the two is the limit. On the embedded Tansu both producer modes run: one record per
batch (what newsflow must use on Tansu 0.6, see `Settings.one_record_per_batch`) and batched
(what a real Kafka gets); on Kafka, the settings as given.

The built WARC holds one gzipped `response` record per corpus page (identity-coded body,
`Content-Type: text/html`), `--repeat` times, each copy with its own URL like a crawl.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from agents.records import RawPage
from streams.bench.pages import default_corpus
from streams.settings import Settings
from streams.sources import SourceStats, iter_pages

MODES = ("one_record_per_batch", "batched")


def build_corpus_warc(
    out: Path, corpus: Path | None = None, repeat: int = 6, limit: int | None = None
) -> dict[str, Any]:
    """Write the corpus pages (the first `limit`) `repeat` times as a .warc.gz crawl."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    corpus = corpus or default_corpus()
    entries = [orjson.loads(line) for line in (corpus / "manifest.jsonl").read_bytes().splitlines()
               if line.strip()][:limit]  # fmt: skip
    bodies = [(e["url"], gzip.decompress((corpus / e["file"]).read_bytes())) for e in entries]
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    records = payload = 0
    with out.open("wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for copy in range(repeat):
            for url, body in bodies:
                target = url if copy == 0 else f"{url}{'&' if '?' in url else '?'}copy={copy}"
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"),
                                                   ("Content-Length", str(len(body)))],
                                        protocol="HTTP/1.1")  # fmt: skip
                date = (start + timedelta(seconds=records)).isoformat().replace("+00:00", "Z")
                record = writer.create_warc_record(
                    target, "response", payload=io.BytesIO(body), http_headers=http,
                    warc_headers_dict={"WARC-Date": date},
                )  # fmt: skip
                writer.write_record(record)
                records += 1
                payload += len(body)
    return {"file": str(out), "records": records, "payload_mb": round(payload / 1e6, 2),
            "file_mb": round(out.stat().st_size / 1e6, 2)}  # fmt: skip


def read_only(paths: list[str], settings: Settings) -> dict[str, Any]:
    """Time reading the pages alone: the ceiling of any producer fed by `iter_pages`."""
    stats = SourceStats()
    start = time.perf_counter()
    pages = payload = 0
    for item in iter_pages(paths, stats=stats, limits=settings.envelope_limits):
        if isinstance(item, RawPage):
            pages += 1
            payload += len(item.body)  # bytes from a WARC
    seconds = time.perf_counter() - start
    return {
        "pages": pages,
        "not_pages": dict(stats.skipped),
        "errors": dict(stats.errors),
        "seconds": round(seconds, 3),
        "pages_per_second": round(pages / seconds, 1) if seconds else None,
        "file_mb_per_second": round(stats.bytes_read / 1e6 / seconds, 1) if seconds else None,
        "payload_mb_per_second": round(payload / 1e6 / seconds, 1) if seconds else None,
    }


async def produce_once(
    paths: list[str], settings: Settings, broker_pid: int | None
) -> dict[str, Any]:
    """Produce every page of `paths` to a fresh raw-pages topic; time it, with CPU."""
    from streams.bench.procs import cpu_seconds
    from streams.producer import ProduceOptions, produce
    from streams.topics import ensure_topics

    topic = f"bench-{uuid.uuid4().hex[:10]}-raw-pages"
    settings = replace(settings, topic_raw_pages=topic)
    await ensure_topics(settings, (topic,))
    stats = SourceStats()
    cpu0, broker0 = time.process_time(), _cpu(broker_pid, cpu_seconds)
    pages = iter_pages(paths, stats=stats, limits=settings.envelope_limits)
    report = await produce(pages, settings, ProduceOptions())
    cpu, broker = time.process_time() - cpu0, _cpu(broker_pid, cpu_seconds)
    seconds = report.seconds
    out = {
        "topic": topic,
        **{k: v for k, v in report.to_dict().items() if k != "problems"},
        "problems": report.problems[:5],
        "not_pages": dict(stats.skipped),
        "file_mb_per_second": round(stats.bytes_read / 1e6 / seconds, 1) if seconds else None,
        "envelope_mb_per_second": round(report.bytes_sent / 1e6 / seconds, 1) if seconds else None,
        "producer_cpu_ms_per_page": round(1000 * cpu / report.sent, 2) if report.sent else None,
        "producer_cpu_share": round(cpu / seconds, 2) if seconds else None,
    }
    if broker is not None and broker0 is not None:
        out["broker_cpu_ms_per_page"] = (round(1000 * (broker - broker0) / report.sent, 2)
                                         if report.sent else None)  # fmt: skip
    return out


def _cpu(pid: int | None, read) -> float | None:
    return read(pid) if pid is not None else None


def run(paths: list[str], settings: Settings, *, repeat: int = 6, limit: int | None = None,
        say=lambda text: None) -> dict[str, Any]:  # fmt: skip
    """Build the WARC if no input is given, read it, then produce it in each mode."""
    from streams.bench.machine import machine
    from streams.broker import EmbeddedBroker
    from streams.demo import embedded_settings

    workdir = Path(tempfile.mkdtemp(prefix="newsflow-bench-produce-"))
    broker = None
    report: dict[str, Any] = {"machine": machine(settings)}
    try:
        if not paths:
            say(f"building a WARC from {default_corpus()} x {repeat}")
            report["built"] = build_corpus_warc(workdir / "corpus.warc.gz", repeat=repeat,
                                                limit=limit)  # fmt: skip
            paths = [report["built"]["file"]]
        report["inputs"] = paths
        say("reading alone")
        report["read"] = read_only(paths, settings)
        if settings.servers:
            modes = {"as configured": settings}
            report["broker"] = f"Kafka at {settings.bootstrap_servers}"
        else:
            say("starting the embedded Tansu broker")
            broker = EmbeddedBroker().start()
            embedded = embedded_settings(settings, broker.bootstrap_servers)
            modes = {MODES[0]: embedded, MODES[1]: replace(embedded, one_record_per_batch=False)}
            report["broker"] = f"embedded Tansu at {broker.bootstrap_servers}"
        report["producer"] = {
            "compression": settings.producer_compression, "acks": settings.producer_acks,
            "linger_ms": settings.producer_linger_ms,
            "batch_bytes": settings.producer_batch_bytes,
            "max_in_flight": settings.producer_max_in_flight,
        }  # fmt: skip
        report["produce"] = {}
        for name, mode_settings in modes.items():
            say(f"producing ({name})")
            pid = broker.proc.pid if broker is not None and broker.proc is not None else None
            report["produce"][name] = asyncio.run(produce_once(paths, mode_settings, pid))
        return report
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    read = report["read"]
    lines = [
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"load {m['loadavg_start']}",
        f"inputs: {', '.join(report['inputs'])}"
        + (f" (built: {report['built']['records']} records, {report['built']['file_mb']} MB "
           f"gzipped, {report['built']['payload_mb']} MB of HTML)" if "built" in report else ""),
        f"broker: {report['broker']}; producer {report['producer']}",
        "",
        f"{'':<31}{'pages':>7}{'seconds':>9}{'pages/s':>9}{'file MB/s':>10}{'sent MB/s':>10}"
        f"{'cpu ms/p':>9}{'broker ms/p':>12}{'failed':>7}",
        f"{'read only':<31}{read['pages']:>7}{read['seconds']:>9}{read['pages_per_second']:>9}"
        f"{read['file_mb_per_second']:>10}{'':>10}{'':>9}{'':>12}{'':>7}",
    ]  # fmt: skip
    for name, r in report["produce"].items():
        lines.append(
            f"{'produce, ' + name:<31}{r['sent']:>7}{r['seconds']:>9}{r['pages_per_second']:>9}"
            f"{r['file_mb_per_second']:>10}{r['envelope_mb_per_second']:>10}"
            f"{r['producer_cpu_ms_per_page']:>9}{r.get('broker_cpu_ms_per_page', '-'):>12}"
            f"{r['failed']:>7}"
        )
    return "\n".join(lines)


def cmd_bench_produce(args: argparse.Namespace, settings: Settings | None) -> int:
    from aiokafka.errors import KafkaError

    from streams.broker import BrokerError

    settings = settings or Settings.from_env()
    say = (
        (lambda text: None)
        if args.quiet
        else (lambda text: print(f"newsflow bench produce: {text}", file=sys.stderr, flush=True))
    )
    repeat, limit = (1, 10) if args.quick else (args.repeat, None)
    try:
        report = run(args.paths, settings, repeat=repeat, limit=limit, say=say)
    except (BrokerError, KafkaError, OSError) as exc:
        print(f"newsflow bench produce: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_report(report))
    return 1 if any(r["failed"] for r in report["produce"].values()) else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `produce` under `newsflow bench`."""
    p = subparsers.add_parser("produce", help="pages/s and MB/s from WARC files into raw-pages "
                              "(embedded broker unless configured)")  # fmt: skip
    p.add_argument("paths", nargs="*", metavar="WARC",
                   help="default: a WARC built from ../shared/corpus")  # fmt: skip
    p.add_argument("--repeat", type=int, default=6,
                   help="copies of the corpus in the built WARC (default 6)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke-test size (10 pages)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_bench_produce)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="newsflow bench")
    add_parser(parser.add_subparsers(dest="what", required=True))
    args = parser.parse_args(["produce", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args, None)


if __name__ == "__main__":
    sys.exit(main())
