"""The `extract` stage: a fetched page (bytes as crawled) to its main text and metadata.

Pure and synchronous. Three steps, each of which can end the page with a `Failure`:

1. Gate: bodies over `max_bytes` are `too_large`; declared binary media types and bodies that
   sniff as binary (NUL bytes, PDF/PNG/JPEG/GIF/ZIP/... magic) are `not_html`.
2. Decode (`decode_body`): BOM, then the HTTP `charset=`, then `<meta charset>` /
   `<meta http-equiv>` / `<?xml encoding?>`. Valid UTF-8 wins over a declaration that says
   otherwise (the common lie), and a declared charset must decode strictly to be believed;
   without one that works we ask charset_normalizer, and if nothing decodes cleanly the page is
   a `decode_error` rather than mojibake.
3. Extract: HTML goes through trafilatura (settings chosen by measurement, see `ExtractConfig`);
   `text/plain` is passed on as is, its first line taken as the title when it looks like one.
   No main text is `empty_text`.

There is no per-page time budget (`timeout`): trafilatura has none, and a thread cannot stop
lxml mid-parse, so a budget needs a killable worker process. That is left to a reliability
issue. Measured (CPU): the slowest corpus page takes 0.15 s, but synthetic pages take ~1.2 s
per MB of paragraphs and ~3 s per MB of table rows, so a hostile page under the 10 MB
`max_bytes` can hold a worker for ~30 s.
"""

from __future__ import annotations

import codecs
import html
import re
from dataclasses import dataclass
from datetime import date
from urllib.parse import urljoin, urlsplit

from charset_normalizer import from_bytes
from lxml import etree
from trafilatura import bare_extraction
from trafilatura.deduplication import LRUCache

from agents.records import Failure, RawPage

STAGE = "extract"


@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings. Caps are in bytes (`max_bytes`) or characters (the rest).

    The trafilatura defaults were chosen by measurement on ../shared/corpus (110 pages) against
    the human-labelled snippets in tests/agents/fixtures_extract_golden.py: 190 of article text
    that must be kept, 225 of boilerplate and reader comments that must not be. CPU time per
    page (metadata included) relative to the default, one run; repeat runs differ by ~5%
    (`python -m tests.agents.fixtures_extract_golden`):

        mode                 kept     kept out  CPU time
        balanced (default)   189/190  225/225   1.00 (30 ms/page)
        favor_precision      181/190  223/225   1.00
        favor_recall         189/190  222/225   0.78
        fast                 185/190  223/225   0.81
        recall + fast        185/190  221/225   0.71
        no tables            187/190  224/225   0.97
        deduplicate          185/190  225/225   0.96

    Balanced is the only mode with no loss on either side; the faster modes trade article
    text or boilerplate for at most 30% of the time. Deduplication drops a repeated
    recipe list on one page and, with trafilatura's process-wide cache, would make a page's
    text depend on the pages seen before it (extracting one page a 4th time gave other text),
    so it is off here (the `clean` stage removes repeats within a page); when on, it gets a
    fresh cache per page. Reader comments are not the article, so they are excluded.
    """

    max_bytes: int = 10_000_000  # body larger than this -> too_large
    max_text_chars: int = 1_000_000  # extracted text is cut (at a line break) beyond this
    max_field_chars: int = 1_024  # title, author, sitename, description
    max_url_chars: int = 4_096  # canonical_url; a longer page URL is not used for resolving
    favor_precision: bool = False
    favor_recall: bool = False
    fast: bool = False  # skip trafilatura's fallback extractors (readability, jusText)
    include_tables: bool = True
    include_comments: bool = False  # reader comments are not the article
    deduplicate: bool = False
    # A page whose best decoding still replaces more than this share of characters is a
    # decode_error: the text would be noise for language detection and NER.
    max_replacement_ratio: float = 0.01


@dataclass(slots=True)
class Extracted:
    """What a page says about itself, plus its main text (one paragraph per line)."""

    title: str | None
    author: str | None
    date: str | None  # ISO date, YYYY-MM-DD
    sitename: str | None
    description: str | None
    canonical_url: str | None  # from <link rel=canonical> or og:url; None when not declared
    page_language: str | None  # primary subtag of <html lang>, lowercased ("de-DE" -> "de")
    text: str


# --- gate -------------------------------------------------------------------------------------

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PLAIN_TYPES = frozenset({"text/plain"})
# Types that say nothing about the body: HTML if it sniffs as HTML, else plain text.
UNTYPED = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/unknown",
        "unknown/unknown",
    }
)
# XHTML is sometimes served as XML; other XML (feeds, sitemaps) is not a page.
XML_TYPES = frozenset({"text/xml", "application/xml"})
# Leading bytes of formats that are never a page, checked after any BOM. Formats whose header
# holds NUL bytes anyway (images, fonts, audio, executables) are caught by the NUL check; the
# ones listed with more than their magic are those a text could start with ("ID3 tags ...").
BINARY_MAGIC = tuple(
    (re.compile(magic, re.DOTALL), kind)
    for magic, kind in (
        (rb"%PDF-", "PDF"),
        (rb"\x89PNG\r\n\x1a\n", "PNG"),
        (rb"\xff\xd8\xff", "JPEG"),
        (rb"GIF8[79]a", "GIF"),
        (rb"PK\x03\x04", "ZIP"),
        (rb"\x1f\x8b\x08", "gzip (Content-Encoding not undone?)"),
        (rb"\x28\xb5\x2f\xfd", "zstd (Content-Encoding not undone?)"),
        (rb"BZh[1-9]1AY&SY", "bzip2"),
        (rb"7z\xbc\xaf\x27\x1c", "7z"),
        (rb"Rar!\x1a\x07", "RAR"),
        (rb"RIFF.{4}(?:WEBP|WAVE|AVI )", "RIFF (WebP/WAV/AVI)"),
    )
)
SNIFF_BYTES = 4_096


def _media_type(content_type: str) -> tuple[str, str | None]:
    """`text/html; charset=UTF-8` -> ("text/html", "UTF-8")."""
    media, _, params = content_type[:512].partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return media.strip().lower(), charset


def _binary_kind(head: bytes) -> str | None:
    for magic, kind in BINARY_MAGIC:
        if magic.match(head):
            return kind
    if b"\x00" in head[:SNIFF_BYTES]:
        return "NUL bytes"
    return None


def _declared_binary(media: str) -> bool:
    return not (
        media in HTML_TYPES or media in PLAIN_TYPES or media in UNTYPED or media in XML_TYPES
    )


# --- decode -----------------------------------------------------------------------------------

BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# WHATWG Encoding Standard: labels that browsers decode as a superset codec.
WHATWG_SUPERSET = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}
META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})"""
    rb"""|<\?xml\b[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:-]{1,40})""",
    re.IGNORECASE,
)


def _codec(label: str | None) -> str | None:
    """A Python text codec for a charset label, or None for unknown/non-text labels."""
    if not label or len(label) > 40:
        return None
    try:
        info = codecs.lookup(label.strip())
    except LookupError:
        return None
    if not info._is_text_encoding:  # base64, rot13, zlib... are codecs but not charsets
        return None
    return WHATWG_SUPERSET.get(info.name, info.name)


def _strict(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _damaged_utf8(body: bytes) -> str | None:
    """UTF-8 with a few bad bytes (a cut-off character, one pasted cp1252 quote) is UTF-8:
    decoding it as anything else would garble every other non-ASCII character. Valid multibyte
    sequences almost never occur by chance in legacy text, so 4 good per bad one is plenty."""
    text = body.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return text if non_ascii - bad >= 4 * bad else None


def _detected(body: bytes) -> str | None:
    """charset_normalizer's guess; windows-1252 when it is among the candidates.

    On short Latin texts the detector's favourite is often cp1250/cp1257 ("déją vu"), while
    windows-1252 is by far the most common legacy charset on the web (and the WHATWG default),
    so it is preferred whenever the detector finds it plausible at all.
    """
    matches = from_bytes(body[:65_536])
    encodings = [m.encoding for m in matches]
    if not encodings:
        return None
    return "cp1252" if "cp1252" in encodings else encodings[0]


def decode_body(body: bytes, http_charset: str | None = None) -> tuple[str, str]:
    """Decode a page body; returns (text, codec used). Never raises.

    Order: BOM; an HTTP-declared UTF-16/32 (those bodies have no ASCII to sniff); strict
    UTF-8; UTF-8 with a few damaged bytes; the HTTP charset, then the in-document one, each
    only if it decodes strictly; charset_normalizer; finally UTF-8 with replacement characters.
    """
    for bom, codec in BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(codec, "replace"), codec
    declared_http = _codec(http_charset)
    if declared_http and declared_http.startswith(("utf-16", "utf-32")):
        return body.decode(declared_http, "replace"), declared_http
    text = _strict(body, "utf-8")
    if text is not None:
        return text, "utf-8"
    text = _damaged_utf8(body)
    if text is not None:
        return text, "utf-8"
    match = META_CHARSET.search(body[:SNIFF_BYTES])
    declared_meta = _codec((match.group(1) or match.group(2)).decode("ascii")) if match else None
    candidates = (declared_http, declared_meta, lambda: _detected(body))  # detector only if needed
    for candidate in candidates:
        codec = candidate() if callable(candidate) else candidate
        if codec and not codec.startswith(("utf-16", "utf-32")):
            text = _strict(body, codec)
            if text is not None:
                return text, codec
    return body.decode("utf-8", "replace"), "utf-8 (replaced)"


# --- head metadata we read ourselves ------------------------------------------------------------

HEAD_CHARS = 262_144
TAG = re.compile(r"<(html|meta|link)\b([^>]{0,4000})>", re.IGNORECASE)
ATTR = re.compile(r"""([^\s=/>"']+)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")
LANG_TAG = re.compile(r"[a-z]{2,3}")


def _attrs(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in ATTR.findall(raw):
        found.setdefault(name.lower(), html.unescape(value.strip("\"'")).strip())
    return found


def _without_comments(html_text: str) -> str:
    """Drop <!-- ... --> (an unclosed one runs to the end); linear, unlike a lazy regex."""
    parts, at = [], 0
    while (start := html_text.find("<!--", at)) >= 0:
        parts.append(html_text[at:start])
        end = html_text.find("-->", start + 4)
        if end < 0:
            return "".join(parts)
        at = end + 3
    parts.append(html_text[at:])
    return "".join(parts)


def _head_facts(text: str, url: str | None) -> tuple[str | None, str | None]:
    """(page_language, canonical_url) from the start tags before <body>.

    trafilatura's metadata URL falls back to the URL it was given and also reads `<base href>`
    (often just the site root), so it cannot tell "declared canonical" from "no idea".
    """
    head = text[:HEAD_CHARS]
    body_at = head.lower().find("<body")
    head = _without_comments(head[: body_at if body_at >= 0 else len(head)])
    language = canonical = og_url = None
    for tag, raw in TAG.findall(head):
        attrs = _attrs(raw)
        tag = tag.lower()
        if tag == "html" and language is None:
            language = _primary_subtag(attrs.get("lang") or attrs.get("xml:lang"))
        elif tag == "link" and canonical is None:
            if "canonical" in attrs.get("rel", "").lower().split():
                canonical = _absolute(attrs.get("href"), url)
        elif tag == "meta" and og_url is None and _meta_name(attrs) == "og:url":
            og_url = _absolute(attrs.get("content"), url)
    return language, canonical or og_url


def _meta_name(attrs: dict[str, str]) -> str:
    return (attrs.get("property") or attrs.get("name") or "").lower()


def _primary_subtag(lang: str | None) -> str | None:
    if not lang:
        return None
    primary = lang.strip().replace("_", "-").split("-")[0].lower()
    return primary if LANG_TAG.fullmatch(primary) else None


def _absolute(href: str | None, base: str | None) -> str | None:
    if not href:
        return None
    try:
        absolute = urljoin(base or "", href.strip())
        parts = urlsplit(absolute)
    except ValueError:
        return None
    return absolute if parts.scheme in ("http", "https") and parts.netloc else None


# --- extract ----------------------------------------------------------------------------------

HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    r"<(?:!doctype\s+html|html|head|body|script|iframe|h1|div|font|table|a|style|title|b|br|p)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)
ANY_TAG = re.compile(r"<[A-Za-z!/]")
SENTENCE_END = (".", ",", ";", ":")
HEADLINE_CHARS = 200  # a longer first line of plain text is a paragraph, not a title


def _looks_like_html(text: str) -> bool:
    """The WHATWG sniffing rule: the content starts with one of the usual HTML tags."""
    return HTML_START.match(text[:SNIFF_BYTES]) is not None


def _cap(value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value[:limit] or None


def _cap_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def _iso_date(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        return None


def _from_plain(text: str, cfg: ExtractConfig) -> Extracted | Failure:
    """Plain text: lines as they are. The first line is the title when it reads like a
    headline (at most HEADLINE_CHARS, not ending like a sentence or clause, and followed by
    more text); copies of it right below (a page dump's <title> and <h1>) are skipped."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    title = None
    if len(lines) > 1 and len(lines[0]) <= HEADLINE_CHARS and not lines[0].endswith(SENTENCE_END):
        title = " ".join(lines[0].split())
        lines = lines[1:]
        while lines and lines[0].casefold() == title.casefold():
            lines = lines[1:]
    body = _cap_text("\n".join(lines), cfg.max_text_chars)
    if not body:
        return Failure("empty_text", STAGE, "plain-text page has no text")
    return Extracted(title, None, None, None, None, None, None, body)


def _from_html(text: str, url: str | None, cfg: ExtractConfig) -> Extracted | Failure:
    page_language, canonical = _head_facts(text, url)
    try:
        doc = bare_extraction(
            text,
            url=url,
            with_metadata=True,
            include_comments=cfg.include_comments,
            include_tables=cfg.include_tables,
            favor_precision=cfg.favor_precision,
            favor_recall=cfg.favor_recall,
            fast=cfg.fast,
            deduplicate=LRUCache(maxsize=4096) if cfg.deduplicate else False,
        )
    except (ValueError, etree.LxmlError) as exc:
        return Failure("parse_error", STAGE, f"{type(exc).__name__}: {exc}"[:500])
    body = (getattr(doc, "text", None) or "").strip() if doc is not None else ""
    if not body:
        return Failure("empty_text", STAGE, "no main text found in the HTML")
    field_cap = cfg.max_field_chars
    return Extracted(
        title=_cap(doc.title, field_cap),
        author=_cap(doc.author, field_cap),
        date=_iso_date(doc.date),
        sitename=_cap(doc.sitename, field_cap),
        description=_cap(doc.description, field_cap),
        canonical_url=canonical if canonical and len(canonical) <= cfg.max_url_chars else None,
        page_language=page_language,
        text=_cap_text(body, cfg.max_text_chars),
    )


def _page_text(body: bytes | str, charset: str | None, cfg: ExtractConfig) -> str | Failure:
    """The body as text, or why it is not text: binary, or undecodable."""
    if isinstance(body, str):
        if "\x00" in body[:SNIFF_BYTES] or body.startswith("%PDF-"):
            return Failure("not_html", STAGE, "body is binary")
        return body
    has_bom = any(body.startswith(bom) for bom, _ in BOMS)
    kind = None if has_bom else _binary_kind(body[:SNIFF_BYTES])
    if kind and not (_codec(charset) or "").startswith(("utf-16", "utf-32")):
        return Failure("not_html", STAGE, f"body is binary ({kind})")
    text, codec = decode_body(body, charset)
    bad = text.count("\ufffd")
    if bad > cfg.max_replacement_ratio * max(len(text), 1):
        return Failure(
            "decode_error", STAGE, f"{bad} of {len(text)} characters undecodable ({codec})"
        )
    return text


def extract(page: RawPage, cfg: ExtractConfig = ExtractConfig()) -> Extracted | Failure:
    """Main text and metadata of one page, or the reason there is none."""
    size = len(page.body)
    if isinstance(page.body, str) and size * 4 > cfg.max_bytes:  # only then can UTF-8 exceed it
        size = len(page.body.encode("utf-8", "surrogatepass"))
    if size > cfg.max_bytes:
        return Failure("too_large", STAGE, f"{size} bytes > max_bytes={cfg.max_bytes}")
    media, charset = _media_type(page.content_type or "")
    if _declared_binary(media):
        return Failure("not_html", STAGE, f"content type {media!r} is not a page")
    text = _page_text(page.body, charset, cfg)
    if isinstance(text, Failure):
        return text
    if not text.strip():
        return Failure("empty_text", STAGE, "empty body")
    if media in HTML_TYPES:  # trust the type unless there is not a single tag
        is_html = ANY_TAG.search(text, 0, 65_536) is not None
    else:
        is_html = _looks_like_html(text)
    if not is_html and media in XML_TYPES:
        return Failure("not_html", STAGE, f"{media!r} body is XML but not XHTML")
    url = page.url if page.url and len(page.url) <= cfg.max_url_chars else None
    return _from_html(text, url, cfg) if is_html else _from_plain(text, cfg)
