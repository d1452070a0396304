"""The enrich agent: raw-pages in, one record per input out, on articles or dead-letter.

`EnrichBatch` is the synchronous core (parse the envelope, run `agents.pipeline.Enricher`,
encode the outcome); `attach_enrich_agent` is the thin Faust agent around it. The agent takes
events in batches (`stream.noack_take`, acked by hand once delivered) so spaCy can `nlp.pipe`
them, and runs each batch off the event loop, which stays free for consumer heartbeats (the
worker keeps its group membership through long batches), fetching and the web endpoint.
Outputs are sent and their delivery awaited before the batch is acked, so a crash or a stop
mid-batch replays it (at-least-once) and stable article ids make the replay harmless.

The worker enriches in a supervised child process with a per-page time budget
(`agents/supervisor.py`, `NEWSFLOW_PAGE_TIMEOUT`): a page over budget is a `timeout` dead
letter, a page that kills the child a `worker_crash` one. With the budget at 0 the executor
thread runs the `Enricher` itself, as `newsflow enrich` does.

Failure policy: a bad input is a dead letter (never an exception); an article the broker
refuses for good (too large, invalid) becomes an `output_rejected` dead letter; a send that
fails otherwise (a delivery timeout in a broker outage, a lost connection), a dead letter the
broker refuses, or an enrichment process that cannot be started at all ends the process
without committing (see `deliver_batch`), because Faust acks and commits a batch when its
agent raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from agents.pipeline import Enricher
from agents.records import Article, Failure, RawPage
from agents.stories_agent import STORIES, produced_header
from agents.supervisor import SupervisedEnricher, SupervisorError
from streams import metrics
from streams.envelope import parse_raw_page
from streams.producer import exit_without_committing, record_refused, send_all
from streams.settings import Settings
from streams.topics import (
    InputRef,
    article_value,
    dead_letter_value,
    outcome_headers,
    worker_name,
)

log = logging.getLogger(__name__)

ARTICLES = "articles"
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Output:
    """One record to send: `role` is ARTICLES or DEAD_LETTER, mapped to a topic by the agent."""

    role: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    ref: InputRef
    outcome: Article | Failure  # what the record says, for counting and metrics
    url: str | None = None
    partition: int | None = None  # None: the producer's partitioner picks it by key
    follow_up: tuple[Output, ...] = ()  # sent only once this record is delivered (dedup claims)

    @property
    def reason(self) -> str:
        return self.outcome.reason if isinstance(self.outcome, Failure) else ""


class EnrichBatch:
    """Inputs -> outputs, one output per input, in input order. Never raises for bad input:
    an exception outside the stage guards (a bug) dead-letters the page as `internal_error`
    with its topic/partition/offset logged, and the batch goes on."""

    def __init__(self, settings: Settings, enricher: Enricher | None = None,
                 worker: str | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.limits = settings.envelope_limits
        self.enricher = enricher or Enricher(settings.pipeline)
        self.worker = worker or worker_name()

    def __call__(self, items: Sequence[tuple[InputRef, bytes | None]]) -> list[Output]:
        parsed: list[RawPage | Failure] = [self._parse(ref, value) for ref, value in items]
        pages = [p for p in parsed if isinstance(p, RawPage)]
        enriched = iter(self._enrich(pages))
        outputs = []
        for (ref, _), item in zip(items, parsed, strict=True):
            outcome = next(enriched) if isinstance(item, RawPage) else item
            url = item.url if isinstance(item, RawPage) else None
            outputs.append(self._output(ref, outcome, url))
        return outputs

    def _parse(self, ref: InputRef, value: bytes | None) -> RawPage | Failure:
        try:
            return parse_raw_page(value, ref.key, self.limits)
        except Exception as exc:  # contained and dead-lettered: see class doc
            return self._internal(ref, "envelope", exc)

    def _enrich(self, pages: list[RawPage]) -> list[Article | Failure]:
        if not pages:
            return []
        try:
            return self.enricher.enrich_many(pages)
        except SupervisorError:  # no enrichment process: no page's fault, none dead-letters
            raise
        except Exception:  # a pipeline bug: fall back to one page at a time
            log.exception("enrich_many crashed on a batch of %d; retrying page by page", len(pages))
        outcomes: list[Article | Failure] = []
        for page in pages:
            try:
                outcomes.append(self.enricher.enrich(page))
            except SupervisorError:
                raise
            except Exception as exc:  # the page dead-letters, the batch goes on
                log.exception("enrich crashed on %s", page.url)
                message = f"{type(exc).__name__}: {exc}"[:500]
                outcomes.append(Failure("internal_error", "pipeline", message))
        return outcomes

    def _output(self, ref: InputRef, outcome: Article | Failure, url: str | None) -> Output:
        headers = outcome_headers(ref, self.worker)
        if isinstance(outcome, Article):
            value = article_value(outcome, self.settings.max_message_bytes)
            if not isinstance(value, Failure):
                return Output(ARTICLES, outcome.id.encode(), value, headers, ref, outcome, url)
            outcome = value
        dead = dead_letter_value(ref, outcome, url=url, worker=self.worker,
                                 max_key_chars=self.settings.max_url_chars)  # fmt: skip
        return Output(DEAD_LETTER, ref.key, dead, headers, ref, outcome, url)

    def rejected(self, output: Output, error: BaseException) -> Output:
        """The dead letter for an article the broker refused (too large for the topic's
        limit, not authorised, ...): the input is then accounted for, not silently lost."""
        failure = Failure("output_rejected", "output", f"{type(error).__name__}: {error}"[:500])
        return self._output(output.ref, failure, output.url)

    def _internal(self, ref: InputRef, stage: str, exc: Exception) -> Failure:
        log.exception("%s crashed on %s[%d]@%d", stage, ref.topic, ref.partition, ref.offset)
        return Failure("internal_error", stage, f"{type(exc).__name__}: {exc}"[:500])


@dataclass
class AgentStats:
    """What the worker has done, for its status page (metrics come from the metrics layer)."""

    started: float = field(default_factory=time.time)
    batches: int = 0
    inputs: int = 0
    outcomes: Counter = field(default_factory=Counter)  # by role: articles / dead_letter
    reasons: Counter = field(default_factory=Counter)  # dead letters by reason
    last_batch_size: int = 0
    last_batch_seconds: float = 0.0
    last_batch_at: float | None = None  # time.time() when `inputs` last grew (progress readers)
    busy_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "uptime_seconds": round(time.time() - self.started, 3),
            "batches": self.batches,
            "inputs": self.inputs,
            "outcomes": dict(self.outcomes),
            "dead_letter_reasons": dict(self.reasons),
            "last_batch_size": self.last_batch_size,
            "last_batch_seconds": round(self.last_batch_seconds, 3),
            "last_batch_at": self.last_batch_at,
            "busy_seconds": round(self.busy_seconds, 3),
        }


def worker_enricher(settings: Settings) -> Enricher | SupervisedEnricher:
    """The worker's enricher: a supervised child process with the page budget, or the
    in-process `Enricher` when `NEWSFLOW_PAGE_TIMEOUT` is 0."""
    budget = settings.page_budget
    if budget is None:
        return Enricher(settings.pipeline)
    return SupervisedEnricher(settings.pipeline, budget)


def attach_enrich_agent(app, raw_pages, outputs: dict[str, Any], settings: Settings,
                        work: EnrichBatch | None = None, dedup: Any = None):  # fmt: skip
    """Declare the `enrich-pages` agent on `app`: consumes `raw_pages`, sends to
    `outputs[ARTICLES]` / `outputs[DEAD_LETTER]` (Faust topics). With `dedup` (an
    `agents.dedup_agent.DedupRouter`) articles go to its gather topic instead, each followed
    by its first claim, and the dedup agents write the article or duplicate outcome. With
    `outputs[STORIES]` (stories on) articles reach articles by way of the stories agent.

    Returns `(agent, stats, executor)`; the caller owns the executor's shutdown."""
    stats = AgentStats()
    # Cheap: the model loads (the child starts) in the load_models task below.
    work = work or EnrichBatch(settings, worker_enricher(settings))
    # One thread: the Enricher (spaCy) is not shared between threads, and parallelism comes
    # from one worker process per core in the same consumer group, not from threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsflow-enrich")

    @app.task
    async def load_models() -> None:
        """Load the NER model in the executor at start-up: the first batch does not pay for
        it, and a worker whose model is missing fails now rather than tagging nothing."""
        enricher = work.enricher
        supervised = isinstance(enricher, SupervisedEnricher)
        warm_up = enricher.start if supervised else enricher.tagger.load
        await asyncio.get_running_loop().run_in_executor(executor, warm_up)

    @app.on_before_shutdown.connect
    async def stop_enricher(sender: Any, **_kwargs: Any) -> None:
        """Kill the enrichment process, so a stopping worker does not wait for a batch whose
        results it would drop: unacked, the batch is handed back to the group."""
        if isinstance(work.enricher, SupervisedEnricher):
            work.enricher.close()

    async def deliver_batch(results: list[Output]) -> list[Output]:
        """Deliver a batch's outputs; an article the broker refuses for good (too large,
        invalid: `record_refused`) becomes a dead letter. Any other failure (a delivery
        timeout in an outage, a lost connection) or a dead letter that cannot be written
        stops the process at once: Faust would ack and commit the batch on an agent error,
        losing it, while a dead process keeps it uncommitted, so it is replayed when the
        worker is restarted."""
        errors = await send_all(outputs, results)
        failed = [(out, err) for out, err in zip(results, errors, strict=True) if err]
        if not failed:
            return results
        for out, err in failed:
            log.error("broker did not take %s record for %s[%d]@%d: %r", out.role,
                      out.ref.topic, out.ref.partition, out.ref.offset, err)  # fmt: skip
        for_good = [out.role != DEAD_LETTER and record_refused(err) for out, err in failed]
        refused = [item for item, good in zip(failed, for_good, strict=True) if good]
        fatal = [err for (_, err), good in zip(failed, for_good, strict=True) if not good]
        fallback = [] if fatal else [work.rejected(out, err) for out, err in refused]
        fatal += [err for err in await send_all(outputs, fallback) if err]
        if fatal:
            exit_without_committing(f"cannot deliver outputs ({fatal[0]!r})")
        replaced = {id(out): new for (out, _), new in zip(refused, fallback, strict=True)}
        return [replaced.get(id(out), out) for out in results]

    @app.agent(raw_pages, name="enrich-pages")
    async def enrich_pages(stream):
        loop = asyncio.get_running_loop()
        # `noack_take`, acked by hand once the outcomes are delivered: `take_events` acks its
        # batch when the agent is cancelled, and a stopping worker commits those acks, so a
        # batch cut short by SIGTERM would be lost instead of handed back.
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_within):
            items = [
                (InputRef(e.message.topic, e.message.partition, e.message.offset,
                          e.message.key, len(e.message.value or b"")), e.message.value)
                for e in events
            ]  # fmt: skip
            start = time.perf_counter()
            metrics.METRICS.page_received(len(items))
            stage_totals = metrics.stage_totals(work.enricher)
            try:
                results = await loop.run_in_executor(executor, work, items)
            except SupervisorError as exc:
                if work.enricher.closed:  # the worker is stopping: let the stop cancel us
                    await asyncio.Event().wait()
                exit_without_committing(str(exc))
            if dedup is not None:  # articles become page messages + their first claims
                stamps = [e.message.timestamp for e in events]
                results = await loop.run_in_executor(executor, dedup.route, results, stamps,
                                                     Output)  # fmt: skip
            elif STORIES in outputs:  # no dedup: articles go to the stories agent directly
                results = [replace(out, role=STORIES, partition=0,
                                   headers=[*out.headers, *produced_header(e.message.timestamp)])
                           if out.role == ARTICLES else out
                           for e, out in zip(events, results, strict=True)]  # fmt: skip
            # Delivery is confirmed before the batch is acked, so no offset is
            # committed whose outcome is not on the output topics (at-least-once).
            results = await deliver_batch(results)
            # A claim only once its page is delivered: no claim names an unseen article.
            follow_ups = [f for out in results for f in out.follow_up]
            if any(await send_all(outputs, follow_ups)):
                exit_without_committing("cannot write dedup claims")
            metrics.METRICS.observe_stage_totals(stage_totals, metrics.stage_totals(work.enricher))
            for event, out in zip(events, results, strict=True):
                if out.role in (ARTICLES, DEAD_LETTER):  # dedup counts the pages it decides
                    metrics.METRICS.record_outcome(out.outcome,
                                                   produced_at=event.message.timestamp)
            stats.batches += 1
            stats.inputs += len(items)
            stats.outcomes.update(out.role for out in results)
            stats.reasons.update(out.reason for out in results if out.role == DEAD_LETTER)
            stats.last_batch_size = len(items)
            stats.last_batch_seconds = time.perf_counter() - start
            stats.last_batch_at = time.time()
            stats.busy_seconds += stats.last_batch_seconds
            for event in events:
                await stream.ack(event)

    return enrich_pages, stats, executor
