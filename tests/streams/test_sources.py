"""Input sources: page files and folders (with manifest URLs), .jsonl envelopes, stdin, stats."""

from __future__ import annotations

import gzip
import io
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from agents.records import RawPage
from streams.envelope import EnvelopeLimits, page_to_envelope
from streams.sources import (
    SourceError,
    SourceStats,
    input_bytes,
    iter_input_files,
    iter_page_files,
    iter_pages,
    read_page,
)


def manifest(corpus_dir: Path) -> list[dict]:
    return [orjson.loads(x) for x in (corpus_dir / "manifest.jsonl").read_bytes().splitlines()]


def test_corpus_folder_gives_every_page_with_its_manifest_url(corpus_dir):
    stats = SourceStats()
    pages = list(iter_pages([corpus_dir], stats=stats))
    entries = manifest(corpus_dir)
    assert all(isinstance(p, RawPage) for p in pages)
    by_file = {str(corpus_dir / e["file"]): e for e in entries}
    assert sorted(p.source for p in pages) == sorted(by_file)
    for page in pages:
        entry = by_file[page.source]
        assert page.url == entry["url"]
        assert isinstance(page.body, bytes) and len(page.body) == entry["bytes"]
        assert page.content_type == "text/html" and page.fetched_at
    assert (stats.records, stats.pages, sum(stats.errors.values())) == (110, 110, 0)
    assert (
        stats.bytes_read
        == input_bytes([corpus_dir])
        == sum((corpus_dir / e["file"]).stat().st_size for e in entries)
    )
    # the old entry points still agree with the new ones
    assert [f for f, _ in iter_page_files([corpus_dir])] == [
        f for f, kind, _ in iter_input_files([corpus_dir])
    ]


def test_single_file_url_override_and_file_url_default(seeds_dir):
    seed = sorted(seeds_dir.glob("*.txt"))[0]
    (page,) = iter_pages([seed], url="https://example.org/seed")
    assert page.url == "https://example.org/seed" and page.content_type == "text/plain"
    (page,) = iter_pages([seed])
    assert page.url == seed.resolve().as_uri()


def test_max_bytes_reads_one_byte_more_so_extract_can_say_too_large(corpus_dir):
    entry = manifest(corpus_dir)[0]
    (page,) = iter_pages([corpus_dir / entry["file"]], max_bytes=1000)
    assert len(page.body) == 1001
    assert read_page(corpus_dir / entry["file"]).body[:1001] == page.body


def test_unreadable_inputs_are_errors_and_iteration_goes_on(tmp_path, corpus_dir):
    broken = tmp_path / "broken.html.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 this is not gzip data")
    good = corpus_dir / manifest(corpus_dir)[0]["file"]
    stats = SourceStats()
    items = list(iter_pages([tmp_path / "missing.html", broken, good], stats=stats))
    assert [type(i) for i in items] == [SourceError, SourceError, RawPage]
    assert items[0].source.endswith("missing.html") and items[0].failure.reason == "unreadable"
    assert items[1].failure.reason == "unreadable"
    assert stats.errors == {"unreadable": 2} and stats.pages == 1 and stats.records == 3


def corpus_pages(corpus_dir: Path, n: int) -> list[RawPage]:
    return [
        RawPage(e["url"], gzip.decompress((corpus_dir / e["file"]).read_bytes()), "text/html")
        for e in manifest(corpus_dir)[:n]
    ]


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["pages.jsonl", "pages.jsonl.gz"])
def test_jsonl_good_and_bad_lines(tmp_path, corpus_dir, name):
    good = corpus_pages(corpus_dir, 5)
    lines = [page_to_envelope(p) for p in good[:2]]
    lines += [
        b'{"url": "https://example.org/x", "html": ',  # 3: cut-off JSON
        b"",  # blank: not a record
        b'{"html": "<p>no url</p>"}',  # 5
        b"<html><p>bare HTML is not an envelope line</p></html>",  # 6
        b'{"url": "https://example.org/y", "html": "<p>from a feed</p>", "source": "feed-3"}',
        b'{"url": "mailto:someone@example.org", "html": "<p>x</p>"}',  # 8
        b'{"url": "https://example.org/z", "body_base64": 17}',  # 9
    ]
    lines += [page_to_envelope(p) for p in good[2:]]
    path = write_jsonl(tmp_path / name, lines)
    stats = SourceStats()
    items = list(iter_pages([path], stats=stats))
    errors = [(i.source, i.failure.reason) for i in items if isinstance(i, SourceError)]
    assert errors == [
        (f"{path}:3", "malformed_envelope"),
        (f"{path}:5", "missing_url"),
        (f"{path}:6", "malformed_envelope"),
        (f"{path}:8", "invalid_url"),
        (f"{path}:9", "malformed_envelope"),
    ]
    pages = [i for i in items if isinstance(i, RawPage)]
    assert [p.url for p in pages] == [*(p.url for p in good[:2]), "https://example.org/y"] + [
        p.url for p in good[2:]
    ]
    assert [p.body.encode() if isinstance(p.body, str) else p.body for p in pages[:2]] == [
        p.body for p in good[:2]
    ]
    # an envelope's own source wins; otherwise the line says where the page came from
    assert pages[0].source == f"{path}:1" and pages[2].source == "feed-3"
    assert pages[3].source == f"{path}:10"
    assert (stats.records, stats.pages, sum(stats.errors.values())) == (11, 6, 5)
    assert stats.bytes_read == path.stat().st_size


def test_overlong_jsonl_line_is_skipped_without_losing_the_next(tmp_path):
    limits = EnvelopeLimits(max_page_bytes=1_000, max_url_chars=100, max_field_chars=50)
    huge = b'{"url": "https://example.org/huge", "html": "' + b"x" * 200_000 + b'"}'
    assert len(huge) > limits.max_envelope_bytes
    after = b'{"url": "https://example.org/after", "html": "<p>next line</p>"}'
    path = write_jsonl(tmp_path / "big.jsonl", [huge, after])
    items = list(iter_pages([path], limits=limits))
    assert isinstance(items[0], SourceError) and items[0].source == f"{path}:1"
    assert items[0].failure.reason == "too_large"
    assert isinstance(items[1], RawPage) and items[1].source == f"{path}:2"


def test_max_bytes_applies_to_jsonl_bodies(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [b'{"url": "https://example.org/a", "html": "' + b"y" * 50 + b'"}']
    )
    (item,) = iter_pages([path], max_bytes=49)
    assert isinstance(item, SourceError) and item.failure.reason == "too_large"
    (item,) = iter_pages([path], max_bytes=50)
    assert isinstance(item, RawPage)


def test_stdin_reads_envelope_lines(monkeypatch, corpus_dir):
    good = corpus_pages(corpus_dir, 3)
    data = b"".join(page_to_envelope(p) + b"\n" for p in good) + b'{"url": 1}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    stats = SourceStats()
    items = list(iter_pages(["-"], stats=stats))
    assert [p.url for p in items[:3]] == [p.url for p in good]
    assert [p.source for p in items[:3]] == ["<stdin>:1", "<stdin>:2", "<stdin>:3"]
    assert isinstance(items[3], SourceError) and items[3].source == "<stdin>:4"
    assert stats.bytes_read == len(data) and input_bytes(["-"]) is None


def test_folders_pick_up_warcs_but_not_jsonl(tmp_path, corpus_dir):
    entry = manifest(corpus_dir)[0]
    shutil.copy(corpus_dir / entry["file"], tmp_path / "a.html.gz")
    (tmp_path / "crawl.warc.gz").write_bytes(b"")
    (tmp_path / "articles.jsonl").write_bytes(b'{"url": "https://x.org/", "text": "an article"}\n')
    (tmp_path / "notes.md").write_text("not an input")
    kinds = [(Path(p).name, kind) for p, kind, _ in iter_input_files([tmp_path])]
    assert kinds == [("a.html.gz", "page"), ("crawl.warc.gz", "warc")]
    named = [kind for _, kind, _ in iter_input_files([tmp_path / "articles.jsonl", "-"])]
    assert named == ["jsonl", "stdin"]
