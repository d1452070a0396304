"""`newsflow demo`: the whole streaming path on one machine, from one command.

1. a broker: the embedded Tansu on a free loopback port, unless `KAFKA_BOOTSTRAP_SERVERS`
   names one; 2. the topics, created with `NEWSFLOW_PARTITIONS` partitions; 3. `--workers`
   `newsflow worker` processes (one consumer group); 4. the seeds and the corpus produced onto
   raw-pages; 5. the outcome topics consumed until every produced page has its outcome;
   6. a summary; 7. everything stopped again, in order (workers, then the broker), also on
   Ctrl-C. Children run in their own process group and get SIGTERM if this process dies.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.broker import EmbeddedBroker, free_port, spawn_child, stop_child
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def default_inputs() -> list[str]:
    shared = REPO.parent / "shared"
    return [str(shared / "seeds"), str(shared / "corpus")]


def embedded_settings(settings: Settings, bootstrap_servers: str) -> Settings:
    """Settings for the embedded Tansu broker: one record per batch (its end offsets are only
    right then), a 6 s session timeout, because Tansu completes a new group's join only
    after about half the session timeout (17 s with 30 s, 5 s with 6 s, measured), and a
    100 ms fetch wait, because Tansu holds every fetch until its max wait expires."""
    return replace(settings, bootstrap_servers=bootstrap_servers, one_record_per_batch=True,
                   fetch_max_wait_ms=min(settings.fetch_max_wait_ms, 100),
                   session_timeout=min(settings.session_timeout, 6.0),
                   heartbeat_interval=min(settings.heartbeat_interval, 1.0),
                   rebalance_timeout=min(settings.rebalance_timeout, 10.0))  # fmt: skip


class DemoError(RuntimeError):
    pass


@dataclass
class Worker:
    """A `newsflow worker` child process, its web port and its log file."""

    proc: subprocess.Popen
    web_port: int
    log_path: Path

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The worker's /newsflow/status/ answer, or None if it does not answer (yet)."""
        import orjson

        from streams.app import STATUS_PATH

        url = f"http://127.0.0.1:{self.web_port}{STATUS_PATH}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return orjson.loads(response.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_worker(settings: Settings, workdir: Path, index: int = 0, loglevel: str = "warn",
                 cpus: set[int] | None = None) -> Worker:  # fmt: skip
    """`newsflow worker` as a child process, configured entirely through its environment;
    `cpus` pins it (and the enrichment child it starts later) to those cores."""
    port = free_port()
    data_dir = workdir / f"worker-{index}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **replace(settings, web_port=port, web_bind="127.0.0.1",
                                   data_dir=str(data_dir)).env()}  # fmt: skip
    log_path = workdir / f"worker-{index}.log"
    with open(log_path, "ab") as log:
        proc = spawn_child([sys.executable, "-m", "streams.cli", "worker", "--loglevel", loglevel],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=env, cwd=str(REPO))  # fmt: skip
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return Worker(proc, port, log_path)


@dataclass
class Demo:
    """One demo run; `run()` returns the summary (also on `self.summary`)."""

    settings: Settings
    paths: list[str]
    workers: int = 1
    timeout: float = 600.0
    show_progress: bool = True
    # Benchmark knobs (`newsflow bench worker`): produce the inputs `repeat` times, all before
    # the workers start (`backlog`), and probe each worker's web endpoint every
    # `probe_interval` seconds while they work through it.
    repeat: int = 1
    backlog: bool = False
    probe_interval: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def run(self) -> dict[str, Any]:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        broker: EmbeddedBroker | None = None
        workers: list[Worker] = []
        workdir = Path(tempfile.mkdtemp(prefix="newsflow-demo-"))
        settings = self.settings
        try:
            if settings.servers:
                where = f"Kafka at {settings.bootstrap_servers}"
            else:
                self._say("starting the embedded Tansu broker")
                broker = EmbeddedBroker().start()
                settings = embedded_settings(settings, broker.bootstrap_servers)
                where = f"embedded Tansu at {broker.bootstrap_servers}"
            self.summary = asyncio.run(self._run(settings, workdir, workers, where))
            return self.summary
        finally:
            for worker in workers:
                stop_child(worker.proc, timeout=15)
            if broker is not None:
                broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)

    async def _run(self, settings: Settings, workdir: Path, workers: list[Worker],
                   where: str) -> dict[str, Any]:  # fmt: skip
        from streams.consumer import OutcomeTally, end_offsets, wait_for_outcomes
        from streams.producer import ProduceOptions, ProduceReport, produce
        from streams.sources import iter_pages
        from streams.topics import TopicNames, ensure_topics

        names = TopicNames.from_settings(settings)
        await ensure_topics(settings)
        start_at = await end_offsets(settings, names.outcomes)
        if not self.backlog:
            self._start_workers(settings, workdir, workers, where)

        def worker_died() -> bool:
            dead = [w for w in workers if w.proc.poll() is not None]
            if dead:
                raise DemoError(f"worker exited with code {dead[0].proc.returncode}; its log:\n"
                                f"{dead[0].log_tail()}")  # fmt: skip
            return False

        times = f" x {self.repeat}" if self.repeat > 1 else ""
        self._say(f"producing {', '.join(self.paths)}{times} to {names.raw_pages}")
        started = time.perf_counter()
        report = ProduceReport()
        for _ in range(self.repeat):
            pages = iter_pages(self.paths, limits=settings.envelope_limits)
            await produce(pages, settings, ProduceOptions(), report=report)
        for problem in report.problems:
            self._say(problem)
        if self.backlog:
            self._start_workers(settings, workdir, workers, where)
            started = time.perf_counter()
        expected = {(names.raw_pages, p, o) for p, o in report.positions}
        tally = OutcomeTally(expected=expected)
        bar = self._bar(len(expected))
        probe = Probe(workers, self.probe_interval) if self.probe_interval else None
        probing = asyncio.ensure_future(probe.run(tally)) if probe else None
        try:
            done = await wait_for_outcomes(
                settings, tally, start=start_at, timeout=self.timeout,
                progress=lambda t: bar.update(len(t.outcomes) - bar.n) if len(t.outcomes) > bar.n
                else None, should_stop=worker_died,
            )  # fmt: skip
        finally:
            bar.close()
            if probing is not None:
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
        seconds = time.perf_counter() - started
        if not done:
            raise DemoError(f"{len(tally.missing())} of {len(expected)} pages had no outcome "
                            f"after {self.timeout:.0f}s")  # fmt: skip
        outcomes = tally.summary()
        summary = {
            "broker": where,
            "partitions": settings.partitions,
            "pages_in": report.read,
            "sent": report.sent,
            "skipped": report.skipped,
            "failed": report.failed,
            **outcomes,
            "workers": self.workers,
            "workers_used": len(outcomes["workers"]),
            "seconds": round(seconds, 2),
            "pages_per_second": round(len(tally.outcomes) / seconds, 2) if seconds else None,
        }
        if probe is not None:
            summary["probe"] = probe.summary()
        return summary

    def _start_workers(self, settings: Settings, workdir: Path, workers: list[Worker],
                       where: str) -> None:  # fmt: skip
        self._say(f"starting {self.workers} worker(s) ({where})")
        for i in range(self.workers):
            workers.append(start_worker(settings, workdir, i))

    def _say(self, text: str) -> None:
        if self.show_progress:
            print(f"newsflow demo: {text}", file=sys.stderr, flush=True)

    def _bar(self, total: int):
        from tqdm import tqdm

        return tqdm(total=total, desc="outcomes", unit="page", file=sys.stderr,
                    disable=not self.show_progress, leave=False)  # fmt: skip


class Probe:
    """Times GET /newsflow/status/ on every worker while they have work: how promptly the
    event loop answers with enrichment running, and whether the partitions stay assigned."""

    def __init__(self, workers: list[Worker], interval: float, timeout: float = 5.0) -> None:
        self.workers = workers
        self.interval = interval
        self.timeout = timeout
        self.latencies: list[float] = []
        self.failures = 0
        self.max_batch_seconds = 0.0
        self.assignments: dict[int, set[tuple[int, ...]]] = {}

    async def run(self, tally) -> None:
        import aiohttp

        from streams.app import STATUS_PATH

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not tally.done:
                for worker in self.workers:
                    await self._probe(session, f"http://127.0.0.1:{worker.web_port}{STATUS_PATH}",
                                      worker.web_port, tally)  # fmt: skip
                await asyncio.sleep(self.interval)

    async def _probe(self, session, url: str, port: int, tally) -> None:
        import aiohttp

        start = time.perf_counter()
        try:
            async with session.get(url) as response:
                status = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            if tally.outcomes:  # before the first outcome a worker may still be starting
                self.failures += 1
            return
        took = time.perf_counter() - start
        if status.get("inputs") and not tally.done:  # only while there is a backlog
            self.latencies.append(took)
            self.max_batch_seconds = max(self.max_batch_seconds, status["last_batch_seconds"])
            self.assignments.setdefault(port, set()).add(tuple(status["partitions"]))

    def summary(self) -> dict[str, Any]:
        ms = sorted(1000 * x for x in self.latencies)

        def pct(q: float) -> float | None:
            return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1) if ms else None

        return {
            "samples": len(ms),
            "failed_requests": self.failures,
            "latency_ms": {
                "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
                "max": round(ms[-1], 1) if ms else None,
            },
            "max_batch_seconds": round(self.max_batch_seconds, 3),
            "assignment_changes": sum(len(a) - 1 for a in self.assignments.values()),
        }


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM stops the demo like Ctrl-C does: through the `finally` that stops the children."""
    raise KeyboardInterrupt


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as an aligned table for people."""

    def counts(mapping: dict[str, int], limit: int = 8) -> str:
        items = list(mapping.items())
        text = ", ".join(f"{k} {v}" for k, v in items[:limit])
        return text + (f", … ({len(items) - limit} more)" if len(items) > limit else "") or "-"

    entities = ", ".join(f"{e['text']} ({e['label']}) {e['count']}"
                         for e in summary["top_entities"]) or "-"  # fmt: skip
    rows = [
        ("broker", f"{summary['broker']}, {summary['partitions']} partitions, "
                   f"{summary['workers_used']} of {summary['workers']} worker(s) busy"),
        ("pages in", f"{summary['pages_in']} (sent {summary['sent']}, skipped "
                     f"{summary['skipped']}, failed {summary['failed']})"),
        ("articles", f"{summary['articles']} in {summary['stories']} stories"),
        ("dead letters", f"{summary['dead_letters']}  {counts(summary['dead_letter_reasons'])}"
                         if summary["dead_letters"] else "0"),
        ("duplicates", str(summary["duplicates"])),
        ("languages", counts(summary["languages"])),
        ("top entities", entities),
        ("redelivered", f"{summary['redelivered']} (at-least-once replays, same ids)"),
        ("throughput", f"{summary['pages_per_second']} pages/s ({summary['outcomes']} pages in "
                       f"{summary['seconds']} s, first send to last outcome)"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
