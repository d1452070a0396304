"""CPU time, run-queue wait and memory of process trees, sampled from /proc.

The broker phases of `newsflow bench pipeline` (and `bench produce`) watch real worker
processes, each a tree (Faust worker, fork server, enrichment child): `TreeSampler` sums the
tree's CPU (including reaped children), the time its threads waited for a CPU (what a loaded
machine costs, not the code), RSS and Pss, in a background thread. Linux only: elsewhere
the files are missing and every reading is empty.

Pss is read sparingly: the kernel computes it by walking every page of the process
(`smaps_rollup`), holding the process's memory-map lock. Read every 0.25 s from two workers'
trees it was nearly all of the harness's own CPU (py-spy), 0.08 of the 2 cores the workers
were measured on. It is read every `pss_interval` seconds and whenever the tree's RSS is 1%
above its highest so far (a tree's Pss grows with its RSS); VmHWM still gives each process's
exact peak RSS.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Sample:
    at: float  # time.time()
    cpu: float  # seconds of CPU of the process tree (live processes and reaped children)
    wait: float  # seconds its live threads spent runnable but waiting for a CPU (schedstat)
    rss: int  # bytes, summed over the tree (shared pages counted in each process)
    pss: int  # bytes, summed over the tree (shared pages split between processes), last read
    processes: int


@dataclass
class Watched:
    pid: int
    tree: bool  # False: the process alone, without its children's time (the harness itself)
    samples: list[Sample] = field(default_factory=list)
    hwm: dict[int, int] = field(default_factory=dict)  # VmHWM per pid of the tree
    pss_at: float = -math.inf  # when Pss was last read (time.monotonic()), at what tree RSS
    pss_rss: int = 0


class TreeSampler:
    """Samples CPU time and memory of process trees from /proc in a background thread."""

    def __init__(self, interval: float = 0.25, pss_interval: float = 2.0) -> None:
        self.interval = interval
        self.pss_interval = pss_interval
        self.watched: dict[str, Watched] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def watch(self, name: str, pid: int, tree: bool = True) -> None:
        with self._lock:
            self.watched[name] = Watched(pid, tree)
        self.sample(name)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                names = list(self.watched)
            for name in names:
                self.sample(name)

    def sample(self, name: str) -> None:
        with self._lock:
            watched = self.watched.get(name)
        if watched is None:
            return
        pids = _tree(watched.pid) if watched.tree else [watched.pid]
        cpu, wait, rss, live = 0.0, 0.0, 0, []
        for pid in pids:
            stat = _stat(pid, children=watched.tree)
            if stat is None:
                continue
            live.append(pid)
            cpu += stat
            wait += _run_delay(pid)
            status = _status(pid)
            rss += status.get("VmRSS", 0)
            if "VmHWM" in status:
                watched.hwm[pid] = max(watched.hwm.get(pid, 0), status["VmHWM"])
        if not live:
            return
        now = time.monotonic()
        if now - watched.pss_at >= self.pss_interval or rss > watched.pss_rss * 1.01:
            pss, watched.pss_at = sum(_pss(pid) for pid in live), now
            watched.pss_rss = max(watched.pss_rss, rss)
        else:  # the first sample always reads it
            pss = watched.samples[-1].pss
        watched.samples.append(Sample(time.time(), cpu, wait, rss, pss, len(live)))

    def between(self, name: str, t0: float, t1: float, what: str = "cpu") -> float | None:
        """Seconds of `cpu` (or run-queue `wait`) the tree had between two wall times, linear
        between samples."""
        samples = self.watched[name].samples
        if len(samples) < 2 or t1 <= t0:
            return None
        return _interpolate(samples, t1, what) - _interpolate(samples, t0, what)

    def memory(self, name: str) -> dict[str, Any]:
        watched = self.watched[name]
        samples = watched.samples
        return {
            "pid": watched.pid,
            "samples": len(samples),
            "processes_max": max((s.processes for s in samples), default=0),
            "rss_peak_bytes": max((s.rss for s in samples), default=0),
            "pss_peak_bytes": max((s.pss for s in samples), default=0),
            "vm_hwm_bytes": {str(pid): peak for pid, peak in sorted(watched.hwm.items())},
        }


def _interpolate(samples: list[Sample], at: float, what: str) -> float:
    if at <= samples[0].at:
        return getattr(samples[0], what)
    for before, after in itertools.pairwise(samples):
        if before.at <= at <= after.at:
            span = after.at - before.at
            weight = (at - before.at) / span if span else 1.0
            a, b = getattr(before, what), getattr(after, what)
            return a + weight * (b - a)
    return getattr(samples[-1], what)


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (via /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except (OSError, ValueError):
                continue
    return out


def _stat(pid: int, children: bool = True) -> float | None:
    """utime + stime + cutime + cstime in seconds: a reaped child's time moves into its
    parent's c-times, so a tree's sum does not drop when a child exits. Without `children`,
    utime + stime: the process's own time."""
    raw = read(f"/proc/{pid}/stat")
    if not raw:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    try:
        return sum(int(x) for x in fields[11 : 15 if children else 13]) / CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def _run_delay(pid: int) -> float:
    """Seconds the process's live threads waited on a run queue: CPU starvation, which a
    loaded machine causes and the process cannot."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(task.read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def _pss(pid: int) -> int:
    for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float | None:
    """CPU time of one process (and its reaped children) so far."""
    return _stat(pid)


def read(path: str) -> str:
    """A /proc file's text, or "" if it is gone (the process exited) or unreadable."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""
