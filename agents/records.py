"""The typed records that travel through every stage, and the failure value that ends a page.

Pure Python, no Kafka: `streams/` turns these into topic payloads (JSON via orjson) and back.
A stage never raises for bad input; it returns a `Failure` with a snake_case reason code.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class RawPage:
    """A fetched page as a crawler hands it over.

    `body` is the raw payload (bytes as fetched, or already-decoded str); `content_type` is the
    HTTP Content-Type including any `charset=` parameter; `fetched_at` is an ISO 8601 string.
    """

    url: str
    body: bytes | str
    content_type: str = "text/html"
    fetched_at: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a page produced no article: `reason` is a stable snake_case code, `stage` the stage."""

    reason: str
    stage: str
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.reason, "stage": self.stage, "message": self.message}


@dataclass(slots=True)
class Entity:
    text: str
    label: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "count": self.count}


@dataclass(slots=True)
class Article:
    """The enriched article: the one record every stage fills in and `articles` carries."""

    id: str
    url: str
    source: str = ""
    fetched_at: str | None = None
    title: str | None = None
    author: str | None = None
    date: str | None = None
    sitename: str | None = None
    description: str | None = None
    canonical_url: str | None = None
    page_language: str | None = None
    text: str = ""
    language: str = "und"
    language_confidence: float = 0.0
    entities: list[Entity] = field(default_factory=list)
    entities_note: str | None = None
    boilerplate_removed: dict[str, int] = field(default_factory=dict)
    duplicate_of: str | None = None
    duplicate_kind: str | None = None
    similarity: float | None = None
    story_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Article:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["entities"] = [Entity(**e) for e in known.get("entities") or []]
        return cls(**known)


def article_id(url: str, text: str = "") -> str:
    """Stable id: the same fetched URL (or, without one, the same text) always maps to one id,
    so a replayed page overwrites rather than duplicates downstream."""
    basis = url.strip() if url and url.strip() else "text:" + text
    return hashlib.blake2b(basis.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
