"""The `language` stage: agreement with declared page languages on the real corpus, "und" for
text too short or unclear to call, and one answer per text across calls, threads and
processes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.clean import clean
from agents.extract import extract
from agents.language import Language, LanguageConfig, detect_language, primary_code, sample
from agents.records import Failure, RawPage

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"

TEXTS = {
    "en": "The city council voted on Tuesday to expand the bus network to the northern "
    "suburbs, after months of complaints from commuters about crowded trains.",
    "de": "Der Stadtrat hat am Dienstag beschlossen, das Busnetz in die nördlichen Vororte "
    "auszubauen, nachdem Pendler sich monatelang über volle Züge beschwert hatten.",
    "fr": "Le conseil municipal a voté mardi l'extension du réseau de bus vers la banlieue "
    "nord, après des mois de plaintes des usagers sur les trains bondés.",
    "es": "El ayuntamiento votó el martes ampliar la red de autobuses a los barrios del "
    "norte, tras meses de quejas de los viajeros por los trenes abarrotados.",
    "pl": "Rada miasta zagłosowała we wtorek za rozbudową sieci autobusowej na północne "
    "przedmieścia po miesiącach skarg pasażerów na zatłoczone pociągi.",
    "zh": "市议会星期二投票决定将公交网络扩展到北部郊区，此前通勤者数月来一直抱怨火车拥挤。",
}

# Names only: langdetect's random trials disagree on it, so its probabilities depend on the
# seed (0.71 with seed 0, 0.56 to 0.86 with seeds 1-5), which shows whether the seed holds.
AMBIGUOUS = "Berlin Paris London Rom Madrid Wien Prag"


@pytest.mark.parametrize("code", sorted(TEXTS))
def test_literal_texts(code: str) -> None:
    result = detect_language(TEXTS[code])
    assert result.code == code
    assert 0.8 <= result.confidence <= 1.0


@pytest.mark.parametrize(
    "text", ["", "   \n ", "Hi there", "12345 67890 !!! ??? 2024-01-01 12:00", "\u00a0" * 50]
)
def test_short_or_letterless_text_is_undetermined(text: str) -> None:
    assert detect_language(text) == Language("und", 0.0)


def test_non_text_input_is_undetermined() -> None:
    assert detect_language(None).code == "und"  # type: ignore[arg-type]


def test_low_confidence_is_undetermined() -> None:
    loose = detect_language(AMBIGUOUS, LanguageConfig(min_confidence=0.0))
    assert loose.code != "und"
    assert loose.confidence < 1.0
    strict = detect_language(AMBIGUOUS, LanguageConfig(min_confidence=loose.confidence + 1e-3))
    assert strict.code == "und"
    assert strict.confidence == loose.confidence  # the top probability, still reported


def test_same_answer_every_call_and_thread() -> None:
    cfg = LanguageConfig(min_confidence=0.0)
    first = detect_language(AMBIGUOUS, cfg)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: detect_language(AMBIGUOUS, cfg), range(16)))
    assert results == [first] * 16


def test_seed_decides_the_answer_and_holds_across_processes() -> None:
    cfgs = [LanguageConfig(seed=seed, min_confidence=0) for seed in range(5)]
    assert len({detect_language(AMBIGUOUS, cfg) for cfg in cfgs}) > 1, (
        "AMBIGUOUS must be seed-sensitive for this test to mean anything"
    )
    code = (
        "from agents.language import LanguageConfig, detect_language\n"
        f"r = detect_language({AMBIGUOUS!r}, LanguageConfig(min_confidence=0))\n"
        "print(r.code, repr(r.confidence))"
    )
    here = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=here, capture_output=True, text=True, check=True
    ).stdout.split()
    mine = detect_language(AMBIGUOUS, LanguageConfig(min_confidence=0))
    assert (out[0], float(out[1])) == (mine.code, mine.confidence)


def test_global_langdetect_seed_untouched() -> None:
    from langdetect import DetectorFactory

    before = DetectorFactory.seed
    detect_language(TEXTS["en"], LanguageConfig(seed=1234))
    assert DetectorFactory.seed == before


def test_primary_code() -> None:
    assert primary_code("zh-cn") == "zh"
    assert primary_code("zh-tw") == "zh"
    assert primary_code("de") == "de"


def test_sample_is_bounded_and_spread_without_half_words() -> None:
    words = [f"w{i:05d}" for i in range(5_000)]
    text = " ".join(words)
    piece = sample(text, 600, 3)
    assert len(piece) <= 600
    got = piece.split()
    assert set(got) <= set(words)  # every piece starts and ends on a word boundary
    positions = [words.index(w) for w in got]
    assert positions[0] == 0  # from the start ...
    assert positions[-1] > 4_900  # ... to the end
    assert any(2_000 < p < 3_000 for p in positions)  # ... and the middle
    assert sample("short text", 600, 3) == "short text"
    assert sample(text, 600, 1) == text[: len(sample(text, 600, 1))]  # one slice: the head


def test_long_text_costs_a_bounded_sample() -> None:
    # A page of German with an English block far beyond the sample: the answer comes from
    # the sample, which still sees mostly German.
    long_text = (TEXTS["de"] + " ") * 400 + (TEXTS["en"] + " ") * 20
    assert detect_language(long_text).code == "de"


def _declared_pages() -> list[tuple[str, str, str]]:
    pages = []
    for line in (CORPUS / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        body = gzip.decompress((CORPUS / entry["file"]).read_bytes())
        extracted = extract(RawPage(entry["url"], body))
        if isinstance(extracted, Failure) or not extracted.page_language:
            continue
        cleaned = clean(extracted.text)
        if isinstance(cleaned, Failure):
            continue
        pages.append((entry["file"], extracted.page_language, cleaned.text))
    return pages


def test_corpus_pages_agree_with_declared_language() -> None:
    """Project acceptance criterion: >= 95% agreement with <html lang> (primary subtag).

    Text as the pipeline sees it (agents.extract + agents.clean). The two known misses are
    pages that declare the wrong language (German text under lang="en-US", an English
    agenda under lang="de").
    """
    pages = _declared_pages()
    assert len(pages) >= 80, "the corpus should hold ~91 pages that declare a language"
    misses = [(f, want, detect_language(text)) for f, want, text in pages]
    misses = [m for m in misses if m[2].code != m[1]]
    agreement = 1 - len(misses) / len(pages)
    assert agreement >= 0.95, misses


def test_config_validates() -> None:
    for bad in ({"sample_chars": 0}, {"sample_slices": 0}, {"min_confidence": 1.5}):
        with pytest.raises(ValueError):
            LanguageConfig(**bad)
