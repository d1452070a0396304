"""Fixtures for the streaming tests: a broker for the session, fresh topics per test, workers.

The broker is the one `KAFKA_BOOTSTRAP_SERVERS` names, else an embedded Tansu started once for
the session and stopped at its end. Topics outlive a test and a consumer group remembers its
offsets, so every test gets its own topic names and app id (= group id); short session and
rebalance timeouts keep a group join to a few seconds.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, stop_child
from streams.demo import Worker, embedded_settings, start_worker
from streams.settings import Settings

ENV_BROKER = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()


@dataclass(frozen=True)
class Broker:
    bootstrap_servers: str
    embedded: bool


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    if ENV_BROKER:
        yield Broker(ENV_BROKER, embedded=False)
        return
    with EmbeddedBroker() as embedded:
        yield Broker(embedded.bootstrap_servers, embedded=True)


def fresh_settings(broker: Broker, data_dir: Path, **overrides) -> Settings:
    """Settings with topic names and app id no other test (or earlier run) has used."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    base = Settings(
        app_id=f"newsflow-{tag}",
        topic_raw_pages=f"{tag}-raw-pages",
        topic_articles=f"{tag}-articles",
        topic_dead_letter=f"{tag}-dead-letter",
        topic_duplicates=f"{tag}-duplicates",
        partitions=4,
        data_dir=str(data_dir),
        web_bind="127.0.0.1",
        # Real Kafka refuses session timeouts under group.min.session.timeout.ms (6 s).
        session_timeout=6.0,
        heartbeat_interval=1.0,
        rebalance_timeout=10.0,
        request_timeout=20.0,
        batch_size=8,
        batch_within=0.2,
        producer_linger_ms=5,
    )
    settings = (embedded_settings(base, broker.bootstrap_servers) if broker.embedded
                else replace(base, bootstrap_servers=broker.bootstrap_servers))  # fmt: skip
    return replace(settings, **overrides).with_pipeline()


@pytest.fixture
def stream_settings(broker: Broker, tmp_path: Path) -> Settings:
    return fresh_settings(broker, tmp_path / "state")


class Workers:
    """Starts `newsflow worker` processes and stops every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Worker] = []

    def start(self, settings: Settings, count: int = 1, timeout: float = 60.0) -> list[Worker]:
        """Start `count` workers in one group; return once the group has settled with every
        partition assigned and each worker holding at least one."""
        new = [start_worker(settings, self.workdir, len(self.started) + i, loglevel="warn")
               for i in range(count)]  # fmt: skip
        self.started.extend(new)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [w for w in new if w.proc.poll() is not None]
            if dead:
                pytest.fail(f"worker exited with {dead[0].proc.returncode}:\n{dead[0].log_tail()}")
            statuses = [w.status() for w in new]
            if all(s and s["partitions"] for s in statuses):
                owned = sorted(p for s in statuses for p in s["partitions"])
                if owned == list(range(settings.partitions)):
                    return new
            time.sleep(0.25)
        logs = "\n".join(w.log_tail(1500) for w in new)
        pytest.fail(f"workers did not get the partitions within {timeout}s:\n{logs}")

    def stop_all(self) -> list[int | None]:
        return [stop_child(w.proc, timeout=20) for w in self.started]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path / "workers")
    pool.workdir.mkdir()
    try:
        yield pool
    finally:
        pool.stop_all()
