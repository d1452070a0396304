"""The `clean` stage: normalise extracted text and strip the boilerplate extraction lets through.

Pure and synchronous. Text comes in as one paragraph per line (what `extract` produces) and
leaves the same way, with:

- Unicode NFC, every kind of line break as "\\n", Unicode spaces as " ", runs of spaces
  collapsed, zero-width and control characters dropped, empty lines dropped;
- lines removed by `RULES`, a table of (reason, pattern, action, longest line it may match).
  The length limit is what keeps a rule off real paragraphs that happen to contain its words.
  `truncate` rules (paywalls, reader appeals) cut the text at the matching line when the line
  starts after `truncate_after` of the text: what follows such a marker is the appeal itself
  ("Dear Reader, ...", "Start your subscription today"), not article. Earlier in the text (a
  banner above the article) only the line goes;
- repeated paragraphs removed: a paragraph goes when every one of its sentences (compared
  case- and punctuation-blind) also appears in a paragraph that stays. A body printed twice,
  once as one block and once split into paragraphs, comes out once, as the split copy.

`removed` counts the lines dropped per reason: share_widget, related_link, photo_credit,
photo_caption, paywall, donation_appeal, newsletter_signup, advertisement, copyright_notice,
repeated_paragraph, over_max_chars. Less than `min_chars` left is
`Failure("empty_text", "clean")`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from agents.records import Failure

STAGE = "clean"


@dataclass(frozen=True)
class CleanConfig:
    """Cleaning limits, in characters. The shortest article on the shared corpus cleans to
    151 characters; below 100 there is a headline at most, too little for language detection
    to be trusted."""

    min_chars: int = 100  # less clean text than this is no article: empty_text
    max_chars: int = 200_000  # output cap, applied at a paragraph boundary (reason over_max_chars)
    max_input_chars: int = 2_000_000  # input beyond this is not looked at
    truncate_after: float = 0.25  # truncate rules cut the rest only past this share of the text
    dedup_min_chars: int = 30  # shorter paragraphs ("Yes.", "Advertisement") are never repeats


Action = Literal["drop", "truncate"]


@dataclass(frozen=True, slots=True)
class Rule:
    reason: str
    pattern: re.Pattern[str]
    action: Action = "drop"
    max_chars: int = 300  # a line longer than this is never matched by the rule


def _rule(
    reason: str, pattern: str, action: Action = "drop", max_chars: int = 300, case: bool = False
) -> Rule:
    flags = 0 if case else re.IGNORECASE
    return Rule(reason, re.compile(pattern, flags), action, max_chars)


# Photo agencies and wires as they appear in credit lines.
AGENCY = (
    r"(?:AP|AFP|Reuters|Getty(?: Images)?|EPA(?:-EFE)?|EFE|dpa|DPA|PA(?: Images| Wire)?|AAP|"
    r"Associated Press|Bloomberg|picture[- ]alliance|Shutterstock|iStock(?:photo)?|Alamy|"
    r"Imago(?: Images)?|IMAGO|NurPhoto|SIPA|Sipa(?: USA)?|ZUMA(?: Press)?|Keystone|ANP|"
    r"Anadolu(?: Agency)?|Xinhua|TASS|Sputnik|Yonhap|Kyodo|KCNA|Redux|NASA|UPI|Polaris)"
)
CREDIT_TAIL = rf"(?:\bvia\b|/|\|)\s*{AGENCY}(?:\s+(?:Photo|Images?|Pictures|file))?\)?"
# Sharing targets, as the labels of share buttons.
NETWORK = (
    r"(?:facebook|twitter|x|google\s*(?:plus|\+)|linkedin|pinterest|whatsapp|reddit|e-?mail|"
    r"print|drucken|imprimer|xing|telegram|tumblr|flipboard|messenger|pocket|threads|bluesky|"
    r"mastodon|copy link|link kopieren|tweet|pin it|sms)"
)
SHARE_VERB = r"(?:share|teilen|partager|compartir|condividi|udostępnij|delen)"
RELATED_LABEL = (
    r"(?:related(?: articles?| stories| content| coverage| links?)?|read (?:more|also)|also read|"
    r"see also|more on this(?: story)?|recommended|watch|listen|lesen sie (?:auch|mehr|hier)|"
    r"mehr (?:zum thema|dazu)|auch interessant|weiterlesen|zum thema|lire aussi|à lire aussi|"
    r"voir aussi|leer más|lea también|te puede interesar|ver también|leggi anche|"
    r"czytaj (?:też|także|więcej))"
)

RULES: tuple[Rule, ...] = (
    # Paywalls and subscription walls: the article ends here.
    _rule("paywall", r"\byou(?:'|’| ha)ve read\b.{0,40}\bfree (?:articles?|stories)\b", "truncate"),
    _rule(
        "paywall",
        r"\b(?:subscribe|sign up|log in|register)\b.{0,30}\bto (?:continue|keep) "
        r"reading\b|^subscribe to continue\b",
        "truncate",
    ),
    _rule(
        "paywall",
        r"\bthis (?:article|story|content) is (?:only )?(?:available|reserved|"
        r"exclusive) (?:to|for) (?:paying )?(?:subscribers|members)\b",
        "truncate",
    ),
    _rule(
        "paywall",
        r"^start your (?:free )?(?:subscription|trial)\b|^already a subscriber\?",
        "truncate",
    ),
    _rule(
        "paywall",
        r"^(?:jetzt )?weiter ?lesen mit\b|\b(?:artikel|beitrag|inhalt) ist "
        r"(?:nur |exklusiv )?für (?:abonnent|plus)|^cet article est réservé aux abonnés",
        "truncate",
    ),
    # Letters and appeals to readers after the article.
    _rule(
        "donation_appeal",
        r"^(?:dear (?:readers?|friends?|subscribers?)|liebe (?:leserinnen "
        r"und leser|leser(?:innen)?|leser\*innen)|chers lecteurs|chère lectrice, cher lecteur)"
        r"\s*[,!:]?$",
        "truncate",
    ),
    _rule(
        "donation_appeal",
        r"^(?:please )?(?:support (?:us|our (?:journalism|work|reporting))|"
        r"donate\b|make a (?:donation|contribution)|become a (?:member|supporter|patron)|"
        r"unterstützen sie (?:uns|unsere arbeit)|jetzt spenden|faites un don|"
        r"soutenez(?:-nous| notre))",
        max_chars=200,
    ),
    # Share and embed widgets.
    _rule("share_widget", rf"^(?:play\s+)?{NETWORK}(?:[\s|·•,/]+{NETWORK})*\s*:?$"),
    _rule(
        "share_widget",
        rf"^(?:{SHARE_VERB}|diese[nrs]? \w+ {SHARE_VERB})"
        rf"(?:\s+(?:this|on|via|auf|per|sur|en|su|na|the|article|story|post|page|artikel|"
        rf"beitrag|seite|{NETWORK}))*\s*:?$",
    ),
    _rule(
        "share_widget",
        r"^embed\b.*\b(?:copy (?:this|the) code|embed code)\b|"
        r"\bcopy this code to your (?:website|blog|site)\b|^qr code\b|"
        r"^click to (?:share|email|print)\b",
    ),
    # Links to other articles.
    _rule("related_link", rf"^{RELATED_LABEL}\s*(?::|»|>|›|→|-|–|—)\s*\S"),
    _rule(
        "related_link",
        r"^(?:related(?: articles?| stories| content)?|read more|more stories|"
        r"weiterlesen|mehr zum thema|lesen sie auch|ähnliche (?:beiträge|artikel)|"
        r"das könnte sie auch interessieren|you (?:might|may) also like|"
        r"recommended(?: for you)?)\s*:?\s*(?:\.\.\.|…)?$",
    ),
    # Photo captions and credits. Credits are matched case-sensitively (agency names).
    _rule("photo_credit", rf"^[A-Z][^.!?]{{0,80}}?\s*{CREDIT_TAIL}$", max_chars=120, case=True),
    _rule(
        "photo_credit",
        rf"^\(?{AGENCY}\s+(?:Photo|Images?|file photo)(?:\s*/\s*[^)]{{1,60}})?"
        r"\)?$",
        max_chars=120,
        case=True,
    ),
    _rule(
        "photo_credit",
        r"^\(?(?:photo(?:graph)?|foto|fotos|bild|bilder|image|picture|credit|"
        r"photo credit|crédit(?: photo)?|zdjęcie)\s*[:©]\s*\S[^\n]{0,100}$",
        max_chars=120,
    ),
    _rule(
        "photo_credit",
        r"^[^.!?]{0,80}\b(?:Getty Images|Shutterstock|iStock(?:photo)?|"
        r"picture[- ]alliance|Imago Images|Alamy)\b[^.!?]{0,40}$",
        max_chars=120,
    ),
    _rule(
        "photo_caption",
        rf"[.!?…][\"”’)]?\s+[A-Z][^.!?]{{0,80}}?\s*{CREDIT_TAIL}$",
        max_chars=700,
        case=True,
    ),
    _rule(
        "photo_caption",
        rf"\((?:{AGENCY}\s+Photo(?:/[^)]{{1,60}})?|(?:photo|foto|bild|"
        r"image|credit)\s*:\s*[^)]{1,80})\)$|\bPhotograph:\s*[^.]{1,80}$",
        max_chars=700,
    ),
    _rule(
        "photo_caption",
        r"^(?:FILE\s*[-–—]\s*)?(?:In )?(?:this|these)\s+(?:(?:undated|file|handout|aerial|"
        r"recent|\S*\d\S*|(?:jan|feb|march|april|may|june|july|aug|sept?|oct|nov|dec)\w*\.?,?|"
        r"\w+day,?)\s+){0,6}(?:photo|image|picture|frame grab|video grab)s?(?:,|\s+(?:made|"
        r"taken|provided|released|posted|shows?|showing|purports?|obtained|courtesy|"
        r"distributed|supplied)\b)",
        max_chars=700,
    ),
    # Newsletter boxes, ad labels, copyright lines.
    _rule(
        "newsletter_signup",
        r"^(?:sign up|subscribe|register|melden sie sich|abonnieren sie|"
        r"inscrivez-vous|abonnez-vous|suscríbete|get our)\b.{0,120}\bnewsletters?\b|"
        r"\bnewsletter\s+(?:abonnieren|bestellen|anmelden)\s*[.!]?$|"
        r"^[\w .&'’-]{0,40}\bnewsletters?$|^mit unserem newsletter\b|"
        r"^sie haben sich\b.{0,60}\bnewsletter\b.{0,20}\bangemeldet",
        max_chars=250,
    ),
    _rule(
        "advertisement",
        r"^(?:advertisement|advertising|anzeige|werbung|publicité|publicidad|"
        r"pubblicità|reklama|sponsored(?: content)?|gesponsert|promoted)\s*[:-]?$",
    ),
    _rule(
        "copyright_notice",
        r"^(?:©|\(c\)\s|copyright\s*(?:©|\(c\)|\d{4}))|\b(?:all rights reserved|alle "
        r"rechte vorbehalten|tous droits réservés|todos los derechos reservados)\.?$",
        max_chars=200,
    ),
)

# --- normalisation ----------------------------------------------------------------------------

LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
# Zero-width and format characters that only break words apart; ZWJ/ZWNJ stay (they carry
# meaning in Persian, Indic scripts and emoji).
INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u00ad\u200b\u2060\ufeff]")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])[\"'”’»)\]]*\s+|(?<=[。！？])")
NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> list[str]:
    """NFC text as a list of non-empty, whitespace-collapsed lines."""
    text = unicodedata.normalize("NFC", INVISIBLE.sub("", LINE_BREAKS.sub("\n", text)))
    lines = (SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return [line for line in lines if line]


def _sentence_keys(paragraph: str) -> list[str]:
    keys = (NON_WORD.sub(" ", s.casefold()).strip() for s in SENTENCE_SPLIT.split(paragraph))
    return [k for k in keys if k]


# --- the stage --------------------------------------------------------------------------------


@dataclass(slots=True)
class Cleaned:
    text: str  # one paragraph per line
    removed: dict[str, int]  # reason -> lines removed for it


def _apply_rules(lines: list[str], cfg: CleanConfig, removed: Counter[str]) -> list[str]:
    total = sum(len(line) + 1 for line in lines)
    kept: list[str] = []
    position = 0
    for index, line in enumerate(lines):
        rule = next((r for r in RULES if len(line) <= r.max_chars and r.pattern.search(line)), None)
        if rule is None:
            kept.append(line)
        elif rule.action == "truncate" and position >= cfg.truncate_after * total:
            removed[rule.reason] += len(lines) - index
            break
        else:
            removed[rule.reason] += 1
        position += len(line) + 1
    return kept


def _drop_repeats(lines: list[str], cfg: CleanConfig, removed: Counter[str]) -> list[str]:
    """Drop paragraphs all of whose sentences also appear in paragraphs that stay.

    Longest first, so of a body printed twice (one block, then split into paragraphs) the
    split copy stays; of two equal copies the first stays. Counting keys (not just membership)
    makes sure the last copy of a sentence is never dropped.
    """
    keys = [_sentence_keys(line) for line in lines]
    counts: Counter[str] = Counter(k for line_keys in keys for k in line_keys)
    dropped: set[int] = set()
    for i in sorted(range(len(lines)), key=lambda i: (-len(lines[i]), -i)):
        if len(lines[i]) < cfg.dedup_min_chars or not keys[i]:
            continue
        own = Counter(keys[i])
        if all(counts[k] > n for k, n in own.items()):
            counts.subtract(own)
            dropped.add(i)
    if dropped:
        removed["repeated_paragraph"] += len(dropped)
    return [line for i, line in enumerate(lines) if i not in dropped]


def _cap(lines: list[str], cfg: CleanConfig, removed: Counter[str]) -> list[str]:
    size = 0
    for index, line in enumerate(lines):
        size += len(line) + 1
        if size > cfg.max_chars + 1:
            removed["over_max_chars"] += len(lines) - index
            room = cfg.max_chars - (size - len(line) - 1)
            head = line[:room].rsplit(" ", 1)[0] if room > 0 else ""
            return [*lines[:index], head] if head else lines[:index]
    return lines


def clean(text: str, cfg: CleanConfig = CleanConfig()) -> Cleaned | Failure:
    """Normalised article text without boilerplate, or empty_text if too little is left."""
    removed: Counter[str] = Counter()
    lines = normalise(text[: cfg.max_input_chars])
    lines = _apply_rules(lines, cfg, removed)
    lines = _drop_repeats(lines, cfg, removed)
    lines = _cap(lines, cfg, removed)
    result = "\n".join(lines)
    if len(result) < cfg.min_chars:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(removed.items())) or "nothing removed"
        return Failure(
            "empty_text", STAGE, f"{len(result)} chars left < min_chars={cfg.min_chars} ({detail})"
        )
    return Cleaned(result, dict(removed))
