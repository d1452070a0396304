"""WARC input: WARCs written with warcio from the 110 corpus pages plus the records a crawl also
holds; every HTML response must become exactly one RawPage, everything else a counted skip,
and a broken file must not stop the inputs after it."""

from __future__ import annotations

import gzip
import random

import pytest
from warcio.archiveiterator import ArchiveIterator

from agents.records import RawPage
from streams.sources import SourceError, SourceStats, bench_warc, iter_pages
from tests.streams.warc_fixtures import Built, build_warc, corpus_pages


@pytest.fixture(scope="module")
def pages() -> list[tuple[str, bytes]]:
    return corpus_pages()


@pytest.fixture(scope="module", params=["crawl.warc.gz", "crawl.warc"])
def crawl(request, tmp_path_factory, pages) -> Built:
    return build_warc(tmp_path_factory.mktemp("warc") / request.param, pages)


def read(paths, **kwargs) -> tuple[list[RawPage | SourceError], SourceStats]:
    stats = SourceStats()
    return list(iter_pages(paths, stats=stats, **kwargs)), stats


def test_every_html_record_is_one_page_and_the_rest_is_counted(crawl, pages):
    items, stats = read([crawl.path])
    assert all(isinstance(i, RawPage) for i in items)
    assert len(crawl.pages) == len(pages) + 4  # corpus + xhtml, untyped, sniffed, snapshot
    got = [(p.url, p.fetched_at, p.content_type, p.body) for p in items]
    want = [(e.url, e.date, e.content_type, e.body) for e in crawl.pages]
    assert got == want
    assert stats.skipped == crawl.skipped
    assert stats.skipped == {
        "warc_not_response": 1 + len(pages) + 11 + 1,  # warcinfo, requests, metadata, revisit
        "warc_not_html": 4,  # png, js, dns, robots.txt
        "warc_http_status": 2,  # 404, 301
        "warc_invalid_url": 2,  # http:/// without host, ftp:
        "warc_truncated": 1,  # WARC-Truncated: length
    }
    assert stats.details["warc_not_html: image/png"] == 1
    assert stats.details["warc_http_status: 404"] == 1
    assert stats.records == stats.pages + sum(stats.skipped.values())
    assert stats.bytes_read == crawl.path.stat().st_size


def test_charset_and_decoded_encodings(crawl):
    items, _ = read([crawl.path])
    by_url = {p.url: p for p in items}
    latin = [e for e in crawl.pages if "ISO-8859-1" in e.content_type]
    assert latin and all(by_url[e.url].content_type == e.content_type for e in latin)
    # gzip, deflate and chunked payloads come out as the original page bytes
    assert all(by_url[e.url].body == e.body for e in crawl.pages)
    assert by_url["https://example.org/untyped"].content_type == "application/octet-stream"
    assert by_url["https://example.org/sniffed"].content_type == "text/html"


def test_source_is_the_record_offset(crawl):
    items, _ = read([crawl.path])
    with crawl.path.open("rb") as fh:
        for page in items[::23]:
            path, _, offset = page.source.rpartition("@")
            assert path == str(crawl.path)
            fh.seek(int(offset))
            record = next(iter(ArchiveIterator(fh)))
            assert record.rec_headers.get_header("WARC-Target-URI") == page.url


def test_max_bytes_caps_each_payload(crawl):
    items, _ = read([crawl.path], max_bytes=5_000)
    for page, want in zip(items, crawl.pages, strict=True):
        assert page.body == want.body[:5_001]


def test_whole_file_gzip_reads_like_the_plain_file(tmp_path, pages):
    plain = build_warc(tmp_path / "small.warc", pages[:12])
    whole = tmp_path / "small-whole.warc.gz"
    whole.write_bytes(gzip.compress(plain.path.read_bytes()))
    items, stats = read([whole])
    assert [(p.url, p.body) for p in items] == [(e.url, e.body) for e in plain.pages]
    assert stats.skipped == plain.skipped and not stats.errors


@pytest.mark.parametrize("name", ["cut.warc.gz", "cut.warc"])
def test_file_cut_mid_record_keeps_what_came_before(tmp_path, pages, corpus_dir, name):
    full = build_warc(tmp_path / name, pages[:8], variety=False)
    data = full.path.read_bytes()
    cut_at = int(len(data) * 0.6)
    full.path.write_bytes(data[:cut_at])
    after = corpus_dir / "pages" / "adac.de.kindersitze.html.gz"
    items, stats = read([full.path, after])
    warc_pages = [
        i for i in items if isinstance(i, RawPage) and i.source.startswith(str(full.path))
    ]
    assert 0 < len(warc_pages) < 8
    assert [p.body for p in warc_pages] == [e.body for e in full.pages[: len(warc_pages)]]
    assert stats.skipped["warc_truncated"] == 1
    assert items[-1].source == str(after)  # the next input is still read


def test_corrupt_gzip_member_is_reported_not_silently_ending_the_file(tmp_path, pages, corpus_dir):
    built = build_warc(tmp_path / "bad.warc.gz", pages[:8], variety=False)
    with built.path.open("rb") as fh:
        it = ArchiveIterator(fh)
        members = [(it.get_record_offset(), it.get_record_length()) for _ in it]
    offset, length = max(members, key=lambda m: m[1])
    middle = offset + length // 2  # inside the biggest record's gzip member
    data = built.path.read_bytes()
    built.path.write_bytes(data[:middle] + b"GARBAGE\r\n" * 5 + data[middle:])
    items, stats = read([built.path, corpus_dir / "pages" / "adac.de.kindersitze.html.gz"])
    errors = [i for i in items if isinstance(i, SourceError)]
    assert len(errors) == 1 and errors[0].failure.reason == "warc_malformed"
    assert errors[0].source.startswith(f"{built.path}@")
    assert stats.pages < 8 + 1 and isinstance(items[-1], RawPage)


def test_not_a_warc_is_one_error_then_the_next_input(tmp_path, corpus_dir):
    path = tmp_path / "fake.warc"
    path.write_bytes(b"<html><body>not a WARC</body></html>")
    items, stats = read([path, corpus_dir / "pages" / "adac.de.kindersitze.html.gz"])
    assert isinstance(items[0], SourceError) and items[0].failure.reason == "warc_malformed"
    assert isinstance(items[1], RawPage) and stats.errors == {"warc_malformed": 1}


def test_a_record_without_warc_type_is_a_malformed_skip(tmp_path):
    path = tmp_path / "headless.warc"
    path.write_bytes(b"WARC/1.0\r\nContent-Length: 4\r\n\r\nbody\r\n\r\n")
    items, stats = read([path])
    assert items == [] and stats.skipped == {"warc_malformed": 1} and not stats.errors


def test_warcs_inside_folders_are_read(tmp_path, pages):
    folder = tmp_path / "crawl"
    folder.mkdir()
    built = build_warc(folder / "part-0.warc.gz", pages[:3], variety=False)
    items, _ = read([folder])
    assert [p.url for p in items] == [e.url for e in built.pages]


def test_bench_warc_reads_the_same_records_every_way(tmp_path, pages):
    built = build_warc(tmp_path / "bench.warc.gz", pages[:10], variety=False)
    report = bench_warc(built.path)
    assert report["warcio"]["records"] == report["iter_pages"]["records"] == 21
    assert report["warcio"]["payload_mb"] == report["iter_pages"]["payload_mb"] > 0


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at, roll = rng.randrange(len(out)), rng.random()
        if roll < 0.4:
            out[at] = rng.randrange(256)
        elif roll < 0.7:
            del out[at : at + rng.randint(1, 50)]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 20))
    return bytes(out)


@pytest.mark.parametrize("name", ["fuzz.warc.gz", "fuzz.warc"])
def test_mutated_warcs_never_stop_the_next_input(tmp_path, pages, corpus_dir, name):
    """Seeded byte flips, cuts and insertions: warcio raises all sorts (AttributeError for a
    record without WARC-Target-URI); iteration must turn each into a SourceError and go on."""
    small = [(url, body[:3_000]) for url, body in pages[:4]]
    data = build_warc(tmp_path / name, small).path.read_bytes()
    after = corpus_dir / "pages" / "adac.de.kindersitze.html.gz"
    rng = random.Random(1)
    broken = tmp_path / f"broken-{name}"
    for _ in range(300):
        broken.write_bytes(mutate(data, rng))
        items, stats = read([broken, after])
        assert items[-1].source == str(after)
        unaccounted = stats.records - stats.pages - sum(stats.skipped.values())
        assert 0 <= unaccounted <= sum(stats.errors.values())
