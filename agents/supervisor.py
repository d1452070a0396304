"""Enrichment in a supervised child process, with a time budget per page.

trafilatura has no time limit and a thread cannot stop lxml mid-parse, so the only way to
bound what one page costs is to run the chain in a process that can be killed.
`SupervisedEnricher` is a drop-in for `agents.pipeline.Enricher` (`enrich`, `enrich_many`,
cumulative `seconds` / `calls` per stage) that keeps one long-lived child process:

- The child builds its own `Enricher`, loads spaCy once at start, and runs each batch with
  `Enricher.enrich_many` itself, so outcomes are the in-process ones and NER still runs as one
  `nlp.pipe` per batch. It reports every page's outcome as it leaves the text stages (extract,
  clean, language), so the parent always knows which page is running, and a shared byte says
  which stage.
- The parent gives each page a budget (`PageBudget`) for its text stages. On overrun it kills
  the child (SIGKILL), the page becomes `Failure("timeout", <running stage>)`, a fresh child
  starts and the batch goes on with the pages left, carrying the articles already made to the
  new child's NER batch. A child that dies by itself (segfault, OOM kill) makes the running
  page `Failure("worker_crash", <stage>)` the same way.
- NER reads a bounded head of each text (`EntitiesConfig.max_chars`), so it has one budget for
  the batch. If the batch overruns or the child dies in it, each article is tagged alone in a
  fresh child; one that fails alone keeps its article with `entities_note = "failed: timeout"`
  (or `worker_crash`), as `Enricher` keeps an article whose NER raised.

Children come from a fork server that has imported the pipeline and spaCy once, so a restart
costs a fork plus the model load (~1-2 s), not a new interpreter. The child ignores SIGINT and
SIGTERM (the parent stops it) and is SIGKILLed by the kernel if the fork server dies with the
parent. Linux only (`/proc`, `prctl`); elsewhere the budget is wall-clock only.

Benefit beside the budget: the process running the event loop (heartbeats, fetches, web page)
no longer shares its GIL with trafilatura and spaCy.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from agents.language import detect_language
from agents.pipeline import STAGES, Enricher, PipelineConfig
from agents.records import Article, Failure, RawPage

log = logging.getLogger(__name__)

TIMEOUT = "timeout"
WORKER_CRASH = "worker_crash"
# Modules the fork server imports once, so that a restarted child does not import them again.
PRELOAD = ("agents.pipeline", "spacy")
IDLE = -1


class SupervisorError(RuntimeError):
    """The enrichment process cannot be (re)started, or the enricher is closed: no page can
    be processed now, through no fault of any page."""


class ModelLoadError(SupervisorError):
    """The child could not load its model: retrying will not help."""


@dataclass(frozen=True)
class PageBudget:
    """How long a page may take, and how patient the supervisor is with its child.

    - `seconds` + `seconds_per_mb` x body MB: the budget of one page's text stages. Measured:
      the slowest of the 110 corpus pages takes 0.15 s, synthetic pages ~1.2 s per MB of
      paragraphs and ~3.2 s per MB of table rows. So a flat 10 s would cut off a legitimate
      4 MB table page, while 10 s + 3 s/MB lets every size under the 10 MB cap through with
      room to spare (40 s at 10 MB) and still stops a 100 kB page at 10.3 s: what is bounded
      is pathological cost, not size, which `max_page_bytes` already bounds.
    - The budget is CPU time of the child, checked against wall-clock deadlines: a page is
      not timed out because the machine is busy or the container CPU-throttled. A page whose
      child is starved gets at most `max_wall_factor` times its budget in wall-clock time.
    - `entities_seconds_per_article`: NER reads at most `EntitiesConfig.max_chars` (~0.06 s
      an article on one core), so the batch's NER budget is `seconds` plus this per article.
    - `startup_seconds`: how long a new child may take to import and load its model.
    """

    seconds: float = 10.0
    seconds_per_mb: float = 3.0
    max_wall_factor: float = 3.0
    entities_seconds_per_article: float = 1.0
    startup_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.seconds_per_mb < 0 or self.max_wall_factor < 1:
            raise ValueError("PageBudget: seconds > 0, seconds_per_mb >= 0, max_wall_factor >= 1")

    def for_page(self, page: RawPage) -> float:
        return self.seconds + self.seconds_per_mb * len(page.body) / 1_000_000

    def for_entities(self, articles: int) -> float:
        return self.seconds + self.entities_seconds_per_article * articles


# --- the child ---------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the fork server) exits, so a child in the middle
    of a 30 s page does not outlive a worker that was killed."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _ReportingEnricher(Enricher):
    """The child's Enricher: marks the running stage in shared memory and sends each page's
    text-stage outcome to the parent as soon as it is known. Items that are already articles
    (carried over from a killed child) skip the text stages and only join the NER batch."""

    def __init__(self, config: PipelineConfig, conn: Connection, stage: Any) -> None:
        super().__init__(config)
        self.conn = conn
        self.stage = stage
        self.indices: dict[int, int] = {}
        self._reported: dict[str, tuple[float, int]] = {}

    def guard(self, stage, where, call, count=1):
        self.stage.value = STAGES.index(stage)
        return super().guard(stage, where, call, count)

    def text_stages(self, page):
        if isinstance(page, Article):
            return page
        outcome = super().text_stages(page)
        self.conn.send(("text", self.indices[id(page)], outcome, self.deltas()))
        return outcome

    def deltas(self) -> dict[str, tuple[float, int]]:
        """Stage seconds and calls since the last report (what the parent adds to its own)."""
        out = {}
        for stage in list(self.calls):
            seconds0, calls0 = self._reported.get(stage, (0.0, 0))
            if self.calls[stage] != calls0:
                out[stage] = (self.seconds[stage] - seconds0, self.calls[stage] - calls0)
                self._reported[stage] = (self.seconds[stage], self.calls[stage])
        return out


def _child_main(conn: Connection, config: PipelineConfig, stage: Any) -> None:
    """The child's loop: one request is a list of (index, RawPage | Article); the answer is a
    "text" message per RawPage, then one "tagged" message with every article's entities."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    enricher = _ReportingEnricher(config, conn, stage)
    try:
        enricher.tagger.load()
        # langdetect's profiles load on first use (~0.3 s): not on a page's budget.
        detect_language("Language profiles load once, before the first page.", config.language)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        conn.send(("got",))  # from here on, a death is the fault of the work, not of idling
        items: list[tuple[int, RawPage | Article]] = request
        enricher.indices = {id(item): i for i, item in items}
        outcomes = enricher.enrich_many([item for _, item in items])
        stage.value = IDLE
        tagged = [
            (i, o.entities, o.entities_note)
            for (i, _), o in zip(items, outcomes, strict=True)
            if isinstance(o, Article)
        ]
        conn.send(("tagged", tagged, enricher.deltas()))


# --- the parent --------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class _Child:
    proc: Any  # multiprocessing.Process
    conn: Connection
    stage: Any  # shared byte: index into STAGES of the running stage, or IDLE

    def running_stage(self) -> str:
        value = self.stage.value
        return STAGES[value] if 0 <= value < len(STAGES) else "extract"


class _Lost(Exception):
    """The child stopped answering: `reason` is TIMEOUT or WORKER_CRASH."""

    def __init__(self, reason: str, stage: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.stage, self.message = reason, stage, message


@dataclass
class _Clock:
    """The budget of what the child is doing now: wall-clock start, child CPU at start."""

    budget: float
    started: float = field(default_factory=time.monotonic)
    cpu0: float | None = None


class SupervisedEnricher:
    """`Enricher` in a killable child process with a per-page budget (see module doc).

        with SupervisedEnricher(config, PageBudget(seconds=10)) as enricher:
            outcomes = enricher.enrich_many(pages)   # list[Article | Failure], input order

    Not thread-safe: one thread calls `enrich_many` at a time (the agent's executor thread);
    `close()` may come from another thread and makes a running `enrich_many` raise
    `SupervisorError` rather than blame a page for the stop.
    """

    def __init__(self, config: PipelineConfig | None = None, budget: PageBudget | None = None,
                 start_method: str = "forkserver", start_attempts: int = 3) -> None:  # fmt: skip
        self.config = config or PipelineConfig()
        self.budget = budget or PageBudget()
        self.start_method = start_method
        self.start_attempts = start_attempts
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.timeouts = 0
        self.crashes = 0
        self.restarts = 0  # children started after the first
        self._ctx = multiprocessing.get_context(start_method)
        self._child: _Child | None = None
        self._started_once = False
        self._closed = False
        self._lock = threading.Lock()
        _OPEN.add(self)

    # -- life cycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running child's process id (None when none is running)."""
        child = self._child
        return child.proc.pid if child is not None and child.proc.is_alive() else None

    @property
    def closed(self) -> bool:
        return self._closed

    def running(self) -> tuple[int, str | None] | None:
        """(child pid, the stage it is running or None when idle), or None without a child:
        for status pages, and for tests that need to hit a child mid-stage."""
        child = self._child
        if child is None or not child.proc.is_alive():
            return None
        value = child.stage.value
        return child.proc.pid, STAGES[value] if 0 <= value < len(STAGES) else None

    def start(self) -> SupervisedEnricher:
        """Start the child now and wait until its model is loaded (the first batch would
        otherwise). Raises `SupervisorError` if it cannot start, e.g. the model is missing."""
        self._ensure_child()
        return self

    def close(self) -> None:
        """Stop the child: an idle one is asked to exit, a busy one is killed (its batch is
        abandoned: `enrich_many` raises). Idempotent."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            if child.stage.value == IDLE:
                with contextlib.suppress(OSError, ValueError):
                    child.conn.send(None)
                child.proc.join(1.0)
            self._kill(child)

    def __enter__(self) -> SupervisedEnricher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_child(self) -> _Child:
        if self._child is not None and self._child.proc.is_alive():
            return self._child
        if self._child is not None:
            self._discard()
        problem = "not started"
        for attempt in range(1, self.start_attempts + 1):
            if self._closed:
                raise SupervisorError("the supervised enricher is closed")
            try:
                child = self._spawn()
            except ModelLoadError:
                raise
            except SupervisorError as exc:
                problem = str(exc)
                log.warning("enrichment process attempt %d failed: %s", attempt, problem)
                time.sleep(0.5 * attempt)
                continue
            with self._lock:
                if self._closed:
                    self._kill(child)
                    raise SupervisorError("the supervised enricher is closed")
                self._child = child
            self.restarts += self._started_once
            self._started_once = True
            return child
        raise SupervisorError(f"cannot start the enrichment process: {problem}")

    def _spawn(self) -> _Child:
        if self.start_method == "forkserver":
            self._ctx.set_forkserver_preload(list(PRELOAD))  # used once the server starts
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        stage = self._ctx.RawValue("b", IDLE)
        proc = self._ctx.Process(target=_child_main, args=(child_conn, self.config, stage),
                                 name="newsflow-enrich-child", daemon=True)  # fmt: skip
        proc.start()
        child_conn.close()
        child = _Child(proc, parent_conn, stage)
        deadline = time.monotonic() + self.budget.startup_seconds
        while True:
            ready = wait([parent_conn, proc.sentinel], max(deadline - time.monotonic(), 0))
            if not ready:
                self._kill(child)
                raise SupervisorError(f"not ready after {self.budget.startup_seconds:.0f}s")
            try:
                message = parent_conn.recv()
            except (EOFError, OSError):
                proc.join(1.0)
                self._kill(child)
                raise SupervisorError(f"died at start ({_describe_exit(proc.exitcode)})") from None
            if message[0] == "ready":
                log.info("enrichment process %s ready", proc.pid)
                return child
            self._kill(child)
            raise ModelLoadError(f"the enrichment process cannot load its model: {message[1]}")

    def _kill(self, child: _Child) -> None:
        if child.proc.is_alive():
            child.proc.kill()
        child.proc.join(5.0)
        child.conn.close()

    def _discard(self) -> None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            self._kill(child)

    # -- enrichment ---------------------------------------------------------------------------

    def enrich(self, page: RawPage) -> Article | Failure:
        return self.enrich_many([page])[0]

    def enrich_many(self, pages: Iterable[RawPage]) -> list[Article | Failure]:
        """Enrich a batch; the result list is parallel to the input, as `Enricher`'s.

        Raises `SupervisorError` only when no child can run at all (or after `close()`);
        a page that overruns or kills its child is a `Failure` like any other bad page."""
        pages = list(pages)
        outcomes: list[Article | Failure | None] = [None] * len(pages)
        todo = list(range(len(pages)))  # pages still to go through the text stages
        untagged: list[int] = []  # articles made by a child that was lost before NER
        one_by_one = False
        while todo:
            todo, untagged, one_by_one = self._round(pages, todo, untagged, outcomes)
        if untagged and (one_by_one or self._tag(untagged, outcomes) is not None):
            for index in untagged:
                lost = self._tag([index], outcomes)
                if lost is not None:
                    article = outcomes[index]
                    assert isinstance(article, Article)
                    article.entities, article.entities_note = [], f"failed: {lost.reason}"
        return outcomes  # type: ignore[return-value]  # every slot is filled by now

    def _round(
        self,
        pages: list[RawPage],
        todo: list[int],
        untagged: list[int],
        outcomes: list[Article | Failure | None],
    ) -> tuple[list[int], list[int], bool]:
        """One child's go at the pages left (and the NER of `untagged`, articles whose child
        was lost). Returns (pages still left, articles still untagged, whether NER itself was
        lost): all empty when the child got through; else the running page has its Failure
        and the rest goes to the next child."""
        child = self._deliver([(i, outcomes[i]) for i in untagged] +
                              [(i, pages[i]) for i in todo])  # fmt: skip
        made = list(untagged)  # articles in this child's NER batch
        position = 0
        clock = self._clock(child, self.budget.for_page(pages[todo[0]]))
        while True:
            try:
                message = self._receive(child, clock)
            except _Lost as lost:
                if position == len(todo):  # lost in NER: no single page to blame
                    self._account(lost, clock)
                    log.error("enrichment process lost in NER of %d article(s): %s; tagging "
                              "them one at a time", len(made), lost.message)  # fmt: skip
                    return [], made, True
                index = todo[position]
                outcomes[index] = self._blame(lost, pages[index], clock)
                return todo[position + 1 :], made, False
            if message[0] == "tagged":
                self._tagged(message, outcomes)
                return [], [], False
            _, index, outcome, deltas = message
            outcomes[index] = outcome
            self._add(deltas)
            if isinstance(outcome, Article):
                made.append(index)
            position += 1
            if position < len(todo):
                clock = self._clock(child, self.budget.for_page(pages[todo[position]]))
            else:
                clock = self._clock(child, self.budget.for_entities(len(made)))

    def _tag(self, indices: list[int], outcomes: list[Article | Failure | None]) -> _Lost | None:
        """NER alone for `indices` (articles already made) in one child; the `_Lost` if that
        child was lost doing it."""
        child = self._deliver([(i, outcomes[i]) for i in indices])
        clock = self._clock(child, self.budget.for_entities(len(indices)))
        try:
            message = self._receive(child, clock)
        except _Lost as lost:
            self._account(lost, clock)
            log.error("enrichment process lost in NER of %d article(s): %s", len(indices),
                      lost.message)  # fmt: skip
            return lost
        self._tagged(message, outcomes)
        return None

    def _tagged(self, message: tuple, outcomes: list[Article | Failure | None]) -> None:
        _, tagged, deltas = message
        self._add(deltas)
        for index, entities, note in tagged:
            article = outcomes[index]
            assert isinstance(article, Article)
            article.entities, article.entities_note = entities, note

    # -- talking to the child -----------------------------------------------------------------

    def _deliver(self, items: list[tuple[int, Any]], attempts: int = 3) -> _Child:
        """Hand `items` to a child and wait for its receipt. A child that dies before the
        receipt died idle (OOM-killed between batches, say): no page is to blame, so another
        child gets the same work; one that never takes work is a `SupervisorError`."""
        for _ in range(attempts):
            child = self._ensure_child()
            try:
                child.conn.send(items)
                wait([child.conn, child.proc.sentinel], self.budget.startup_seconds)
                if child.conn.poll() and child.conn.recv() == ("got",):
                    return child
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                pass
            self._check_closed()
            log.warning("enrichment process %s lost before taking work (%s); restarting",
                        child.proc.pid, _describe_exit(child.proc.exitcode))  # fmt: skip
            self._discard()
        raise SupervisorError(f"the enrichment process was lost {attempts} times before "
                              "taking any work")  # fmt: skip

    def _clock(self, child: _Child, budget: float) -> _Clock:
        return _Clock(budget, cpu0=_cpu_seconds(child.proc.pid))

    def _receive(self, child: _Child, clock: _Clock) -> tuple:
        """The child's next message, or `_Lost` when the clock's budget is spent (the child
        is then killed) or the child died. Budget = child CPU time, bounded in wall time."""
        wall_limit = clock.started + self.budget.max_wall_factor * clock.budget
        deadline = clock.started + clock.budget
        while True:
            try:
                ready = wait([child.conn, child.proc.sentinel], max(deadline - time.monotonic(), 0))
                if child.conn in ready or (ready and child.conn.poll()):
                    return child.conn.recv()
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                # It died mid-message, or close() took the pipe away: a death (or a stop).
                ready = [child.proc.sentinel]
            if ready:  # the sentinel: the process is gone
                child.proc.join(1.0)
                self._check_closed()
                stage, code = child.running_stage(), child.proc.exitcode
                self._discard()
                self.crashes += 1
                raise _Lost(WORKER_CRASH, stage, f"enrichment process died in {stage} "
                                                 f"({_describe_exit(code)})")  # fmt: skip
            now = time.monotonic()
            cpu = _cpu_seconds(child.proc.pid)
            if clock.cpu0 is not None and cpu is not None and now < wall_limit:
                left = clock.budget - (cpu - clock.cpu0)
                if left > 0.01:  # starved of CPU, not slow: wait for the CPU it is owed
                    deadline = min(now + left, wall_limit)
                    continue
            self._check_closed()
            stage = child.running_stage()
            used = (
                f"{cpu - clock.cpu0:.1f}s CPU, "
                if cpu is not None and clock.cpu0 is not None
                else ""
            )
            self._discard()
            self.timeouts += 1
            raise _Lost(TIMEOUT, stage, f"over the {clock.budget:.1f}s budget in {stage} "
                                        f"({used}{now - clock.started:.1f}s wall); "
                                        "enrichment process killed")  # fmt: skip

    def _check_closed(self) -> None:
        if self._closed:
            raise SupervisorError("the supervised enricher was closed during the batch")

    def _blame(self, lost: _Lost, page: RawPage, clock: _Clock) -> Failure:
        self._account(lost, clock)
        log.error("%s on %s: %s", lost.reason, page.url[:200], lost.message)
        return Failure(lost.reason, lost.stage, lost.message[:500])

    def _account(self, lost: _Lost, clock: _Clock) -> None:
        """The lost work counts as one call of the running stage, for as long as it ran."""
        self.seconds[lost.stage] += time.monotonic() - clock.started
        self.calls[lost.stage] += 1

    def _add(self, deltas: dict[str, tuple[float, int]]) -> None:
        for stage, (seconds, calls) in deltas.items():
            self.seconds[stage] += seconds
            self.calls[stage] += calls


# multiprocessing's own exit handler SIGTERMs daemon children and then waits for them, which a
# child that ignores SIGTERM would never satisfy; atexit runs handlers last-registered first,
# so this one (registered after multiprocessing's) stops every child before that wait.
_OPEN: weakref.WeakSet[SupervisedEnricher] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for enricher in list(_OPEN):
        enricher.close()
