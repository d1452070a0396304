"""Tests for agents/clean.py: normalisation, each boilerplate rule, repeats, the seeds."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.clean import CleanConfig, Cleaned, clean
from agents.extract import Extracted, extract
from agents.records import Failure
from tests.agents.fixtures_extract import SEED_000, SEED_004, corpus_outcomes, seed_page
from tests.agents.fixtures_extract_golden import GOLDEN

# Real article sentences, long enough to clear min_chars on their own.
P1 = (
    "The city council voted on Tuesday to extend the tram line to the northern suburbs, "
    "a project that has been debated for more than a decade."
)
P2 = (
    "Construction is expected to start next spring and to last about three years, "
    "according to the transport department."
)
P3 = "Residents who oppose the plan said they would challenge the decision in court."
P4 = "The mayor, who campaigned on the project, called the vote a turning point for the city."
P5 = "Opposition councillors questioned the cost estimate of 240 million euros."
ARTICLE = [P1, P2, P3, P4, P5]


def cleaned(text: str, **cfg) -> Cleaned:
    result = clean(text, replace(CleanConfig(), **cfg) if cfg else CleanConfig())
    assert isinstance(result, Cleaned), result
    return result


def with_article(*extra: str, at: int = 2) -> str:
    """The article with boilerplate lines inserted after paragraph `at`."""
    return "\n".join([*ARTICLE[:at], *extra, *ARTICLE[at:]])


# --- normalisation ----------------------------------------------------------------------------


def test_whitespace_and_unicode_normalisation() -> None:
    raw = (
        f"  {P1}\r\n\r\n\t{P2}\u2028"
        "Cafe\u0301  ist\u00a0ein\u200b Wort\u00ad,\t  sagte\u3000er.  \x0c"
        f"\n\n\n{P3}\x00\n"
    )
    result = cleaned(raw)
    assert result.text == f"{P1}\n{P2}\nCafé ist ein Wort, sagte er.\n{P3}"
    assert result.removed == {}


def test_zero_width_joiners_are_kept() -> None:
    persian = "می\u200cخواهم " * 30  # ZWNJ is part of Persian spelling
    assert "\u200c" in cleaned(persian).text


# --- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["Play Facebook", "Twitter", "Google Plus"], "share_widget"),
        (["Embed ISIS Fighters Retake Ancient Syrian City of Palmyra 0:32 autoplay autoplay "
          "Copy this code to your website or blog"], "share_widget"),
        (["Share this article:", "Teilen auf", "Facebook | Twitter | WhatsApp", "E-Mail"],
         "share_widget"),
        (["QR Code to Subscription page"], "share_widget"),
        (["Related: U.S. Sending 200 Troops to Syria to Help in Fight Against ISIS in Raqqa",
          "Read more: Looted colonial art: Germany to set up new contact office",
          "Lesen Sie auch: Der Stadtrat und die Straßenbahn", "Related"], "related_link"),
        (["Hassan Ammar / AP", "Militant Video via AP", "(AP Photo/Hassan Ammar)",
          "Foto: Timur", "(Credit: Clayton Aldern / Grist)", "Photo: Getty Images"],
         "photo_credit"),
        (["A Syrian man carries a carpet through a devastated part of the town of Palmyra in "
          "April. Hassan Ammar / AP",
          "This image made from militant video posted online by the Aamaq News Agency purports "
          "to show gun-mounted vehicles operated by the group firing at Syrian troops.",
          "In this Sunday, Dec. 11, 2016 photo, a man walks past a destroyed building. "
          "(AP Photo/Hassan Ammar)",
          "Protesters gather outside parliament. Photograph: Stefan Rousseau/PA"],
         "photo_caption"),
        (["Sign up for our daily newsletter", "Newsletter abonnieren", "PC Gamer Newsletter"],
         "newsletter_signup"),
        (["Advertisement", "Anzeige"], "advertisement"),
        (["© 2019 Science X Network", "Copyright 2020 Reuters. All rights reserved."],
         "copyright_notice"),
    ],
)  # fmt: skip
def test_boilerplate_lines_are_removed_and_counted(lines: list[str], reason: str) -> None:
    result = cleaned(with_article(*lines))
    assert result.text == "\n".join(ARTICLE)
    assert result.removed == {reason: len(lines)}


@pytest.mark.parametrize(
    "sentence",
    [
        "Facebook said on Tuesday it would remove the accounts, a spokesperson told AP.",
        "He said the footage had been distributed via AP.",
        "These pictures of the flood were shared widely on social media, police said.",
        "In this picture-perfect town, locals have taken to the streets in protest.",
        "These assembled instructions constitute a Docker image, which can be spun up anywhere.",
        "Copyright law in the EU has changed since 2019, the court noted in its ruling.",
        "The company sends a weekly newsletter to its 10,000 subscribers, she said.",
        "Related issues were discussed at the summit, including migration and trade.",
        "Read more about the decision in the council's published minutes, he added.",
        "Dear Reader is the title of her new novel, which appears in the spring.",
        "Subscribers to the service will pay less from March, the company announced.",
        "Share prices fell sharply on Monday after the announcement.",
    ],
)
def test_article_sentences_that_look_like_boilerplate_survive(sentence: str) -> None:
    result = cleaned(with_article(sentence))
    assert sentence in result.text
    assert result.removed == {}


def test_paywall_late_in_the_text_truncates_the_rest() -> None:
    text = with_article(
        "You've read 3 of 5 free articles. Subscribe to continue.",
        "Real news can be honest, hopeful, credible, constructive.",
        "Dear Reader,",
        "About a year ago, I happened upon this statement about the Monitor.",
        at=5,
    )
    result = cleaned(text)
    assert result.text == "\n".join(ARTICLE)
    assert result.removed == {"paywall": 4}


def test_appeal_late_in_the_text_truncates_the_rest() -> None:
    result = cleaned(with_article("Dear Reader,", "We have a favour to ask of you.", at=4))
    assert result.text == "\n".join(ARTICLE[:4])
    assert result.removed == {"donation_appeal": 3}  # the marker, the letter and P5


def test_paywall_banner_above_the_article_removes_only_itself() -> None:
    result = cleaned(with_article("Subscribe to continue reading our journalism.", at=0))
    assert result.text == "\n".join(ARTICLE)
    assert result.removed == {"paywall": 1}


# --- repeated paragraphs ----------------------------------------------------------------------


def test_exact_repeat_is_removed_first_copy_kept() -> None:
    result = cleaned(with_article(P1, at=3))
    assert result.text == "\n".join(ARTICLE)
    assert result.removed == {"repeated_paragraph": 1}


def test_body_as_one_block_and_as_paragraphs_comes_out_once_as_paragraphs() -> None:
    result = cleaned("\n".join([" ".join(ARTICLE), *ARTICLE]))
    assert result.text == "\n".join(ARTICLE)
    assert result.removed == {"repeated_paragraph": 1}


def test_paragraph_with_a_new_sentence_stays_and_its_shorter_copy_goes() -> None:
    extended = P3 + " A hearing is scheduled for June."
    result = cleaned("\n".join([*ARTICLE, extended]))
    assert result.text == "\n".join([P1, P2, P4, P5, extended])
    assert result.removed == {"repeated_paragraph": 1}


def test_paragraphs_sharing_only_some_sentences_both_stay() -> None:
    text = "\n".join([f"{P1} {P2}", f"{P2} {P3}"])
    assert cleaned(text).text == text


def test_short_paragraphs_are_never_repeats() -> None:
    text = "\n".join([P1, "Why?", P2, "Why?", P3])
    assert cleaned(text).text == text


# --- limits -----------------------------------------------------------------------------------


def test_too_little_text_is_empty_text() -> None:
    result = clean("Play Facebook\nTwitter\nShort line.")
    assert isinstance(result, Failure)
    assert (result.reason, result.stage) == ("empty_text", "clean")
    assert "share_widget=2" in result.message
    assert isinstance(clean("Short line.", CleanConfig(min_chars=5)), Cleaned)


def test_output_is_capped_at_a_paragraph_boundary() -> None:
    result = cleaned("\n".join(ARTICLE), max_chars=len(P1) + len(P2) + 1)
    assert result.text == f"{P1}\n{P2}"
    assert result.removed == {"over_max_chars": 3}


def test_input_beyond_max_input_chars_is_ignored() -> None:
    result = cleaned("\n".join(ARTICLE), max_input_chars=len(P1))
    assert result.text == P1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from([*ARTICLE, "Twitter", "Related: more", "Dear Reader,",
                                   "Hassan Ammar / AP", " ", "\u00a0\u200b"]),
                  st.text(max_size=120)),
        max_size=12,
    )
)  # fmt: skip
def test_clean_is_total_and_idempotent(lines: list[str]) -> None:
    result = clean("\n".join(lines), CleanConfig(min_chars=1))
    if isinstance(result, Failure):
        assert result.reason == "empty_text"
        return
    assert result.text == result.text.strip() and "  " not in result.text
    assert all(line.strip() for line in result.text.split("\n"))
    again = clean(result.text, CleanConfig(min_chars=1))
    assert isinstance(again, Cleaned) and again.text == result.text and again.removed == {}


# --- the seeds, extract then clean ------------------------------------------------------------


def sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?:(?<=[.!?])|(?<=[.!?][\"”]))\s+(?=[A-Z\"“])", paragraph) if s]


def seed_text(path) -> tuple[Extracted, Cleaned]:
    extracted = extract(seed_page(path))
    assert isinstance(extracted, Extracted), extracted
    return extracted, cleaned(extracted.text)


def test_seed_000_body_survives_once_and_widgets_go() -> None:
    lines = [line.strip() for line in SEED_000.read_text().splitlines() if line.strip()]
    # Line 3 is the body as one block; from line 4 on, the same body split into paragraphs
    # with the site's widgets, "Related:" links and a photo caption between them.
    boilerplate = {"Play Facebook", "Twitter", "Google Plus"}
    body = [
        line
        for line in lines[3:]
        if line not in boilerplate
        and not line.startswith(("Embed ", "Related: ", "A Syrian man carries a carpet"))
    ]
    assert len(body) == 22
    _, result = seed_text(SEED_000)
    for paragraph in body:
        for sentence in sentences(paragraph):
            assert result.text.count(sentence) == 1, sentence
    assert result.text == "\n".join(body)  # the paragraphed copy, nothing else
    for junk in ("Play Facebook", "Google Plus", "Copy this code", "Related:", "Hassan Ammar / AP"):
        assert junk not in result.text
    assert result.removed == {
        "share_widget": 4, "related_link": 3, "photo_caption": 1, "repeated_paragraph": 1,
    }  # fmt: skip


def test_seed_004_body_survives_and_caption_and_appeal_go() -> None:
    lines = [line.strip() for line in SEED_004.read_text().splitlines() if line.strip()]
    # Line 1 headline, 2 standfirst, 3 photo credit, 4 photo caption; the article runs until
    # the paywall line; after it comes the subscription letter.
    paywall = next(i for i, line in enumerate(lines) if line.startswith("You've read"))
    body = [lines[1], *lines[4:paywall]]
    assert len(body) == 14 and lines[2] == "Militant Video via AP"
    extracted, result = seed_text(SEED_004)
    assert extracted.title == lines[0]
    for paragraph in body:
        for sentence in sentences(paragraph):
            assert sentence in result.text, sentence
    assert result.text == "\n".join(body)
    for junk in ("Militant Video via AP", "This image made from militant video", "free articles",
                 "Subscribe to continue", "Real news can be honest", "Dear Reader",
                 "bran muffin", "Start your subscription today", "QR Code"):  # fmt: skip
        assert junk not in result.text
    assert result.removed == {
        "photo_credit": 1,
        "photo_caption": 1,
        "paywall": len(lines) - paywall,
    }


# --- the corpus -------------------------------------------------------------------------------


def test_corpus_cleans_without_losing_article_text() -> None:
    """Every extracted corpus page cleans to an article, and the golden article snippets
    survive cleaning (compared without trailing punctuation: the one repeat clean removes on
    these pages keeps the sentence, once, as a list item without its full stop)."""
    lost = []
    for name, (_, extracted) in corpus_outcomes().items():
        if isinstance(extracted, Failure):
            continue
        result = clean(extracted.text)
        assert isinstance(result, Cleaned), (name, result)
        for snippet in GOLDEN.get(name, ((), (), ()))[0]:
            if snippet in extracted.text and snippet.strip().rstrip(".!?") not in result.text:
                lost.append((name, snippet))
    assert lost == []
