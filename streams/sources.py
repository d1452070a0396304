"""Turn what users point the CLI at (files, folders) into `RawPage`s, lazily, one at a time.

Supported: `.html`, `.htm`, `.html.gz`, `.htm.gz`, `.txt`, `.txt.gz`, and folders of them
(recursively, in sorted order). A folder may hold a `manifest.jsonl` of `{"url", "file"}` lines,
as `../shared/corpus/` does: pages listed there get their original URL; others get a
`file://` URL. An unreadable file is yielded as a `Failure` so the caller reports it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from agents.records import Failure, RawPage

PAGE_SUFFIXES = (".html", ".htm", ".txt")


@dataclass(frozen=True, slots=True)
class SourceError:
    """An input that could not be read at all: carries its path and a Failure."""

    source: str
    failure: Failure


def is_page_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(PAGE_SUFFIXES)


def content_type_for(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return "text/plain" if name.endswith(".txt") else "text/html"


def _manifest_urls(folder: Path) -> dict[Path, str]:
    manifest = folder / "manifest.jsonl"
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


def read_page(path: Path, url: str | None = None, max_bytes: int | None = None) -> RawPage | SourceError:
    """Read one file as a RawPage (gunzipped, bytes kept raw so extraction sniffs the charset)."""
    source = str(path)
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                body = fh.read(max_bytes + 1) if max_bytes else fh.read()
        else:
            with path.open("rb") as fh:
                body = fh.read(max_bytes + 1) if max_bytes else fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return SourceError(source, Failure("unreadable", "source", f"{type(exc).__name__}: {exc}"))
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    return RawPage(
        url=url or path.resolve().as_uri(),
        body=body,
        content_type=content_type_for(path),
        fetched_at=mtime,
        source=source,
    )


def iter_pages(
    paths: Iterable[str | Path], url: str | None = None, max_bytes: int | None = None
) -> Iterator[RawPage | SourceError]:
    """All pages under `paths`; `url` overrides the URL (meant for a single file)."""
    for path, manifest_url in iter_page_files(paths):
        yield read_page(path, url or manifest_url, max_bytes)
