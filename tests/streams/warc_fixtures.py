"""Build real WARC files with warcio from the shared corpus pages, plus the records a crawl
also holds (warcinfo, request, metadata, revisit, an image, a 404, a redirect), for the WARC
reader tests and for `streams.sources.bench_warc`.

    .venv/bin/python -m tests.streams.warc_fixtures OUT.warc.gz [--repeat N]   # bench input
"""

from __future__ import annotations

import argparse
import gzip
import io
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from streams.envelope import declared_charsets

CORPUS = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "corpus"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


@dataclass(frozen=True)
class Expected:
    """One HTML response the reader must turn into exactly one RawPage."""

    url: str
    date: str
    content_type: str
    body: bytes


@dataclass
class Built:
    path: Path
    pages: list[Expected] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def corpus_pages(corpus: Path = CORPUS) -> list[tuple[str, bytes]]:
    """`(url, html bytes)` for every corpus page, in manifest order."""
    out = []
    for line in (corpus / "manifest.jsonl").read_bytes().splitlines():
        if line.strip():
            entry = orjson.loads(line)
            out.append((entry["url"], gzip.decompress((corpus / entry["file"]).read_bytes())))
    return out


def chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


class CorpusWarc:
    """A WARCWriter that records what a correct reader must yield and skip."""

    def __init__(self, fh, gzip_records: bool = True) -> None:
        self.writer = WARCWriter(fh, gzip=gzip_records)
        self.pages: list[Expected] = []
        self.skipped: Counter[str] = Counter()
        self.n = 0

    def _date(self) -> str:
        self.n += 1
        return f"2024-05-01T12:{self.n // 60 % 60:02d}:{self.n % 60:02d}Z"

    def response(
        self,
        url: str,
        body: bytes,
        content_type: str | None = "text/html; charset=utf-8",
        status: str = "200 OK",
        encoding: str = "",
        expect: str | None = "page",
        extra_http: list[tuple[str, str]] | None = None,
        extra_warc: dict[str, str] | None = None,
        expect_type: str | None = None,
    ) -> None:
        """Write one HTTP response; `encoding` is "", "gzip", "chunked" or "gzip+chunked".
        `expect` is "page" or the skip reason the reader must count; `expect_type` the content
        type the page must get (default: the one sent)."""
        date = self._date()
        payload = body
        headers = [] if content_type is None else [("Content-Type", content_type)]
        if "gzip" in encoding:
            payload = gzip.compress(payload)
            headers.append(("Content-Encoding", "gzip"))
        if "deflate" in encoding:
            payload = zlib.compress(payload)
            headers.append(("Content-Encoding", "deflate"))
        if "chunked" in encoding:
            payload = chunked(payload)
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(len(payload))))
        headers += extra_http or []
        record = self.writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(payload),
            http_headers=StatusAndHeaders(status, headers, protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Date": date, **(extra_warc or {})},
        )
        self.writer.write_record(record)
        self._expect(expect, url, date, expect_type or content_type or "", body)

    def _expect(self, expect: str | None, url: str, date: str, ctype: str, body: bytes) -> None:
        if expect == "page":
            self.pages.append(Expected(url, date, ctype, body))
        elif expect:
            self.skipped[expect] += 1

    def request(self, url: str) -> None:
        http = StatusAndHeaders(
            "GET / HTTP/1.1",
            [("Host", url.split("/")[2]), ("User-Agent", "newsflow-test")],
            is_http_request=True,
        )
        record = self.writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=http,
            warc_headers_dict={"WARC-Date": self._date()},
        )
        self.writer.write_record(record)
        self.skipped["warc_not_response"] += 1

    def metadata(self, url: str) -> None:
        record = self.writer.create_warc_record(
            url,
            "metadata",
            payload=io.BytesIO(b"fetchTimeMs: 120\r\n"),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Date": self._date()},
        )
        self.writer.write_record(record)
        self.skipped["warc_not_response"] += 1

    def warcinfo(self) -> None:
        record = self.writer.create_warcinfo_record(
            "corpus.warc.gz", {"software": "newsflow tests", "format": "WARC File Format 1.1"}
        )
        self.writer.write_record(record)
        self.skipped["warc_not_response"] += 1

    def record(
        self, rec_type: str, url: str, body: bytes, content_type: str, expect: str | None = "page"
    ) -> None:
        """A record with no HTTP envelope: `resource` (as browser-based crawlers write), a
        non-HTTP `response` (Heritrix's dns: records), `revisit`."""
        date = self._date()
        record = self.writer.create_warc_record(
            url,
            rec_type,
            payload=io.BytesIO(body),
            warc_content_type=content_type,
            warc_headers_dict={"WARC-Date": date},
        )
        self.writer.write_record(record)
        self._expect(expect, url, date, content_type, body)

    def write_crawl(self, pages: list[tuple[str, bytes]], variety: bool = True) -> None:
        """A crawl of `pages`: request+response per page; with `variety`, transfer/content
        encodings, charsets and the non-page records a real crawl has."""
        self.warcinfo()
        for i, (url, body) in enumerate(pages):
            self.request(url)
            if not variety:
                self.response(url, body)
                continue
            encoding = ("", "gzip", "chunked", "gzip+chunked", "deflate")[i % 5]
            ct = "text/html; charset=utf-8" if i % 3 else "text/html"
            if "iso-8859-1" in declared_charsets("", body):
                ct = "text/html; charset=ISO-8859-1"
            self.response(url, body, content_type=ct, encoding=encoding)
            if i % 10 == 0:
                self.metadata(url)
        if variety:
            self.response("https://example.org/logo.png", PNG, "image/png", expect="warc_not_html")
            self.response(
                "https://example.org/app.js",
                b"var x = 1;",
                "application/javascript",
                expect="warc_not_html",
            )
            self.response(
                "https://example.org/gone",
                b"<html><body>Not found</body></html>",
                status="404 Not Found",
                expect="warc_http_status",
            )
            self.response(
                "https://example.org/old",
                b"",
                status="301 Moved Permanently",
                extra_http=[("Location", "https://example.org/new")],
                expect="warc_http_status",
            )
            self.response(
                "https://example.org/xhtml",
                b"<html><body><p>XHTML page</p></body></html>",
                "application/xhtml+xml; charset=utf-8",
            )
            self.response(
                "https://example.org/untyped",
                b"<html><body><p>No type</p></body></html>",
                content_type=None,
                expect_type="application/octet-stream",
            )
            self.record(
                "response",
                "dns:example.org",
                b"example.org. 300 IN A 1.2.3.4\n",
                "text/dns",
                expect="warc_not_html",
            )
            self.response(
                "https://example.org/robots.txt",
                b"User-agent: *\nDisallow:\n",
                "text/plain",
                expect="warc_not_html",
            )
            self.response(
                "http:///no-host/page.html",
                b"<html><body>no host</body></html>",
                expect="warc_invalid_url",
            )
            self.record(
                "resource",
                "ftp://example.org/page.html",
                b"<html>ftp</html>",
                "text/html",
                expect="warc_invalid_url",
            )
            self.response(
                "https://example.org/cut",
                b"<html><body><p>The first megabyte of a long page",
                extra_warc={"WARC-Truncated": "length"},
                expect="warc_truncated",
            )
            self.response(
                "https://example.org/sniffed",
                b"<html><body><p>Typed by the crawler</p></body></html>",
                content_type=None,
                extra_warc={"WARC-Identified-Payload-Type": "text/html"},
                expect_type="text/html",
            )
            self.record(
                "revisit",
                "https://example.org/xhtml",
                b"",
                "application/http",
                expect="warc_not_response",
            )
            self.record(
                "resource",
                "https://example.org/snapshot",
                b"<html><body><p>Snapshot</p></body></html>",
                "text/html",
            )


def build_warc(
    path: Path, pages: list[tuple[str, bytes]] | None = None, variety: bool = True, repeat: int = 1
) -> Built:
    """Write a crawl WARC of the corpus (gzip per record if the name ends in .gz)."""
    pages = corpus_pages() if pages is None else pages
    with path.open("wb") as fh:
        w = CorpusWarc(fh, gzip_records=path.name.endswith(".gz"))
        for _ in range(repeat):
            w.write_crawl(pages, variety=variety)
    return Built(path, w.pages, w.skipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeat", type=int, default=6, help="copies of the corpus (6 = ~85 MB)")
    args = parser.parse_args()
    built = build_warc(args.out, repeat=args.repeat, variety=True)
    print(
        f"{args.out}: {len(built.pages)} pages, skipped {dict(built.skipped)}, "
        f"{args.out.stat().st_size / 1e6:.1f} MB on disk"
    )


if __name__ == "__main__":
    main()
