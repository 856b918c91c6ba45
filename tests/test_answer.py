"""The answer contract on canned outputs: citation parsing, support verdicts, abstention,
context building, the streaming marker filter, and extractive answers on the sample index."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from rag_papers.answering.citations import MarkerFilter, is_abstention, parse_citations
from rag_papers.answering.context import build_context
from rag_papers.answering.contract import ABSTAIN_PHRASE, CITATION_PATTERN, Answer
from rag_papers.answering.llms import Completion
from rag_papers.answering.support import check_support, extract_numbers, split_answer
from rag_papers.answering.usage import count_usage
from rag_papers.core.papers import Paper
from rag_papers.core.settings import Settings, load_settings
from rag_papers.core.text import count_tokens, split_sentences
from rag_papers.engine.qa import PaperQA, sample_corpus_path
from rag_papers.retrieval.retriever import ScoredPaper

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
DEFAULT_SUPPORT = Settings.model_fields["support_threshold"].default


def _markers(text: str) -> list[int]:
    """Every number inside every citation marker of ``text`` ([1-3] counts 1, 3)."""
    return [int(n) for m in CITATION_PATTERN.finditer(text) for n in re.findall(r"\d+", m[1])]


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return " ".join(text.split())


@pytest.fixture(scope="module")
def papers() -> dict[str, Paper]:
    """The bundled sample corpus, keyed by the part of the title before ':'."""
    from rag_papers.ingest.loaders import load_papers

    return {p.title.split(":")[0]: p for p in load_papers(sample_corpus_path()).papers}


@pytest.fixture(scope="module")
def self_rag_source(papers: dict[str, Paper]) -> dict[int, str]:
    p = papers["Self-RAG"]
    return {1: f"{p.title}. {p.abstract}"}


# --- parse_citations -------------------------------------------------------------------------
class TestParseCitations:
    def test_single_marker_kept(self) -> None:
        assert parse_citations("Self-RAG retrieves on demand [1].", 3) == (
            "Self-RAG retrieves on demand [1].",
            [1],
            [],
        )

    def test_list_and_range_are_expanded(self) -> None:
        text, valid, removed = parse_citations("A [1, 2]. B [1-3]. C [2; 3].", 3)
        assert text == "A [1][2]. B [1][2][3]. C [2][3]."
        assert valid == [1, 2, 3]
        assert removed == []

    def test_adjacent_markers(self) -> None:
        text, valid, removed = parse_citations("Both agree [2][3].", 3)
        assert text == "Both agree [2][3]."
        assert valid == [2, 3] and removed == []

    def test_out_of_range_marker_removed_and_reported(self) -> None:
        text, valid, removed = parse_citations("It uses reflection tokens [9].", 3)
        assert text == "It uses reflection tokens."  # no dangling space before the period
        assert valid == [] and removed == [9]

    def test_zero_is_never_a_source(self) -> None:
        text, valid, removed = parse_citations("Claim [0] and more [1].", 2)
        assert text == "Claim and more [1]."
        assert valid == [1] and removed == [0]

    def test_mixed_list_keeps_only_valid_numbers(self) -> None:
        text, valid, removed = parse_citations("Shown in [2, 9] and [1-4].", 2)
        assert text == "Shown in [2] and [1][2]."
        assert valid == [2, 1]
        assert removed == [9, 3, 4]
        assert set(_markers(text)) <= {1, 2}

    def test_duplicates_collapse(self) -> None:
        text, valid, _ = parse_citations("X [1, 1]. Y [1].", 2)
        assert text == "X [1]. Y [1]."
        assert valid == [1]

    def test_text_tidy_after_removal(self) -> None:
        text, _, removed = parse_citations("First [7], second [8]; done [1] .", 1)
        assert text == "First, second; done [1]."
        assert removed == [7, 8]
        assert "  " not in text

    def test_no_sources_removes_every_marker(self) -> None:
        text, valid, removed = parse_citations("Nothing [1] is shown [2].", 0)
        assert text == "Nothing is shown."
        assert valid == [] and removed == [1, 2]

    def test_non_marker_brackets_untouched(self) -> None:
        text, valid, removed = parse_citations("Use E[Y|X] and [a] and [see x] [1].", 1)
        assert text == "Use E[Y|X] and [a] and [see x] [1]."
        assert valid == [1] and removed == []


# --- split_answer ----------------------------------------------------------------------------
class TestSplitAnswer:
    def test_markers_per_sentence(self) -> None:
        parts = split_answer("Self-RAG retrieves on demand [1]. It critiques itself [1][2]. Done.")
        assert parts == [
            ("Self-RAG retrieves on demand [1].", [1]),
            ("It critiques itself [1][2].", [1, 2]),
            ("Done.", []),
        ]

    def test_lone_marker_after_the_last_period_joins_that_sentence(self) -> None:
        parts = split_answer("Self-RAG retrieves on demand [1]. It uses reflection tokens. [2]")
        assert parts[1] == ("It uses reflection tokens [2].", [2])
        assert len(parts) == 2

    @pytest.mark.parametrize(
        "text",
        [
            "It uses reflection tokens. [2] Next claim here [1].",
            "It uses reflection tokens.[2] Next claim here.[1]",
        ],
    )
    def test_marker_after_period_belongs_to_that_sentence(self, text: str) -> None:
        parts = split_answer(text)
        assert [p[1] for p in parts] == [[2], [1]]

    def test_range_marker_expanded_and_deduplicated(self) -> None:
        assert split_answer("Both [1-3] and [2].") == [("Both [1-3] and [2].", [1, 2, 3])]

    def test_decimals_do_not_split(self) -> None:
        parts = split_answer("It improves by 4.5% over the baseline [1]. It is fast [1].")
        assert [p[0] for p in parts] == [
            "It improves by 4.5% over the baseline [1].",
            "It is fast [1].",
        ]


# --- extract_numbers ------------------------------------------------------------------------
class TestExtractNumbers:
    def test_latex_percent(self) -> None:
        assert extract_numbers(r"It is 60\% larger") == {"60%"}

    def test_plain_and_spaced_percent(self) -> None:
        assert extract_numbers("gains of 28.53% and 7 %") == {"28.53%", "7%"}

    def test_thousands_separator(self) -> None:
        assert extract_numbers("1,000 papers and 8,000 designs") == {"1000", "8000"}

    def test_decimals(self) -> None:
        assert extract_numbers("0.4B parameters, 0.07 away, 1.14 points") == {"0.4", "0.07", "1.14"}

    def test_sentence_final_period_not_part_of_number(self) -> None:
        assert extract_numbers("It has 4000 meshes.") == {"4000"}

    def test_markers_not_counted(self) -> None:
        assert extract_numbers("It works [1]. See [2, 3] and [4-6].") == set()
        assert extract_numbers("It has 4000 meshes [12].") == {"4000"}

    def test_years(self) -> None:
        assert extract_numbers("Published in 2023 and revised in 2024.") == {"2023", "2024"}

    def test_no_numbers(self) -> None:
        assert extract_numbers("Self-RAG critiques its own generations.") == set()

    def test_digits_glued_to_words_are_not_numbers(self) -> None:
        # 'Llama2' and 'v0' are names; the checker must not demand them from a source.
        assert extract_numbers("Llama2 and v0 variants") == set()


# --- is_abstention --------------------------------------------------------------------------
class TestIsAbstention:
    @pytest.mark.parametrize(
        "text",
        [
            ABSTAIN_PHRASE,
            f'"{ABSTAIN_PHRASE}"',
            f"  {ABSTAIN_PHRASE.upper()}  ",
            ABSTAIN_PHRASE.rstrip("."),
            f"“{ABSTAIN_PHRASE}”\n",
            f"**{ABSTAIN_PHRASE}**",
        ],
    )
    def test_phrase_variants(self, text: str) -> None:
        assert is_abstention(text)

    def test_phrase_buried_in_a_long_answer_is_not_abstention(self) -> None:
        text = (
            "Self-RAG trains a single model to retrieve on demand and to critique its outputs "
            "with reflection tokens [1]. It outperforms ChatGPT on open-domain QA [1]. "
            f"For the second part of the question, {ABSTAIN_PHRASE} The rest is covered [2]."
        )
        assert not is_abstention(text)

    def test_other_refusals_are_not_the_fixed_phrase(self) -> None:
        assert not is_abstention("I don't know.")
        assert not is_abstention("Self-RAG adds reflection tokens [1].")


# --- check_support ---------------------------------------------------------------------------
# Shares few words with the abstract ("unstable training and slow convergence"): only the
# embedding recognises it.
PARAPHRASE = (
    "Current parameter-efficient tuning methods for retrieval train unstably "
    "and converge slowly [1]."
)
CONDENSED = (
    "Self-RAG trains a single language model that retrieves passages on demand and reflects "
    "on them with reflection tokens [1]."
)
UNRELATED = (
    "Spider web structures were manufactured with additive printing and tested for strength [1]."
)


class TestCheckSupport:
    def test_invented_number_is_unsupported_and_named(
        self, self_rag_source: dict[int, str]
    ) -> None:
        [v] = check_support(
            [("Self-RAG with 70B parameters outperforms ChatGPT [1].", [1])],
            self_rag_source,
            threshold=DEFAULT_SUPPORT,
        )
        assert v.claim and not v.supported
        assert "70" in v.reason and "number" in v.reason

    def test_number_present_in_source_can_be_supported(
        self, self_rag_source: dict[int, str]
    ) -> None:
        [v] = check_support(
            [("Self-RAG (7B and 13B parameters) outperforms ChatGPT on open-domain QA [1].", [1])],
            self_rag_source,
            threshold=DEFAULT_SUPPORT,
        )
        assert v.supported, v.reason
        assert v.score >= DEFAULT_SUPPORT

    def test_latex_percent_in_source_matches_plain_percent(self) -> None:
        source = {1: r"DrivAerNet. It is 60\% larger than the largest public car dataset."}
        [v] = check_support(
            [("DrivAerNet is 60% larger than the largest public dataset of cars [1].", [1])],
            source,
            threshold=DEFAULT_SUPPORT,
        )
        assert v.supported, v.reason

    def test_thousands_separator_matches_either_way(self, papers: dict[str, Paper]) -> None:
        p = papers["DrivAerNet++"]
        src = {1: f"{p.title}. {p.abstract}"}  # the abstract writes 8,000
        verdicts = check_support(
            [
                ("DrivAerNet++ comprises 8000 diverse car designs simulated with CFD [1].", [1]),
                ("DrivAerNet++ comprises 9,000 diverse car designs simulated with CFD [1].", [1]),
            ],
            src,
            threshold=DEFAULT_SUPPORT,
        )
        assert verdicts[0].supported, verdicts[0].reason
        assert not verdicts[1].supported and "9000" in verdicts[1].reason

    def test_number_must_be_in_the_cited_source_not_another(self, papers: dict[str, Paper]) -> None:
        a, b = (
            papers["Self-Play Preference Optimization for Language Model Alignment"],
            papers["Self-RAG"],
        )
        sources = {1: f"{a.title}. {a.abstract}", 2: f"{b.title}. {b.abstract}"}
        claim = "SPPO reaches a length-controlled win-rate of 28.53% against GPT-4-Turbo"
        verdicts = check_support(
            [(f"{claim} [1].", [1]), (f"{claim} [2].", [2])], sources, threshold=DEFAULT_SUPPORT
        )
        assert verdicts[0].supported, verdicts[0].reason
        assert not verdicts[1].supported and "28.53%" in verdicts[1].reason

    def test_uncited_claim(self, self_rag_source: dict[int, str]) -> None:
        [v] = check_support(
            [("Self-RAG improves citation accuracy for long-form generations.", [])],
            self_rag_source,
            threshold=DEFAULT_SUPPORT,
        )
        assert v.claim and not v.supported
        assert v.reason == "no citation"

    def test_marker_without_a_source_counts_as_uncited(
        self, self_rag_source: dict[int, str]
    ) -> None:
        [v] = check_support(
            [("Self-RAG improves citation accuracy for long-form generations [4].", [4])],
            self_rag_source,
            threshold=DEFAULT_SUPPORT,
        )
        assert not v.supported and v.reason == "no citation"

    def test_short_connective_is_not_a_claim(self, self_rag_source: dict[int, str]) -> None:
        [v] = check_support([("In summary:", [])], self_rag_source, threshold=DEFAULT_SUPPORT)
        assert not v.claim and v.supported and v.reason == "not a claim"

    def test_lexical_only(self, self_rag_source: dict[int, str]) -> None:
        verdicts = check_support(
            [(CONDENSED, [1]), (UNRELATED, [1])], self_rag_source, threshold=DEFAULT_SUPPORT
        )
        condensed, unrelated = verdicts
        assert condensed.supported, condensed.reason
        assert not unrelated.supported and unrelated.reason.startswith("weak overlap")
        assert unrelated.score < condensed.score

    def test_with_embedder_paraphrase_supported(
        self, papers: dict[str, Paper], self_rag_source: dict[int, str], shared_embedder: Any
    ) -> None:
        p = next(p for title, p in papers.items() if title.startswith("Scattered or Connected"))
        source = {1: f"{p.title}. {p.abstract}"}
        [lexical] = check_support([(PARAPHRASE, [1])], source, threshold=DEFAULT_SUPPORT)
        assert not lexical.supported  # words alone do not carry it
        paraphrase, unrelated = check_support(
            [(PARAPHRASE, [1]), (UNRELATED, [1])],
            source,
            threshold=DEFAULT_SUPPORT,
            embedder=shared_embedder,
        )
        assert paraphrase.supported, paraphrase.reason
        assert not unrelated.supported, unrelated.reason
        # The embedding can only raise a score: it is max(lexical, cosine).
        assert paraphrase.score > lexical.score
        assert unrelated.score < paraphrase.score
        [condensed] = check_support(
            [(CONDENSED, [1])], self_rag_source, threshold=DEFAULT_SUPPORT, embedder=shared_embedder
        )
        assert condensed.supported, condensed.reason

    def test_embedder_does_not_rescue_an_invented_number(
        self, self_rag_source: dict[int, str], shared_embedder: Any
    ) -> None:
        [v] = check_support(
            [("Self-RAG (7B and 70B parameters) outperforms ChatGPT on open-domain QA [1].", [1])],
            self_rag_source,
            threshold=DEFAULT_SUPPORT,
            embedder=shared_embedder,
        )
        assert not v.supported and "70" in v.reason

    def test_verdicts_keep_order_and_markers(self, self_rag_source: dict[int, str]) -> None:
        pairs = [(UNRELATED, [1]), ("Short.", []), (CONDENSED, [1])]
        verdicts = check_support(pairs, self_rag_source, threshold=DEFAULT_SUPPORT)
        assert [(v.text, v.markers) for v in verdicts] == pairs


# --- build_context ---------------------------------------------------------------------------
def _scored(papers: list[Paper]) -> list[ScoredPaper]:
    return [ScoredPaper(paper=p, score=1.0 - i / 10, rank=i + 1) for i, p in enumerate(papers)]


class TestBuildContext:
    def test_numbering_and_headers(self, papers: dict[str, Paper]) -> None:
        # A copy with a year: the year shows in the header.
        first = dataclasses.replace(papers["Self-RAG"], year=2023)
        chosen = [first, papers["Adaptive-RAG"], papers["Pointer Networks"]]
        context, shown = build_context(_scored(chosen), budget=3000)
        assert [s.paper.title for s in shown] == [p.title for p in chosen]
        blocks = context.split("\n\n")
        assert blocks[0].startswith(f"[1] {chosen[0].title} (2023)\n")
        assert blocks[1].startswith(f"[2] {chosen[1].title}\n")
        assert blocks[2].startswith(f"[3] {chosen[2].title}\n")
        assert chosen[2].abstract in blocks[2]

    @pytest.mark.parametrize("budget", [200, 400, 700, 1200])
    def test_budget_respected(self, papers: dict[str, Paper], budget: int) -> None:
        ranked = _scored(list(papers.values())[:12])
        context, shown = build_context(ranked, budget=budget)
        assert count_tokens(context) <= budget
        assert 1 <= len(shown) < 12
        # Shown papers are a prefix of the ranking, numbered in order.
        assert [s.paper.id for s in shown] == [r.paper.id for r in ranked[: len(shown)]]
        assert _markers(context) == list(range(1, len(shown) + 1))

    def test_first_paper_always_shown_and_cut_at_a_sentence(self, papers: dict[str, Paper]) -> None:
        first = papers["Self-RAG"]
        assert count_tokens(first.abstract) > 150
        context, shown = build_context(_scored([first, papers["Pointer Networks"]]), budget=120)
        assert [s.paper.id for s in shown] == [first.id]
        assert count_tokens(context) <= 120
        body = context.split("\n", 1)[1]
        sentences = split_sentences(first.abstract)
        kept = split_sentences(body)
        assert 0 < len(kept) < len(sentences)
        assert kept == sentences[: len(kept)]  # whole sentences, from the start

    def test_later_paper_cut_at_sentence_boundary(self, papers: dict[str, Paper]) -> None:
        a, b = papers["Pointer Networks"], papers["Self-RAG"]
        budget = count_tokens(f"[1] {a.title}\n{a.abstract}") + 2 + 150
        context, shown = build_context(_scored([a, b]), budget=budget)
        assert [s.paper.id for s in shown] == [a.id, b.id]
        assert count_tokens(context) <= budget
        second = context.split("\n\n")[1].split("\n", 1)[1]
        kept = split_sentences(second)
        assert kept == split_sentences(b.abstract)[: len(kept)]
        assert len(kept) < len(split_sentences(b.abstract))

    def test_empty(self) -> None:
        assert build_context([], budget=500) == ("", [])


# --- MarkerFilter ----------------------------------------------------------------------------
STREAM = "Self-RAG adds reflection [1] and [7] and [2, 9] and [a] and [see x] and [3-5] done [2]."


def _filtered(pieces: list[str], n: int) -> str:
    f = MarkerFilter(n)
    return "".join(f.feed(p) for p in pieces) + f.flush()


def _all_splits(text: str) -> list[list[str]]:
    """The text cut at every pair of character boundaries, plus one character at a time."""
    cuts: list[list[str]] = [list(text)]
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            cuts.append([text[:i], text[i:j], text[j:]])
    return cuts


class TestMarkerFilter:
    def test_every_split_gives_the_same_clean_text(self) -> None:
        expected, _, removed = parse_citations(STREAM, 3)
        assert removed == [7, 9, 4, 5]
        for pieces in _all_splits(STREAM):
            out = _filtered(pieces, 3)
            assert set(_markers(out)) <= {1, 2, 3}, pieces
            assert "[7]" not in out and "9" not in out
            assert "[1]" in out and "[2]" in out and "[3]" in out
            assert "[a]" in out and "[see x]" in out
            assert _tidy(out) == _tidy(expected)

    def test_no_invalid_marker_in_any_prefix(self) -> None:
        # What a terminal shows at any moment is the concatenation so far.
        for pieces in _all_splits(STREAM)[:200]:
            f = MarkerFilter(3)
            shown = ""
            for p in pieces:
                shown += f.feed(p)
                assert not set(_markers(shown)) - {1, 2, 3}

    def test_unclosed_bracket_flushed_at_end(self) -> None:
        assert _filtered(["text [", "12"], 3) == "text [12"

    def test_bracket_that_is_not_a_marker_passes_through_promptly(self) -> None:
        f = MarkerFilter(2)
        assert f.feed("E[") == "E"
        assert f.feed("Y") == "[Y"
        assert f.feed("|X]") == "|X]"

    def test_no_sources(self) -> None:
        assert _tidy(_filtered(list("Claim [1]."), 0)) == "Claim."

    @pytest.mark.parametrize(
        "text", ["see [[7]] here", "a [1 [7] b", "x [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    )
    def test_nested_or_long_brackets(self, text: str) -> None:
        out = _filtered(list(text), 3)
        assert not set(_markers(out)) - {1, 2, 3}, out


# --- engine: extractive answers, abstention, JSON, usage ------------------------------------
def test_extractive_self_rag(sample_qa: Any) -> None:
    deltas: list[str] = []
    a = sample_qa.ask(SELF_RAG_Q, on_delta=deltas.append)
    assert a.mode == "extractive" and a.model == "extractive"
    assert not a.abstained and a.abstain_reason is None
    assert a.text and "".join(deltas) == a.text
    titles = [c.title for c in a.citations]
    assert any(t.startswith("Self-RAG") for t in titles)
    source_ids = {s.paper_id for s in a.sources}
    shown = {s.marker: s.paper_id for s in a.sources if s.marker is not None}
    for c in a.citations:
        assert c.paper_id in source_ids
        assert shown[c.marker] == c.paper_id
    assert set(_markers(a.text)) == {c.marker for c in a.citations}
    assert a.removed_markers == []
    assert a.claims > 0 and a.supported == a.claims and a.support_ratio == 1.0
    assert all(v.markers for v in a.sentences if v.claim)
    assert a.usage.counted_by == "none" and a.usage.total_tokens == 0
    assert {"retrieve", "generate", "check", "total"} <= set(a.timings)
    assert a.settings_fingerprint == sample_qa.settings.fingerprint()


def test_off_topic_question_abstains_with_closest_papers(sample_qa: Any) -> None:
    deltas: list[str] = []
    a = sample_qa.ask("What is the best recipe for sourdough bread?", on_delta=deltas.append)
    assert a.abstained
    assert a.text == ABSTAIN_PHRASE and deltas == [ABSTAIN_PHRASE]
    assert a.abstain_reason and "weak retrieval" in a.abstain_reason
    assert a.citations == [] and a.sentences == []
    assert len(a.sources) == sample_qa.settings.top_k
    assert all(s.title and s.paper_id for s in a.sources)
    assert all(
        s.dense is not None and s.dense < sample_qa.settings.abstain_threshold for s in a.sources
    )


def test_extractive_abstains_when_no_sentence_is_close(sample_settings: Any) -> None:
    """Past every earlier gate, the extractive answerer still declines when no sentence of
    the retrieved abstracts reaches abstain_sentence_threshold."""
    strict = sample_settings.model_copy(update={"abstain_sentence_threshold": 0.99})
    with PaperQA(strict) as qa:
        a = qa.ask(SELF_RAG_Q)
        assert a.abstained and a.text == ABSTAIN_PHRASE
        assert a.abstain_reason and "no sentence" in a.abstain_reason
        assert a.citations == [] and a.sources  # the closest papers are still listed
    # The same gate never fires on an answerable, paraphrased question by default.
    with PaperQA(sample_settings) as qa:
        assert not qa.ask(SELF_RAG_Q).abstained


@pytest.mark.parametrize(
    ("question", "why"),
    [
        # Off the collection: a technical term no abstract has ever used.
        (
            "What method is proposed for speaker diarization in multi-party meeting recordings?",
            "never mention diarization",
        ),
        # On topic (the paper is there), but the abstract gives no such number.
        (
            "How many GPU hours were needed to train the 7B model that predicts sentence "
            "embeddings instead of tokens?",
            "no retrieved abstract states the gpu hours",
        ),
        (
            "What BLEU score does the new fine-tuning variant derived by re-framing adapters "
            "and prefix tuning as hidden-state modifications obtain on WMT English-Romanian?",
            "bleu",
        ),
    ],
)
def test_abstains_when_the_abstracts_do_not_hold_the_ask(
    sample_qa: Any, question: str, why: str
) -> None:
    a = sample_qa.ask(question)
    assert a.abstained and a.text == ABSTAIN_PHRASE, a.text
    assert a.abstain_reason and why in a.abstain_reason, a.abstain_reason


def test_which_paper_answer_leads_with_the_paper_search_ranks_first(sample_qa: Any) -> None:
    """The issue's example: search ranks 'When to Retrieve' first; the answer names and cites
    it, and no unrelated paper pads the answer."""
    q = "Which paper teaches a model when to retrieve?"
    top = sample_qa.search(q, k=1)[0].paper
    a = sample_qa.ask(q)
    assert not a.abstained
    assert a.text.startswith(top.title)
    assert a.cited_ids() == [top.id]
    assert a.supported == a.claims


def test_extractive_quotes_no_off_topic_paper(sample_qa: Any) -> None:
    a = sample_qa.ask("Which paper proposes reflection tokens?")
    assert [c.title.split(":")[0] for c in a.citations] == ["Self-RAG"]
    assert "reflection tokens" in a.text


def test_a_sentence_leaning_on_the_previous_one_never_opens_the_answer(sample_qa: Any) -> None:
    from rag_papers.answering.extractive import leans_on_previous

    a = sample_qa.ask(SELF_RAG_Q)
    first = a.sentences[0].text
    assert not leans_on_previous(first), first
    assert "such issues" not in a.text or "RAG" in a.text.split("such issues")[0]


def test_an_off_topic_sentence_is_not_counted_as_supported(sample_qa: Any) -> None:
    """A verbatim quote is in its source; it still must bear on the question."""
    from rag_papers.answering.support import check_support

    embedder = sample_qa.pipeline().index.embedder
    source = "Self-RAG trains an LM to retrieve on demand and to critique its own output."
    off = "We release code and data on a public website for everyone to use freely."
    qvec = embedder.embed_query(SELF_RAG_Q)
    verdicts = check_support(
        [(f"{source} [1]", [1]), (f"{off} [1]", [1])],
        {1: f"{source} {off}"},
        threshold=sample_qa.settings.support_threshold,
        embedder=embedder,
        question_vector=qvec,
        relevance_threshold=sample_qa.settings.relevance_threshold,
    )
    assert verdicts[0].supported
    assert not verdicts[1].supported and "does not bear on the question" in verdicts[1].reason


def test_answer_json_round_trip(sample_qa: Any) -> None:
    a = sample_qa.ask(SELF_RAG_Q)
    again = Answer.model_validate_json(a.model_dump_json())
    assert again == a
    assert again.cited_ids() == a.cited_ids() and again.support_ratio == a.support_ratio


def _usage_engine(tmp_path: Any) -> PaperQA:
    prices = {"priced-model": (2.0, 8.0)}  # USD per million prompt / completion tokens
    return PaperQA(load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path, prices=prices))


MESSAGES = [
    {"role": "system", "content": "You answer questions about papers."},
    {"role": "user", "content": "Sources:\n[1] Self-RAG\n\nQuestion: what?"},
]


def test_usage_from_api_counts(tmp_path: Any) -> None:
    qa = _usage_engine(tmp_path)
    completion = Completion(text="ignored", prompt_tokens=1200, completion_tokens=300)
    u = count_usage(qa.settings, "priced-model", MESSAGES, completion)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1200, 300, 1500)
    assert u.cost_usd == pytest.approx((1200 * 2.0 + 300 * 8.0) / 1_000_000)
    assert u.counted_by == "api"


def test_usage_counted_with_tiktoken_when_api_is_silent(tmp_path: Any) -> None:
    qa = _usage_engine(tmp_path)
    completion = Completion(text="Self-RAG adds reflection tokens [1].")
    u = count_usage(qa.settings, "priced-model", MESSAGES, completion)
    expected_prompt = sum(count_tokens(m["content"]) + 4 for m in MESSAGES)
    expected_out = count_tokens(completion.text)
    assert u.counted_by == "tiktoken"
    assert (u.prompt_tokens, u.completion_tokens) == (expected_prompt, expected_out)
    assert u.total_tokens == expected_prompt + expected_out
    assert u.cost_usd == pytest.approx(
        (expected_prompt * 2.0 + expected_out * 8.0) / 1_000_000, abs=1e-6
    )


def test_usage_unknown_model_is_free(tmp_path: Any) -> None:
    u = count_usage(
        _usage_engine(tmp_path).settings,
        "smollm2",
        MESSAGES,
        Completion(text="x", prompt_tokens=10, completion_tokens=5),
    )
    assert u.cost_usd == 0.0 and u.total_tokens == 15
