"""`ask --answer-style` and `ask --quotes` against a scripted OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import CannedServer, Reply
from test_cli import SELF_RAG_Q, run_cli

from rag_papers import Answer, PaperQA, Settings, load_settings


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


def _env(server: CannedServer) -> dict[str, str]:
    return {
        "RAG_PAPERS_OPENAI_BASE_URL": server.url,
        "RAG_PAPERS_LLM": "openai:canned",
        "RAG_PAPERS_TOP_K": "3",
        "RAG_PAPERS_LLM_MAX_RETRIES": "0",
    }


def _first_shown(settings: Settings, about: str = "") -> tuple[str, str, str]:
    """The first paper the question retrieves: id, its first abstract sentence that mentions
    ``about`` (a claim must bear on the question to be shown), abstract."""
    with PaperQA(load_settings(index_dir=settings.index_dir, data_dir=settings.data_dir)) as qa:
        paper = qa.search(SELF_RAG_Q, k=3)[0].paper
    sentences = paper.abstract.split(". ")
    return paper.id, next((s for s in sentences if about in s), sentences[0]), paper.abstract


def _grounded(*claims: tuple[str, list[tuple[int, str]]]) -> str:
    return json.dumps(
        {
            "answerable": True,
            "claims": [
                {"quotes": [{"source": s, "quote": q} for s, q in quotes], "text": text}
                for text, quotes in claims
            ],
        }
    )


def _ask(settings: Settings, server: CannedServer, *args: str) -> Any:
    idx: Path = settings.resolved_index_dir
    return run_cli("--index-dir", idx, "ask", SELF_RAG_Q, "--no-stream", *args, env=_env(server))


def test_quotes_list_each_claims_verified_spans_and_the_dropped_claims(
    sample_settings: Settings, canned: CannedServer
) -> None:
    paper_id, sentence, abstract = _first_shown(sample_settings, about="Self-RAG")
    reply = _grounded(
        (sentence, [(1, sentence)]),  # a claim that says what its quote says
        ("It trains with 99 reflection tokens.", [(2, "no such sentence anywhere here")]),
    )
    canned.script = [Reply(text=reply)]
    proc = _ask(sample_settings, canned, "--answer-style", "grounded", "--quotes")
    assert proc.returncode == 0, proc.stderr
    assert canned.requests[-1]["response_format"]["type"] == "json_schema"
    start = abstract.index(sentence)
    out = proc.stdout
    assert f"{sentence.rstrip('.')} [1]." in out
    quotes = out.split("Quotes:", 1)[1]
    assert f'[1] "{sentence}" (abstract, chars {start}–{start + len(sentence)})' in quotes
    assert (
        'not shown: quote not found in source [2]: "It trains with 99 reflection tokens."' in quotes
    )
    assert "stopped at max_tokens" not in out

    # --json carries the same spans: the Answer model, quotes and dropped claims included.
    canned.script = [Reply(text=reply)]
    as_json = _ask(sample_settings, canned, "--answer-style", "grounded", "--json")
    answer = Answer.model_validate_json(as_json.stdout)
    (quote,) = answer.sentences[0].quotes
    assert (quote.paper_id, quote.start, quote.end) == (paper_id, start, start + len(sentence))
    assert [d.reason for d in answer.dropped_claims] == ["quote not found in source [2]"]


def test_answer_style_option_reaches_the_settings(
    sample_settings: Settings, canned: CannedServer
) -> None:
    canned.script = [Reply(text="Self-RAG adds reflection tokens [1].")]
    proc = _ask(sample_settings, canned, "--answer-style", "free", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "response_format" not in canned.requests[-1]  # free prose: no schema sent
    assert not Answer.model_validate_json(proc.stdout).grounded
    bad = _ask(sample_settings, canned, "--answer-style", "poetic")
    assert bad.returncode == 2 and "poetic" in bad.stderr


def test_a_cut_off_answer_is_flagged(sample_settings: Settings, canned: CannedServer) -> None:
    _, sentence, _ = _first_shown(sample_settings, about="Self-RAG")
    reply = _grounded((sentence, [(1, sentence)]))
    canned.script = [Reply(text=reply, finish_reason="length")]
    proc = _ask(sample_settings, canned, "--answer-style", "grounded", "--quotes")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the model stopped at max_tokens: the answer may be cut off" in proc.stdout


def test_extractive_quotes_are_the_answer_sentences(sample_settings: Settings) -> None:
    idx = sample_settings.resolved_index_dir
    proc = run_cli("--index-dir", idx, "ask", SELF_RAG_Q, "--no-stream", "--quotes")
    assert proc.returncode == 0, proc.stderr
    quotes = proc.stdout.split("Quotes:", 1)[1].splitlines()
    assert quotes[1].startswith("  [1] ")
    assert quotes[1].endswith("(the sentence is quoted from the abstract)")
