"""The raw-pages topic contract: one Kafka (key, value) <-> one `RawPage`, with every field capped.

A value is either

* a JSON envelope (one object, orjson; schema in `schemas/raw-page.schema.json`)::

      {"url": "https://…", "html": "<html>…",            # exactly one of html / text / body_base64
       "content_type": "text/html; charset=utf-8", "fetched_at": "2024-05-01T12:00:00Z",
       "source": "crawler-7"}

  `html` / `text` carry a body that is valid Unicode (`text` is a text/plain body and makes
  `text/plain` the default content type). `body_base64` carries the bytes exactly as fetched,
  for bodies that are not UTF-8 or that declare another charset: `content_type` (and the page's
  own `<meta charset>`) keep the original charset, and extraction sniffs it from the bytes.
  The key is only for partitioning (`envelope_key`: the URL); the envelope's `url` wins.
  `null` counts as absent; unknown fields are ignored so producers can add fields.
* bare HTML: any value whose first non-blank byte is not `{` or `[`. The URL is the key
  (UTF-8); the value is the raw body, `text/html`, charset sniffed by extraction.

`parse_raw_page` never raises: bad input gives `Failure(reason, "envelope", message)`, one of
`malformed_envelope`, `missing_url`, `missing_body`, `field_too_large`, `too_large`,
`invalid_url`, `empty_page`. Whether the body is a page at all (`not_html`: declared image/…,
or binary bytes) is decided once, by `agents.extract`, which has to sniff bytes anyway; the
envelope carries any content type as sent.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from agents.records import Failure, RawPage

STAGE = "envelope"
BODY_FIELDS = ("html", "text", "body_base64")
URL_SCHEMES = frozenset({"http", "https", "file"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain"})
# Types that say nothing about the body (extraction sniffs it); WARC reading keeps these.
UNDECLARED_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/unknown",
        "unknown/unknown",
    }
)
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# Where a page's own charset declaration may sit: browsers look at the first 1024 bytes,
# real pages put <meta charset> later (after big inline scripts), so look further.
CHARSET_SNIFF_BYTES = 64 * 1024

_LEAD = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([^"';\s]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([-\w.:]+)""", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Same pattern as `fetched_at` in the JSON Schema (ISO 8601 date or date-time).
ISO_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)


@dataclass(frozen=True)
class EnvelopeLimits:
    """Caps on every input field. Defaults match `streams.settings.Settings` and the schema."""

    max_page_bytes: int = 10_000_000  # body, in bytes (UTF-8 bytes for html/text)
    max_url_chars: int = 4_096
    max_field_chars: int = 1_024  # content_type, fetched_at, source

    @property
    def max_envelope_bytes(self) -> int:
        """Cheap pre-parse guard: JSON escaping can grow a byte to 6 (`\\u0000`), so no valid
        envelope is longer than this; anything longer is refused before it is parsed."""
        return 6 * (self.max_page_bytes + self.max_url_chars + 3 * self.max_field_chars) + 65_536


DEFAULT_LIMITS = EnvelopeLimits()


def _fail(reason: str, message: str) -> Failure:
    return Failure(reason, STAGE, message)


def media_type(content_type: str) -> str:
    """`Text/HTML; charset=x` -> `text/html`."""
    return content_type.split(";", 1)[0].strip().lower()


def content_type_charset(content_type: str) -> str | None:
    m = _CHARSET_PARAM.search(content_type)
    return m.group(1).lower() if m else None


def check_url(
    url: str, limits: EnvelopeLimits = DEFAULT_LIMITS, field: str = "url"
) -> Failure | None:
    """None if `url` (already stripped) is an absolute http(s) or file URL within the cap."""
    if not url:
        return _fail("missing_url", f"{field}: empty")
    if len(url) > limits.max_url_chars:
        return _fail("field_too_large", f"{field}: {len(url)} chars > {limits.max_url_chars}")
    # urlsplit silently drops tabs and newlines (bpo-43882): refuse them rather than guess.
    if _CONTROL.search(url):
        return _fail("invalid_url", f"{field}: control character in URL")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in URL_SCHEMES:
            return _fail("invalid_url", f"{field}: scheme {scheme or 'missing'!r} not http(s)/file")
        if scheme == "file":
            ok = bool(parts.path)
        else:
            ok = bool(parts.hostname)
            _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        return _fail("invalid_url", f"{field}: {exc}")
    if not ok:
        return _fail("invalid_url", f"{field}: no {'path' if scheme == 'file' else 'host'}")
    return None


def _is_blank(body: bytes | str) -> bool:
    return not body or body.isspace()


def parse_raw_page(
    value: bytes | None, key: bytes | None, limits: EnvelopeLimits = DEFAULT_LIMITS
) -> RawPage | Failure:
    """Turn one raw-pages record into a RawPage, or say precisely why not. Never raises."""
    if value is None:
        return _fail("missing_body", "null value (tombstone)")
    lead = _LEAD.match(value).end()
    if value[lead : lead + 1] in (b"{", b"["):
        if len(value) > limits.max_envelope_bytes:
            return _fail("too_large", f"envelope: {len(value)} bytes > {limits.max_envelope_bytes}")
        if value.startswith(b"\xef\xbb\xbf"):  # orjson refuses a BOM; HTML editors write one
            value = value[3:]
        return _parse_envelope(value, limits)
    return _parse_bare(value, key, limits)


def _parse_bare(value: bytes, key: bytes | None, limits: EnvelopeLimits) -> RawPage | Failure:
    if not key:
        return _fail("missing_url", "bare HTML value needs the URL as the record key")
    if len(key) > 4 * limits.max_url_chars:
        cap = limits.max_url_chars
        return _fail("field_too_large", f"key (url): {len(key)} bytes > {cap} chars")
    try:
        url = key.decode("utf-8").strip()
    except UnicodeDecodeError:
        return _fail("invalid_url", "key (url): not UTF-8")
    bad = check_url(url, limits, "key (url)")
    if bad:
        return bad
    if len(value) > limits.max_page_bytes:
        return _fail("too_large", f"body: {len(value)} bytes > {limits.max_page_bytes}")
    if _is_blank(value):
        return _fail("empty_page", "body is empty or blank")
    return RawPage(url=url, body=value, content_type="text/html")


def _optional_str(doc: dict[str, Any], name: str, cap: int) -> str | Failure | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        return _fail("malformed_envelope", f"{name}: expected string, got {type(value).__name__}")
    if len(value) > cap:
        return _fail("field_too_large", f"{name}: {len(value)} chars > {cap}")
    return value


def _parse_envelope(value: bytes, limits: EnvelopeLimits) -> RawPage | Failure:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _fail("malformed_envelope", f"invalid JSON: {exc}"[:300])
    if not isinstance(doc, dict):
        kind = type(doc).__name__
        return _fail("malformed_envelope", f"envelope must be a JSON object, got {kind}")

    url = doc.get("url")
    if url is None:
        return _fail("missing_url", "url: absent")
    if not isinstance(url, str):
        return _fail("malformed_envelope", f"url: expected string, got {type(url).__name__}")
    url = url.strip()
    bad = check_url(url, limits)
    if bad:
        return bad

    fields: dict[str, str | None] = {}
    for name in ("content_type", "fetched_at", "source"):
        got = _optional_str(doc, name, limits.max_field_chars)
        if isinstance(got, Failure):
            return got
        fields[name] = got
    fetched_at = fields["fetched_at"]
    if fetched_at is not None and not _is_iso_datetime(fetched_at):
        shown = fetched_at[:60]
        return _fail("malformed_envelope", f"fetched_at: not an ISO 8601 date-time: {shown!r}")

    present = [name for name in BODY_FIELDS if doc.get(name) is not None]
    if not present:
        return _fail("missing_body", "none of html, text, body_base64")
    if len(present) > 1:
        return _fail("malformed_envelope", f"more than one body field: {', '.join(present)}")
    name = present[0]
    raw = doc[name]
    if not isinstance(raw, str):
        return _fail("malformed_envelope", f"{name}: expected string, got {type(raw).__name__}")
    body = _decode_body(name, raw, limits)
    if isinstance(body, Failure):
        return body
    if _is_blank(body):
        return _fail("empty_page", f"{name}: empty or blank")

    content_type = (fields["content_type"] or "").strip()
    if not content_type:
        content_type = "text/plain" if name == "text" else "text/html"
    return RawPage(
        url=url,
        body=body,
        content_type=content_type,
        fetched_at=fetched_at,
        source=fields["source"] or "",
    )


def _decode_body(name: str, raw: str, limits: EnvelopeLimits) -> bytes | str | Failure:
    cap = limits.max_page_bytes
    if name == "body_base64":
        if len(raw) > 4 * (cap // 3 + 1):
            return _fail("too_large", f"body_base64: {len(raw)} chars encode more than {cap} bytes")
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            return _fail("malformed_envelope", f"body_base64: {exc}")
        size = len(body)
    else:
        body = raw
        # A str is at most 4 UTF-8 bytes a char: encode only when the count could matter.
        size = len(raw) if len(raw) > cap or 4 * len(raw) <= cap else len(raw.encode("utf-8"))
    if size > cap:
        return _fail("too_large", f"{name}: {size} bytes > {cap}")
    return body


def _is_iso_datetime(text: str) -> bool:
    if not ISO_DATETIME.match(text):
        return False
    try:
        datetime.fromisoformat(text.replace(",", ".").replace("z", "Z"))
    except ValueError:
        return False
    return True


def declared_charsets(content_type: str, body: bytes) -> set[str]:
    """Charsets the page declares: the Content-Type parameter and any `<meta … charset=…>`."""
    head = body[:CHARSET_SNIFF_BYTES]
    found = {m.group(1).decode("ascii", "replace").lower() for m in _META_CHARSET.finditer(head)}
    header = content_type_charset(content_type)
    if header:
        found.add(header)
    return found


def _utf8_text(body: bytes, content_type: str) -> str | None:
    """The body as str when that loses nothing: valid UTF-8 and no other charset declared.
    (A page declaring iso-8859-1 travels as bytes, so extraction sees what the site said.)"""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if declared_charsets(content_type, body) <= UTF8_CHARSETS else None


def page_to_envelope(page: RawPage) -> bytes:
    """The JSON envelope for `page` (the value `parse_raw_page` reads back)."""
    doc: dict[str, Any] = {"url": page.url}
    field = "text" if media_type(page.content_type) in TEXT_TYPES else "html"
    body = page.body
    if isinstance(body, str):
        doc[field] = body
    else:
        text = _utf8_text(body, page.content_type)
        if text is None:
            doc["body_base64"] = base64.b64encode(body).decode("ascii")
        else:
            doc[field] = text
    doc["content_type"] = page.content_type
    if page.fetched_at is not None:
        doc["fetched_at"] = page.fetched_at
    if page.source:
        doc["source"] = page.source
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:
        # Lone surrogates (e.g. from a surrogateescape decode) are not valid JSON text.
        return orjson.dumps({k: _scrub(v) for k, v in doc.items()})


def _scrub(value: Any) -> Any:
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def envelope_key(page: RawPage) -> bytes:
    """Record key: the URL, so replays of one URL land on one partition, in order."""
    return page.url.encode("utf-8", "replace")
