"""Turn what users point newsflow at into `RawPage`s, lazily, one at a time, with counts.

Inputs (by name; `.gz` allowed on each):

* `.html`, `.htm`, `.txt` page files, and folders of them (recursively, sorted). A folder may
  hold a `manifest.jsonl` of `{"url", "file"}` lines, as `../shared/corpus/` does: pages listed
  there get their original URL, others a `file://` URL and the file's mtime as `fetched_at`.
* `.jsonl` / `.ndjson`: one raw-pages envelope per line (`streams/envelope.py`). A bad line is a
  `SourceError` whose source is `file.jsonl:LINE`. Not picked up from folders: a folder of
  results (articles are JSON lines with `url` and `text`) must not be re-read as pages.
* `-`: the same JSON lines on stdin.
* `.warc`, `.warc.gz` (also inside folders): HTTP `response` records and `resource` records
  whose content type is HTML or undeclared, read with warcio, one record at a time (a multi-GB
  WARC never sits in memory). `url` = `WARC-Target-URI`, `fetched_at` = `WARC-Date`,
  `content_type` = the HTTP Content-Type as sent (charset included; missing means
  `application/octet-stream`, RFC 9110 8.3), body = the payload with chunked transfer coding
  and gzip/deflate(/br with `brotli`) content coding removed, at most `max_bytes + 1` bytes so
  extraction can say `too_large`. `source` = `file.warc.gz@OFFSET`, the record's byte offset.

Records that are not pages are counted in `SourceStats.skipped`, never yielded:
`warc_not_response` (warcinfo, request, metadata, revisit: a revisit repeats a payload already
read), `warc_http_status` (anything but 200: redirects, errors and 304s carry no article),
`warc_not_html` (declared non-HTML, incl. text/plain, which in crawls is robots.txt),
`warc_invalid_url` (dns:, ftp:, …), `warc_truncated` (`WARC-Truncated` set by the crawler, or
the record is cut short by the end of the file: a partial page would become a partial article)
and `warc_malformed` (the payload cannot be decoded). A WARC that cannot be read past some
point yields one `SourceError` (`warc_malformed`, `file@OFFSET`) and iteration goes on with
the next input. A whole-file-gzipped WARC (not per record) is read as one gzip stream.
"""

from __future__ import annotations

import contextlib
import gzip
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from agents.records import Failure, RawPage
from streams.envelope import (
    DEFAULT_LIMITS,
    HTML_TYPES,
    UNDECLARED_TYPES,
    EnvelopeLimits,
    check_url,
    media_type,
    parse_raw_page,
)

PAGE_SUFFIXES = (".html", ".htm", ".txt")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
WARC_SUFFIXES = (".warc",)
STDIN = "-"
MANIFEST = "manifest.jsonl"
READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class SourceError:
    """An input that could not be read at all: carries its path and a Failure."""

    source: str
    failure: Failure


@dataclass
class SourceStats:
    """What iteration saw so far; the caller owns it and may read it at any time.

    `records`: input units seen (page files, non-blank JSON lines, WARC records of any type);
    `bytes_read`: bytes consumed from disk or stdin (compressed), for a progress bar against
    `input_bytes`; `pages`: RawPages yielded; `skipped`: records deliberately not yielded, by
    reason; `errors`: SourceErrors yielded, by reason; `details`: `reason: detail` counts
    (e.g. `warc_not_html: image/png`, `warc_http_status: 404`) for a summary.
    """

    records: int = 0
    bytes_read: int = 0
    pages: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    details: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.details[f"{reason}: {detail}" if detail else reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes_read": self.bytes_read,
            "pages": self.pages,
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
            "details": dict(self.details),
        }


def _bare_name(path: Path) -> str:
    return path.name.lower().removesuffix(".gz")


def is_page_file(path: Path) -> bool:
    return _bare_name(path).endswith(PAGE_SUFFIXES)


def input_kind(path: Path | str) -> str:
    """`stdin`, `warc`, `jsonl` or `page` (anything else named explicitly is read as a page)."""
    if str(path) == STDIN:
        return "stdin"
    name = _bare_name(Path(path))
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "page"


def content_type_for(path: Path) -> str:
    return "text/plain" if _bare_name(path).endswith(".txt") else "text/html"


def _manifest_urls(folder: Path) -> dict[Path, str]:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return {}
    urls: dict[Path, str] = {}
    for line in manifest.read_bytes().splitlines():
        if line.strip():
            entry = orjson.loads(line)
            urls[(folder / entry["file"]).resolve()] = entry["url"]
    return urls


def iter_page_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Yield `(file, url-from-manifest-or-None)` for every page file under the given paths."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            urls = _manifest_urls(path)
            for child in sorted(p for p in path.rglob("*") if p.is_file() and is_page_file(p)):
                yield child, urls.get(child.resolve())
        else:
            yield path, None


def iter_input_files(paths: Iterable[str | Path]) -> Iterator[tuple[Path | str, str, str | None]]:
    """Yield `(path or "-", kind, manifest URL or None)` for every input, folders expanded
    (page files and WARCs; `.jsonl` only when named)."""
    for raw in paths:
        if str(raw) == STDIN:
            yield STDIN, "stdin", None
            continue
        path = Path(raw)
        if not path.is_dir():
            yield path, input_kind(path), None
            continue
        urls = _manifest_urls(path)
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            kind = input_kind(child)
            if kind == "warc" or (kind == "page" and is_page_file(child)):
                yield child, kind, urls.get(child.resolve())


def input_bytes(paths: Iterable[str | Path]) -> int | None:
    """Bytes on disk that `iter_pages(paths)` will read (the progress total for
    `SourceStats.bytes_read`); None when stdin is among them."""
    total = 0
    for path, kind, _ in iter_input_files(paths):
        if kind == "stdin":
            return None
        try:
            total += Path(path).stat().st_size
        except OSError:
            continue
    return total


def read_page(
    path: Path, url: str | None = None, max_bytes: int | None = None
) -> RawPage | SourceError:
    """Read one file as a RawPage (gunzipped, bytes kept raw so extraction sniffs the charset)."""
    source = str(path)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                body = fh.read(max_bytes + 1) if max_bytes else fh.read()
        else:
            with path.open("rb") as fh:
                body = fh.read(max_bytes + 1) if max_bytes else fh.read()
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        return SourceError(source, Failure("unreadable", "source", f"{type(exc).__name__}: {exc}"))
    return RawPage(
        url=url or path.resolve().as_uri(),
        body=body,
        content_type=content_type_for(path),
        fetched_at=mtime,
        source=source,
    )


def iter_pages(
    paths: Iterable[str | Path],
    url: str | None = None,
    max_bytes: int | None = None,
    stats: SourceStats | None = None,
    limits: EnvelopeLimits | None = None,
) -> Iterator[RawPage | SourceError]:
    """All pages under `paths`, in order, lazily. `url` overrides the URL of page files (meant
    for a single file); `max_bytes` (default: the limits' cap) bounds every body."""
    stats = SourceStats() if stats is None else stats
    limits = limits or DEFAULT_LIMITS
    if max_bytes is not None:
        limits = replace(limits, max_page_bytes=max_bytes)
    for path, kind, manifest_url in iter_input_files(paths):
        if kind == "stdin":
            items = _iter_stdin(limits, stats)
        elif kind == "jsonl":
            items = _iter_jsonl_file(Path(path), limits, stats)
        elif kind == "warc":
            items = _iter_warc(Path(path), limits, stats)
        else:
            items = _iter_page_file(Path(path), url or manifest_url, limits, stats)
        for item in items:
            if isinstance(item, SourceError):
                stats.errors[item.failure.reason] += 1
            else:
                stats.pages += 1
            yield item


def _iter_page_file(
    path: Path, url: str | None, limits: EnvelopeLimits, stats: SourceStats
) -> Iterator[RawPage | SourceError]:
    stats.records += 1
    item = read_page(path, url, limits.max_page_bytes)
    with contextlib.suppress(OSError):  # unreadable: the SourceError already says so
        stats.bytes_read += path.stat().st_size
    yield item


# --- JSON lines ---------------------------------------------------------------------------


def _iter_jsonl_file(
    path: Path, limits: EnvelopeLimits, stats: SourceStats
) -> Iterator[RawPage | SourceError]:
    try:
        raw = path.open("rb")
    except OSError as exc:
        stats.records += 1
        yield SourceError(
            str(path), Failure("unreadable", "source", f"{type(exc).__name__}: {exc}")
        )
        return
    with raw:
        gz = path.name.lower().endswith(".gz")
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if gz else raw
        yield from _iter_jsonl(stream, str(path), limits, stats, raw.tell)


def _iter_stdin(limits: EnvelopeLimits, stats: SourceStats) -> Iterator[RawPage | SourceError]:
    stdin = _Counting(sys.stdin.buffer)
    yield from _iter_jsonl(stdin, "<stdin>", limits, stats, stdin.tell)


class _Counting:
    """A pipe cannot `tell()`: count the bytes read through it instead."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.consumed = 0

    def readline(self, limit: int = -1) -> bytes:
        line = self.stream.readline(limit)
        self.consumed += len(line)
        return line

    def tell(self) -> int:
        return self.consumed


def _iter_jsonl(
    stream: Any, name: str, limits: EnvelopeLimits, stats: SourceStats, tell: Callable[[], int]
) -> Iterator[RawPage | SourceError]:
    """One envelope per line; a line longer than any valid envelope is skipped to its end
    without being held in memory."""
    cap = limits.max_envelope_bytes + 1
    lineno = 0
    last = tell()
    while True:
        where = f"{name}:{lineno + 1}"
        try:
            line = stream.readline(cap)
            overlong = len(line) >= cap and not line.endswith(b"\n")
            while overlong:
                rest = stream.readline(READ_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
        except (OSError, EOFError, zlib.error) as exc:
            stats.records += 1
            yield SourceError(
                where, Failure("unreadable", "source", f"{type(exc).__name__}: {exc}")
            )
            return
        now = tell()
        stats.bytes_read += now - last
        last = now
        if not line:
            return
        lineno += 1
        if line.isspace():
            continue
        stats.records += 1
        if overlong:
            yield SourceError(where, Failure("too_large", "envelope", f"line over {cap - 1} bytes"))
            continue
        if not line.lstrip().startswith(b"{"):
            yield SourceError(
                where, Failure("malformed_envelope", "envelope", "line is not a JSON object")
            )
            continue
        page = parse_raw_page(line, None, limits)
        if isinstance(page, Failure):
            yield SourceError(where, page)
        else:
            yield page if page.source else replace(page, source=where)


# --- WARC -----------------------------------------------------------------------------------


class _Position:
    """Bytes of a file consumed so far, monotonic across a rewind (whole-file gzip restart)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.high = 0

    def advance(self) -> int:
        now = self.fh.tell()
        grown = max(0, now - self.high)
        self.high = max(self.high, now)
        return grown


def _iter_warc(
    path: Path, limits: EnvelopeLimits, stats: SourceStats
) -> Iterator[RawPage | SourceError]:
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    source = str(path)
    try:
        fh = path.open("rb")
        size = path.stat().st_size
    except OSError as exc:
        yield SourceError(source, Failure("unreadable", "source", f"{type(exc).__name__}: {exc}"))
        return
    with fh:
        position = _Position(fh)
        stream: IO[bytes] = fh
        handled = 0  # records already handled, to skip after a restart
        while True:
            it = ArchiveIterator(stream)
            it.reader = _checked_reader(it)
            offset, index = 0, 0
            try:
                for index, record in enumerate(it):
                    offset = it.offset
                    if index < handled:
                        continue
                    handled += 1
                    stats.records += 1
                    page = _warc_page(record, f"{source}@{offset}", limits, stats)
                    stats.bytes_read += position.advance()
                    if page is not None:
                        yield page
            except ArchiveLoadFailed as exc:
                if "non-chunked gzip" in str(exc) and stream is fh:
                    fh.seek(0)
                    stream = gzip.GzipFile(fileobj=fh)
                    continue
                yield _warc_broken(source, offset, index, f"{exc}".strip().splitlines()[0])
            except Exception as exc:
                # warcio parses untrusted bytes and can raise anything (AttributeError for a
                # response without WARC-Target-URI): the rest of this file is unreadable.
                yield _warc_broken(source, offset, index, f"{type(exc).__name__}: {exc}")
            else:
                # warcio ends quietly when a gzip member is corrupt: say so if bytes are left.
                if stream is fh and fh.read(1):
                    at = fh.tell() - 1
                    yield _warc_broken(
                        source, offset, index, f"unreadable data at byte {at} of {size}"
                    )
            stats.bytes_read += position.advance()
            return


def _checked_reader(it: Any) -> Any:
    """warcio's file reader, except that a gzip error inside a record raises instead of being
    printed and read as the end of the file (which would lose the rest of the file silently)."""
    from warcio.bufferedreaders import DecompressingBufferedReader

    class CheckedReader(DecompressingBufferedReader):
        def _decompress(self, data: bytes) -> bytes:
            if self.decompressor is not None and data and self.num_block_read:
                return self.decompressor.decompress(data)  # zlib.error propagates
            return super()._decompress(data)

    return CheckedReader(it.fh, block_size=it.reader.block_size)


def _warc_broken(source: str, offset: int, index: int, message: str) -> SourceError:
    where = f"{source}@{offset}"
    return SourceError(
        where, Failure("warc_malformed", "source", f"after record {index}: {message}"[:500])
    )


def _drain_truncated(record: Any) -> bool:
    """Read the rest of the record block; True if the file ended before its Content-Length."""
    raw = record.raw_stream
    while raw.read(READ_CHUNK):
        pass
    return getattr(raw, "limit", 0) > 0


def _warc_page(
    record: Any, where: str, limits: EnvelopeLimits, stats: SourceStats
) -> RawPage | None:
    """The page in one WARC record, or None after counting why it is skipped."""
    rec_type = record.rec_type
    if not rec_type:
        stats.skip("warc_malformed", "no WARC-Type")
        return None
    if rec_type not in ("response", "resource"):
        stats.skip("warc_not_response", rec_type)
        return None
    headers = record.rec_headers
    http = record.http_headers if rec_type == "response" else None
    if http is not None:
        status = http.get_statuscode()
        if status != "200":
            stats.skip("warc_http_status", str(status))
            return None
        content_type = http.get_header("Content-Type")
    else:
        content_type = headers.get_header("Content-Type")
    content_type = (content_type or "").strip()
    kind = media_type(content_type)
    if kind in UNDECLARED_TYPES:
        # Common Crawl and others record a sniffed type: better than none.
        identified = media_type(headers.get_header("WARC-Identified-Payload-Type") or "")
        if identified in HTML_TYPES:
            content_type = kind = identified
        content_type = content_type or "application/octet-stream"
    if kind not in HTML_TYPES and kind not in UNDECLARED_TYPES:
        stats.skip("warc_not_html", kind or "none")
        return None
    url = (headers.get_header("WARC-Target-URI") or "").strip().strip("<>")
    bad = check_url(url, limits, "WARC-Target-URI")
    if bad:
        stats.skip("warc_invalid_url", bad.message.removeprefix("WARC-Target-URI: ")[:80])
        return None
    truncated = headers.get_header("WARC-Truncated")
    if truncated:
        stats.skip("warc_truncated", f"WARC-Truncated: {truncated}"[:80])
        return None
    try:
        body = record.content_stream().read(limits.max_page_bytes + 1)
        cut = _drain_truncated(record)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        stats.skip("warc_malformed", f"{type(exc).__name__}: {exc}"[:80])
        return None
    if cut:
        stats.skip("warc_truncated", "record cut short by end of file")
        return None
    return RawPage(
        url=url,
        body=body,
        content_type=content_type,
        fetched_at=headers.get_header("WARC-Date"),
        source=where,
    )


# --- benchmark ---------------------------------------------------------------------------


def bench_warc(path: str | Path) -> dict[str, Any]:
    """Read one WARC three ways and time each: warcio and fastwarc (if installed) iterating
    records and reading every response payload decoded, and `iter_pages` (the real path).

        .venv/bin/python -m tests.streams.warc_fixtures /tmp/c.warc.gz --repeat 6
        .venv/bin/python -c "import streams.sources as s; print(s.bench_warc('/tmp/c.warc.gz'))"
    """
    path = Path(path)
    size = path.stat().st_size
    runs: dict[str, Callable[[], tuple[int, int]]] = {"warcio": lambda: _raw_warcio(path)}
    try:
        import fastwarc  # noqa: F401

        runs["fastwarc"] = lambda: _raw_fastwarc(path)
    except ImportError:
        pass
    runs["iter_pages"] = lambda: _raw_iter_pages(path)
    report: dict[str, Any] = {"file": str(path), "file_mb": round(size / 1e6, 2)}
    for name, run in runs.items():
        start = time.perf_counter()
        try:
            records, payload = run()
        except Exception as exc:  # a benchmark reports a library's failure, then goes on
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        seconds = time.perf_counter() - start
        report[name] = {
            "records": records,
            "payload_mb": round(payload / 1e6, 2),
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds),
            "file_mb_per_s": round(size / 1e6 / seconds, 1),
            "payload_mb_per_s": round(payload / 1e6 / seconds, 1),
        }
    return report


def _raw_warcio(path: Path) -> tuple[int, int]:
    from warcio.archiveiterator import ArchiveIterator

    records = payload = 0
    with path.open("rb") as fh:
        for record in ArchiveIterator(fh):
            records += 1
            if record.rec_type == "response" and record.http_headers is not None:
                payload += len(record.content_stream().read())
    return records, payload


def _raw_fastwarc(path: Path) -> tuple[int, int]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    records = payload = 0
    with path.open("rb") as fh:
        for record in ArchiveIterator(fh, auto_decode="all"):
            records += 1
            if record.record_type == WarcRecordType.response and record.is_http:
                payload += len(record.reader.read())
    return records, payload


def _raw_iter_pages(path: Path) -> tuple[int, int]:
    stats = SourceStats()
    payload = sum(len(p.body) for p in iter_pages([path], stats=stats) if isinstance(p, RawPage))
    return stats.records, payload
