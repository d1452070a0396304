"""The `language` stage: which language an article's text is written in (langdetect).

langdetect is a naive-Bayes n-gram model run as a few random trials, so it needs a fixed seed
to give one answer per text; it also scales with the text it is given. This module detects on a
bounded sample of the text with a per-call seeded detector, and answers "und" (undetermined)
rather than guessing when the text is too short or the model is unsure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from langdetect.detector import Detector
from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

UNDETERMINED = "und"


@dataclass(frozen=True)
class LanguageConfig:
    """How the language is detected.

    - `seed`: langdetect's random seed; fixed so the same text gets the same answer in every
      call and every process.
    - `sample_chars`: at most this many characters are given to the detector, taken as
      `sample_slices` slices spread evenly over the text (cut at spaces), so a long page costs
      no more than a short one and a foreign-language block at the top cannot decide alone.
      Measured on the 91 corpus pages that declare <html lang> (text by trafilatura, seed 0,
      min of 3 runs, one process): the full text (langdetect's own 10,000-char cap lifted)
      agrees with the declared language on 89/91 (97.8%) at 10.2 ms/page; 3 slices totalling
      2,000 chars agree on the same 89/91 at 3.6 ms/page (2.8x faster) and give the full-text
      answer on all 110 pages. 1,000 chars: same agreement, 2.5 ms; the first 500 chars: same
      agreement but differs from the full text on 1/110 pages, so 2,000 keeps a margin. Both
      misses are pages that declare the wrong language (German text under lang="en-US",
      an English agenda under lang="de").
    - `min_chars`: fewer letters than this in the sample gives "und": a few words are not
      enough evidence for a character n-gram model (digits and punctuation do not count).
    - `min_confidence`: a top probability below this gives "und" (mixed-language text).
    """

    seed: int = 0
    sample_chars: int = 2_000
    sample_slices: int = 3
    min_chars: int = 20
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.sample_chars < 1 or self.sample_slices < 1:
            raise ValueError("LanguageConfig.sample_chars and sample_slices must be positive")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError("LanguageConfig.min_confidence must be within 0..1")


@dataclass(frozen=True, slots=True)
class Language:
    """The detected language. `confidence` is the top language's probability, also for an
    "und" that fell below `min_confidence`; it is 0.0 when there was nothing to detect."""

    code: str  # ISO 639-1 ("en", "de", ...) or "und"
    confidence: float  # 0..1


_factory: DetectorFactory | None = None
_factory_lock = threading.Lock()


def _profiles() -> DetectorFactory:
    """Load langdetect's 55 language profiles once per process (~0.3 s).

    A private factory rather than langdetect's module global, so nothing here depends on or
    changes the global `DetectorFactory.seed` another library in the process might set.
    """
    global _factory
    if _factory is None:
        with _factory_lock:
            if _factory is None:
                factory = DetectorFactory()
                factory.load_profile(PROFILES_DIRECTORY)
                _factory = factory
    return _factory


def sample(text: str, chars: int, slices: int = 1) -> str:
    """Up to `chars` characters of `text` as `slices` evenly spread pieces joined by spaces.

    Each piece starts and ends at whitespace where there is some nearby, so no piece begins
    or ends in a half word that would feed the detector a false n-gram.
    """
    if len(text) <= chars:
        return text
    slices = max(1, min(slices, chars))
    width = chars // slices
    step = (len(text) - width) / max(1, slices - 1) if slices > 1 else 0
    pieces = []
    for i in range(slices):
        start = int(i * step)
        end = start + width
        if start > 0:
            space = text.find(" ", start, start + width // 4)
            start = space + 1 if space != -1 else start
        if end < len(text):
            space = text.rfind(" ", end - width // 4, end)
            end = space if space > start else end
        pieces.append(text[start:end])
    return " ".join(pieces)


def primary_code(langdetect_code: str) -> str:
    """ISO 639-1 code from langdetect's: it is already one, except "zh-cn"/"zh-tw" -> "zh"."""
    return langdetect_code.split("-", 1)[0].lower()


def detect_language(text: str, cfg: LanguageConfig = LanguageConfig()) -> Language:
    """Detect `text`'s language; "und" when it is too short, has no letters, or is ambiguous.

    Deterministic: each call builds its own detector seeded with `cfg.seed`, so concurrent
    calls never share random state. Probabilities of langdetect codes that map to one ISO code
    (zh-cn, zh-tw) are added together.
    """
    if not isinstance(text, str):
        return Language(UNDETERMINED, 0.0)
    piece = sample(text, cfg.sample_chars, cfg.sample_slices)
    if sum(ch.isalpha() for ch in piece) < cfg.min_chars:
        return Language(UNDETERMINED, 0.0)
    return _detect(piece, cfg.seed, cfg.min_confidence)


def _detect(piece: str, seed: int, min_confidence: float) -> Language:
    detector = Detector(_profiles())
    detector.seed = seed  # Detector copies the factory's seed at construction; ours per call.
    detector.set_max_text_length(len(piece))
    detector.append(piece)
    try:
        ranked = detector.get_probabilities()
    except LangDetectException:  # "no features in text": nothing in it langdetect knows
        return Language(UNDETERMINED, 0.0)
    totals: dict[str, float] = {}
    for guess in ranked:
        code = primary_code(guess.lang)
        totals[code] = totals.get(code, 0.0) + guess.prob
    if not totals:
        return Language(UNDETERMINED, 0.0)
    code, prob = max(totals.items(), key=lambda item: (item[1], item[0]))
    prob = min(1.0, prob)
    if prob < min_confidence:
        return Language(UNDETERMINED, round(prob, 4))
    return Language(code, round(prob, 4))
