"""The Kafka commands as users run them: `newsflow produce`, `tail`, `worker` and `demo`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from agents.records import Article, Entity, Failure
from streams.broker import stop_child
from streams.consumer import read_records
from streams.demo import start_worker
from streams.producer import host_partition, producer_options
from streams.settings import Settings
from streams.topics import InputRef, article_value, dead_letter_value, ensure_topics

from .conftest import ENV_BROKER

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


def newsflow(
    args: list[str], settings: Settings | None, *, stdin: bytes | None = None,
    timeout: float = 120, env_extra: dict | None = None,
) -> subprocess.CompletedProcess:  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NEWSFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"}  # fmt: skip
    if settings is not None:
        env.update(settings.env())
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, env=env,
                          capture_output=True, timeout=timeout, cwd=REPO)  # fmt: skip


def records(settings: Settings, topic: str, limit: int) -> list:
    async def read() -> list:
        return [r async for r in read_records(settings, [topic], start="beginning",
                                              idle_timeout=3, limit=limit)]  # fmt: skip

    return asyncio.run(read())


def envelope(url: str, text: str = "Some text.") -> bytes:
    return orjson.dumps({"url": url, "html": f"<html><body><p>{text}</p></body></html>",
                         "source": "test"})  # fmt: skip


def test_produce_reads_files_jsonl_and_stdin_and_reports_counts(
    stream_settings: Settings, seeds_dir: Path, tmp_path: Path
):
    jsonl = tmp_path / "pages.jsonl"
    lines = [envelope(f"https://a.example/{i}") for i in range(3)] + [b"{not json"]
    jsonl.write_bytes(b"\n".join(lines) + b"\n")
    done = newsflow(["produce", str(seeds_dir), str(jsonl), "-", "--json"], stream_settings,
                    stdin=envelope("https://stdin.example/1") + b"\n")  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(done.stdout)
    # 2 seed files + 4 JSON lines (one broken) + 1 line on stdin
    assert (report["read"], report["sent"], report["skipped"], report["failed"]) == (7, 6, 1, 0)
    assert any("pages.jsonl:4" in p for p in report["problems"])
    assert b"sent 6, skipped 1, failed 0" in done.stderr
    got = records(stream_settings, stream_settings.topic_raw_pages, 6)
    keys = sorted(r.key.decode() for r in got)
    assert keys[-4:] == ["https://a.example/0", "https://a.example/1", "https://a.example/2",
                         "https://stdin.example/1"]  # fmt: skip
    assert all(r.key.startswith(b"file://") for r in got if b"seeds" in r.key)


def test_produce_without_keys_and_partitioned_by_host(stream_settings: Settings, tmp_path: Path):
    hosts = ["news.example", "blog.example", "shop.example"]
    urls = [f"https://{h}/page/{i}" for h in hosts for i in range(4)]
    jsonl = tmp_path / "pages.jsonl"
    jsonl.write_bytes(b"\n".join(envelope(u) for u in urls))
    done = newsflow(["produce", str(jsonl), "--key", "none", "--partition-by", "host", "-q"],
                    stream_settings)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    got = records(stream_settings, stream_settings.topic_raw_pages, len(urls))
    assert len(got) == len(urls) and all(r.key is None for r in got)
    for r in got:
        url = orjson.loads(r.value)["url"]
        assert r.partition == host_partition(url, stream_settings.partitions)


def test_host_partition_is_kafkas_default_partitioner_applied_to_the_host():
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(6))
    for host in ("news.example", "blog.example", "www.bbc.co.uk", ""):
        expected = DefaultPartitioner()(host.encode(), parts, parts)
        assert host_partition(f"https://{host}/x?y=1", 6) == expected


def test_tail_prints_json_lines_and_readable_summaries(stream_settings: Settings):
    asyncio.run(ensure_topics(stream_settings))
    article = Article(id="0123456789abcdef0123", url="https://a.example/story", title="A story",
                      text="Text.", language="en",
                      entities=[Entity("Palmyra", "GPE", 2)])  # fmt: skip
    ref = InputRef(stream_settings.topic_raw_pages, 2, 41, b"https://b.example/x", 10)
    dead = dead_letter_value(ref, Failure("no_content", "extract", "nothing left"),
                             url="https://b.example/x", worker="test:1")  # fmt: skip

    async def write() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**producer_options(stream_settings))
        await producer.start()
        value = article_value(article, stream_settings.max_message_bytes)
        await producer.send_and_wait(stream_settings.topic_articles, value, key=b"k")
        await producer.send_and_wait(stream_settings.topic_dead_letter, dead, key=ref.key)
        await producer.stop()

    asyncio.run(write())
    args = ["--from-beginning", "--limit", "1"]
    done = newsflow(["tail", "articles", *args], stream_settings)
    assert done.returncode == 0, done.stderr.decode()
    assert orjson.loads(done.stdout) == article.to_dict()
    done = newsflow(["tail", "dead-letter", *args, "--format", "summary"], stream_settings)
    line = done.stdout.decode()
    assert "extract/no_content" in line and "https://b.example/x" in line
    # Without --from-beginning only new records count: nothing arrives, the idle timeout ends it.
    done = newsflow(["tail", "articles", "--idle-timeout", "2"], stream_settings)
    assert done.returncode == 0 and done.stdout == b""


def test_worker_passes_options_to_faust_and_needs_a_broker():
    done = newsflow(["worker", "--help"], None, env_extra={"KAFKA_BOOTSTRAP_SERVERS": "x:1"})
    assert done.returncode == 0
    assert b"--web-port" in done.stdout and b"--loglevel" in done.stdout
    done = newsflow(["worker"], None)
    assert done.returncode == 2 and b"KAFKA_BOOTSTRAP_SERVERS" in done.stderr


def _demo_env(settings: Settings) -> tuple[Settings | None, dict]:
    """Against the session's broker if KAFKA_BOOTSTRAP_SERVERS is set (fresh topics), else
    the demo's own embedded broker, exactly as the README runs it."""
    if ENV_BROKER:
        return settings, {}
    return None, {"NEWSFLOW_APP_ID": settings.app_id}


def _port_closed(where: str) -> bool:
    host, port = where.rsplit(" ", 1)[-1].split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


def _workers_of(app_id: str) -> list[int]:
    """Live `newsflow worker` processes whose environment carries this test's app id."""
    found = []
    needle = f"NEWSFLOW_APP_ID={app_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                is_worker = b"worker" in (entry / "cmdline").read_bytes().split(b"\0")
                if is_worker and needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_demo_prints_a_summary_of_every_page(stream_settings: Settings):
    settings, extra = _demo_env(stream_settings)
    done = newsflow(["demo", "--json", "-q"], settings, env_extra=extra, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary = orjson.loads(done.stdout)
    assert (summary["pages_in"], summary["sent"], summary["outcomes"]) == (112, 112, 112)
    assert summary["articles"] + summary["dead_letters"] + summary["duplicates"] == 112
    assert summary["articles"] >= 100 and summary["conflicts"] == 0
    # every article has a story; the two seeds share one
    assert 0 < summary["stories"] < summary["articles"]
    assert {"en", "de"} <= set(summary["languages"])
    assert summary["top_entities"] and summary["pages_per_second"] > 0
    assert summary["workers_used"] == 1
    if not ENV_BROKER:
        assert summary["broker"].startswith("embedded Tansu")
        assert _port_closed(summary["broker"])
    assert _workers_of(stream_settings.app_id) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_demo_stops_workers_and_broker_on_ctrl_c(stream_settings: Settings):
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    settings, extra = _demo_env(stream_settings)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NEWSFLOW_") and k != "KAFKA_BOOTSTRAP_SERVERS"}  # fmt: skip
    env.update(settings.env() if settings else {})
    env.update(extra)
    # A shell's background job (`pytest ... &`) ignores SIGINT, and so would the demo: give
    # it the default disposition a terminal's foreground process has.
    demo = subprocess.Popen([sys.executable, "-m", "streams.cli", "demo"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)  # fmt: skip
    said = b""
    try:
        while b"producing" not in said:  # the broker and the worker are up by then
            line = demo.stderr.readline()
            assert line, f"the demo ended early: {said.decode()}"
            said += line
        assert _workers_of(stream_settings.app_id), "the demo started no worker"
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, err.decode()[-2000:]
    assert b"interrupted" in err
    assert _workers_of(stream_settings.app_id) == []
    if not ENV_BROKER:
        where = re.search(r"embedded Tansu at \S+:\d+", said.decode())
        assert where and _port_closed(where.group(0))


def test_a_worker_without_its_model_fails_at_start(stream_settings: Settings, tmp_path: Path):
    settings = replace(stream_settings, spacy_model="no_such_model").with_pipeline()
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, tmp_path)
    try:
        code = worker.proc.wait(90)
    finally:
        stop_child(worker.proc)
    assert code != 0
    assert "no_such_model" in worker.log_tail()
