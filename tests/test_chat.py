"""Chat: the condense heuristic, session citation numbers, ChatSession over the sample index,
and the REPL driven through a real pseudo-terminal (pexpect)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import pexpect
import pytest

from rag_papers import LLM_SPEC_HELP
from rag_papers.answering.contract import Answer, Citation, SentenceVerdict, Source
from rag_papers.chat.repl import SLOW_STREAM_ENV
from rag_papers.core.settings import Settings, load_settings
from rag_papers.engine.condense import condense_heuristic
from rag_papers.engine.conversation import ChatSession, Turn, _RenumberingFilter, renumber_answer
from rag_papers.engine.qa import PaperQA
from rag_papers.engine.streaming import AnswerCancelled, CancelToken

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
FOLLOW_UP = "How does it decide when to retrieve?"
SELF_RAG_TITLE = "Self-RAG: Learning to Retrieve, Generate, and Critique through Self-Reflection"
PARAMETRIC_Q = "What is parametric retrieval augmented generation?"
OFF_TOPIC_Q = "What is the boiling point of tungsten in Kelvin?"
PREVIOUS = [(SELF_RAG_Q, "Self-RAG trains an LM to retrieve on demand [1].")]


# --- condense_heuristic ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "follow_up",
    [
        FOLLOW_UP,  # pronoun
        "What are its limitations?",  # possessive
        "How does that work?",  # "that" as a pronoun
        "What datasets did the authors use?",  # "the authors"
        "What about the model size?",  # opener + "the model"
        "And on math benchmarks?",  # opener
        "Limitations?",  # short
        "Any numbers?",  # short, no key term
    ],
)
def test_condense_heuristic_adds_the_previous_subject(follow_up: str) -> None:
    rewritten = condense_heuristic(follow_up, PREVIOUS)
    assert rewritten.startswith(follow_up)
    assert rewritten.endswith("(Self-RAG, retrieval-augmented generation)")


@pytest.mark.parametrize(
    "question",
    [
        "Which papers show that retrieval helps multi-step reasoning?",  # "that" is a conjunction
        "What is RAPTOR?",  # short but names its own subject
        "Which models use mixture of experts for efficient inference?",
    ],
)
def test_condense_heuristic_leaves_standalone_questions(question: str) -> None:
    assert condense_heuristic(question, PREVIOUS) == question


def test_condense_heuristic_without_history_or_terms() -> None:
    assert condense_heuristic(FOLLOW_UP, []) == FOLLOW_UP
    # Nothing to carry over: the previous question had no key terms.
    assert condense_heuristic(FOLLOW_UP, [("What is it?", "…")]) == FOLLOW_UP


def test_condense_heuristic_carries_the_subject_along_a_chain() -> None:
    second = condense_heuristic(FOLLOW_UP, PREVIOUS)
    third = condense_heuristic("What are its limitations?", [*PREVIOUS, (second, "…")])
    assert "Self-RAG" in third
    # Names come first, and terms already in the follow-up are not repeated.
    assert condense_heuristic("Is Self-RAG open source? How is it trained?", PREVIOUS) == (
        "Is Self-RAG open source? How is it trained? (retrieval-augmented generation)"
    )


# --- session numbers ---------------------------------------------------------------------------
def _answer(text: str, cited: dict[int, str], shown: list[str]) -> Answer:
    """A canned engine Answer: ``cited`` marker -> paper id; ``shown`` in marker order."""
    return Answer(
        question="q",
        text=text,
        mode="extractive",
        model="extractive",
        citations=[Citation(marker=m, paper_id=p, title=p.upper()) for m, p in cited.items()],
        sources=[
            Source(paper_id=p, title=p.upper(), rank=i, score=1.0 / i, marker=i)
            for i, p in enumerate(shown, start=1)
        ],
        sentences=[SentenceVerdict(text=text, markers=sorted(cited), supported=True)],
    )


def test_renumbering_keeps_one_number_per_paper() -> None:
    numbers: dict[str, int] = {}
    # Turn 1: paper "b" is marker [1], paper "a" marker [2]; "b" appears first.
    first = renumber_answer(
        _answer("B did x [1]. A did y [2].", {1: "b", 2: "a"}, ["b", "a"]), numbers
    )
    assert numbers == {"b": 1, "a": 2}
    assert first.text == "B did x [1]. A did y [2]."
    # Turn 2: "a" is now the answer's [1] and a new paper "c" its [2]: "a" keeps 2, "c" gets 3.
    raw = _answer("A again [1]. C [2]. Both [1][2].", {1: "a", 2: "c"}, ["a", "c", "d"])
    second = renumber_answer(raw, numbers)
    assert second.text == "A again [2]. C [3]. Both [2][3]."
    assert [(c.marker, c.paper_id) for c in second.citations] == [(2, "a"), (3, "c")]
    assert second.sentences[0].markers == [2, 3]
    assert second.sentences[0].text == second.text
    # Cited sources carry their session number; the shown-but-uncited one none.
    assert {s.paper_id: s.marker for s in second.sources} == {"a": 2, "c": 3, "d": None}
    # The engine's answer is untouched.
    assert raw.text == "A again [1]. C [2]. Both [1][2]."
    assert [s.marker for s in raw.sources] == [1, 2, 3]


def test_renumbering_swaps_in_one_pass_and_drops_unmapped_markers() -> None:
    numbers = {"q": 1, "p": 2}
    out = renumber_answer(
        _answer("x [1][2] y [1, 2] z [9].", {1: "p", 2: "q"}, ["p", "q"]), numbers
    )
    # [1]->2 and [2]->1 at once (no chained 1->2->1), ranges expanded, [9] has no paper.
    assert out.text == "x [2][1] y [2][1] z."
    assert numbers == {"q": 1, "p": 2}


def test_renumbering_filter_handles_markers_split_across_pieces() -> None:
    numbers = {"known": 1}
    by_marker = {1: "new", 2: "known"}

    def to_session(marker: int) -> int | None:
        pid = by_marker.get(marker)
        return None if pid is None else numbers.setdefault(pid, len(numbers) + 1)

    flt = _RenumberingFilter(to_session)
    pieces = ["Claim [", "1", "]. Other [2", "]", " and [x] stays, [1", ", 2] end [", "2"]
    out = "".join(flt.feed(p) for p in pieces) + flt.flush()
    assert out == "Claim [2]. Other [1] and [x] stays, [2][1] end [2"
    assert numbers == {"known": 1, "new": 2}


def test_turn_reports_streamed_markers_that_differ() -> None:
    a = _answer("A [1].", {1: "a"}, ["a"])
    assert Turn("q", "q", a, a, streamed="A [1].").stream_exact
    assert not Turn("q", "q", a, a, streamed="A [2].").stream_exact
    assert Turn("q", "q", a, a).stream_exact  # not streamed


# --- ChatSession over the sample index ---------------------------------------------------------
def test_chat_session_follow_ups_and_session_numbers(sample_qa: PaperQA) -> None:
    chat = ChatSession(sample_qa, k=4)  # fewer abstracts to quote: quicker
    streamed: list[str] = []
    first = chat.ask(SELF_RAG_Q, on_delta=streamed.append)
    assert first.citations[0].title == SELF_RAG_TITLE and first.citations[0].marker == 1
    assert "".join(streamed) == first.text  # streamed with session numbers already
    assert chat.history[0].standalone_question == SELF_RAG_Q

    second = chat.ask(FOLLOW_UP, on_delta=streamed.append)
    turn = chat.history[1]
    assert turn.standalone_question != FOLLOW_UP and "Self-RAG" in turn.standalone_question
    assert second.standalone_question == turn.standalone_question
    assert not second.abstained
    assert turn.stream_exact
    turn_paper = first.citations[0].paper_id
    assert {c.paper_id: c.marker for c in second.citations}[turn_paper] == 1  # same number

    chat.ask(PARAMETRIC_Q)  # not streamed: numbers assigned the same way
    numbers = {s.paper_id: s.number for s in chat.sources}
    renumbered = 0
    for t in chat.history:
        for raw, shown in zip(t.original.citations, t.answer.citations, strict=True):
            assert shown.paper_id in numbers and shown.marker == numbers[shown.paper_id]
            renumbered += raw.marker != numbers[raw.paper_id]
        assert t.answer.supported == t.original.supported  # renumbering changes no verdict
    assert renumbered > 0, "some paper was cited under another per-answer number"
    assert [s.number for s in chat.sources] == list(range(1, len(numbers) + 1))
    assert chat.sources[0].turns[:2] == [1, 2]  # Self-RAG, cited in turns 1 and 2

    md = chat.to_markdown()
    assert f"## 1. {SELF_RAG_Q}" in md
    assert f"> searching for: {turn.standalone_question}" in md
    assert "## References" in md
    refs = md.split("## References", 1)[1]
    for s in chat.sources:
        assert f"[{s.number}] {s.title}" in refs

    chat.reset()
    assert chat.history == [] and chat.sources == [] and chat.number_of(turn_paper) is None


def test_chat_session_renumbers_a_streamed_llm_answer(sample_settings: Settings) -> None:
    """The LLM path over real HTTP (the canned OpenAI-compatible server of test_llm): markers
    split across SSE deltas are renumbered on the fly, and condensing asks the model."""
    from servers import CannedServer, Reply

    with CannedServer() as server:
        qa = PaperQA(
            load_settings(
                index_dir=sample_settings.index_dir,
                data_dir=sample_settings.data_dir,
                llm="openai:canned-model",
                answer_style="free",
                openai_base_url=server.url,
                top_k=3,
                llm_max_retries=0,
                llm_timeout=20.0,
            )
        )
        ranked = [r.paper.id for r in qa.search(SELF_RAG_Q)]
        # The model cites its [2] first: that paper becomes session [1], its [1] session [2].
        server.script = [Reply(text="Parametric RAG differs [2]. Self-RAG reflects [1][2].")]
        chat = ChatSession(qa)
        pieces: list[str] = []
        first = chat.ask(SELF_RAG_Q, on_delta=pieces.append)
        assert len(pieces) > 5  # it really streamed, 3 characters per delta
        assert (
            "".join(pieces) == first.text == "Parametric RAG differs [1]. Self-RAG reflects [2][1]."
        )
        assert [(c.marker, c.paper_id) for c in first.citations] == [(1, ranked[1]), (2, ranked[0])]
        assert (
            chat.history[0].original.text == "Parametric RAG differs [2]. Self-RAG reflects [1][2]."
        )

        standalone = "How does Self-RAG decide when to retrieve?"
        server.script = [Reply(text=standalone), Reply(text="It predicts reflection tokens [1].")]
        pieces.clear()
        second = chat.ask(FOLLOW_UP, on_delta=pieces.append)
        condense_prompt = server.requests[-2]["messages"][-1]["content"]
        assert SELF_RAG_Q in condense_prompt and FOLLOW_UP in condense_prompt
        assert chat.history[1].standalone_question == standalone
        top = qa.search(standalone)[0]
        assert top.paper.title == SELF_RAG_TITLE and top.paper.id == ranked[0]
        # Self-RAG is the model's [1] again, but keeps session number 2 from turn 1.
        assert chat.number_of(top.paper.id) == 2
        assert [(c.marker, c.paper_id) for c in second.citations] == [(2, top.paper.id)]
        assert "".join(pieces) == second.text == "It predicts reflection tokens [2]."
        assert chat.history[1].stream_exact
        assert [s.number for s in chat.sources] == [1, 2]
        qa.close()


def test_chat_session_cancelled_answers_are_not_recorded(sample_qa: PaperQA) -> None:
    chat = ChatSession(sample_qa, k=3)
    token = CancelToken()
    assert token.cancel()
    with pytest.raises(AnswerCancelled):
        chat.ask(SELF_RAG_Q, cancel=token)

    token = CancelToken()
    pieces: list[str] = []

    def stop_after_first(text: str) -> None:
        pieces.append(text)
        token.cancel()

    with pytest.raises(AnswerCancelled):  # cancelled while written: raised before recording
        chat.ask(SELF_RAG_Q, on_delta=stop_after_first, cancel=token)
    assert pieces and chat.history == [] and chat.sources == []

    token = CancelToken()
    chat.ask(SELF_RAG_Q, cancel=token)
    assert not token.cancel()  # already recorded: too late to cancel
    assert len(chat.history) == 1


# --- ChatSession.stream / astream: the one bridge, with cancellation ----------------------------
class _GatedQA:
    """A stand-in engine: writes "A did x [2]." (its [2] is paper "a"), waits for ``go``,
    then writes the rest, so a test can stop the stream while its answer is unrecorded."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.log: list[str] = []

    def condense(self, question: str, history: Any, llm: str | None = None) -> str:
        return f"{question} (standalone)" if history else question

    def ask(
        self, question: str, *, on_delta: Any = None, on_sources: Any = None, **_: Any
    ) -> Answer:
        self.log.append(f"start {question}")
        try:
            if on_sources is not None:
                on_sources({2: "a"})
            if on_delta is not None:
                on_delta("A did x [2].")
                assert self.go.wait(10), "the test never released the answer"
                on_delta(" Again [2].")
            return _answer("A did x [2]. Again [2].", {2: "a"}, ["b", "a"])
        finally:
            self.log.append(f"end {question}")


def _settle(chat: ChatSession) -> None:
    """Wait until a stopped answer's worker has ended."""
    deadline = time.monotonic() + 10
    while chat.answering and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not chat.answering


def test_chat_session_stream_yields_session_numbered_pieces_then_the_answer() -> None:
    qa = _GatedQA()
    qa.go.set()
    chat = ChatSession(cast(PaperQA, qa))
    standalone: list[str] = []
    *pieces, answer = chat.stream("q1", on_standalone=standalone.append)
    assert pieces == ["A did x [1].", " Again [1]."]  # the engine's [2] is the session's [1]
    assert isinstance(answer, Answer) and answer.text == "A did x [1]. Again [1]."
    assert chat.history[0].answer is answer and chat.history[0].stream_exact
    assert standalone == ["q1"]
    list(chat.stream("q2", on_standalone=standalone.append))
    assert standalone == ["q1", "q2 (standalone)"] and len(chat.history) == 2


def test_chat_session_stream_closed_early_records_nothing_and_the_next_waits() -> None:
    qa = _GatedQA()
    chat = ChatSession(cast(PaperQA, qa))
    stream = chat.stream("q1")
    assert next(stream) == "A did x [1]."
    stream.close()  # type: ignore[attr-defined]  # the consumer stops: generation is cancelled
    assert chat.answering  # its worker is still waiting to write its next piece
    threading.Timer(0.3, qa.go.set).start()
    *pieces, answer = chat.stream("q2")  # one answer at a time: waits for the stopped one
    assert "".join(cast(list[str], pieces)) == cast(Answer, answer).text
    assert qa.log == ["start q1", "end q1", "start q2", "end q2"]
    assert [t.question for t in chat.history] == ["q2"]  # the stopped turn was not recorded
    assert chat.history[0].standalone_question == "q2"  # condensed without the stopped turn

    token = CancelToken()  # cancelled in the worker before any text: nothing is yielded
    with pytest.raises(AnswerCancelled):
        list(chat.stream("q3", cancel=token, on_standalone=lambda _: token.cancel()))
    _settle(chat)
    assert len(chat.history) == 1


def test_chat_session_astream_records_or_cancels() -> None:
    qa = _GatedQA()
    chat = ChatSession(cast(PaperQA, qa))

    async def first_piece_then_stop() -> str:
        async with aclosing(chat.astream("q1")) as stream:  # type: ignore[type-var]
            async for item in stream:
                return cast(str, item)
        raise AssertionError("nothing streamed")

    assert asyncio.run(first_piece_then_stop()) == "A did x [1]."
    qa.go.set()
    _settle(chat)
    assert chat.history == []

    async def everything() -> list[str | Answer]:
        return [item async for item in chat.astream("q2")]

    *pieces, answer = asyncio.run(everything())
    assert (
        "".join(cast(list[str], pieces)) == cast(Answer, answer).text == chat.history[0].answer.text
    )


def test_chat_session_stream_over_the_sample_index(sample_qa: PaperQA) -> None:
    chat = ChatSession(sample_qa, k=3)
    *pieces, first = chat.stream(SELF_RAG_Q)
    assert isinstance(first, Answer) and "".join(cast(list[str], pieces)) == first.text
    searched: list[str] = []
    *pieces, second = chat.stream(FOLLOW_UP, on_standalone=searched.append)
    assert isinstance(second, Answer) and "".join(cast(list[str], pieces)) == second.text
    assert "Self-RAG" in searched[0] and second.standalone_question == searched[0]
    assert [t.question for t in chat.history] == [SELF_RAG_Q, FOLLOW_UP]
    assert all(t.stream_exact for t in chat.history)


# --- the REPL in a real pty ----------------------------------------------------------------------
# "[1]", then spaces or styling escapes (NO_COLOR keeps bold), then the title.
CITED_SELF_RAG = r"\[1\](?:\x1b\[[0-9;]*m|\s)*" + re.escape(SELF_RAG_TITLE)
REPL_CODE = (
    "from rag_papers.core.settings import load_settings; from rag_papers.engine.qa import PaperQA; "
    "from rag_papers.chat.repl import run_repl; s = load_settings(); run_repl(PaperQA(s), s)"
)


def _spawn(index_dir: Path, data_dir: Path, *, term: str = "xterm", **env: str) -> pexpect.spawn:
    child_env = {k: v for k, v in os.environ.items() if k != SLOW_STREAM_ENV}
    child_env.update(
        RAG_PAPERS_INDEX_DIR=str(index_dir),
        RAG_PAPERS_DATA_DIR=str(data_dir),
        TERM=term,
        NO_COLOR="1",
        PROMPT_TOOLKIT_NO_CPR="1",  # no cursor-position queries to answer
        **env,
    )
    child = pexpect.spawn(
        sys.executable,
        ["-c", REPL_CODE],
        env=child_env,
        dimensions=(24, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=90,  # a hang guard, not a speed check
        # A suite started in the background (`make test &`) runs with SIGINT ignored, which
        # the child would inherit: Ctrl-C must reach it as a user's would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    child.expect("papers>")
    return child


def _finish(child: pexpect.spawn, keys: str = "\x04") -> int:
    """Quit (Ctrl-D by default; call it once a fresh prompt is up) and return the status."""
    child.send(keys)
    child.expect("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


@pytest.fixture
def index_copy(_sample_index_master: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "repl-index"
    shutil.copytree(_sample_index_master, dest)
    return dest


def test_repl_conversation(index_copy: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = _spawn(index_copy, data)
    child.sendline(SELF_RAG_Q)
    child.expect("Sources:")
    child.expect(CITED_SELF_RAG)
    child.expect("claim sentences")
    child.expect("papers>")

    child.sendline(FOLLOW_UP)
    child.expect("↳ searching for: ")
    child.expect(r"How does it decide when to retrieve\? \((.*?)\)")
    assert "Self-RAG" in child.match.group(1)
    child.expect("claim sentences")
    child.expect("papers>")

    child.sendline("/sources")
    child.expect(CITED_SELF_RAG)
    child.expect("cited in turn 1, 2")
    child.expect("papers>")

    child.sendline("/paper 1")
    child.expect("Despite their remarkable capabilities")  # the abstract, found by number
    child.expect("papers>")

    child.sendline("/k 3")
    child.expect("k = 3: 3 papers retrieved per question")
    child.sendline("/mode bm25")
    child.expect("mode = bm25")
    child.sendline("/filter year=2023:2025 author='Akari Asai'")
    child.expect("Filters: year_min=2023 year_max=2025 author=Akari Asai")
    child.sendline("/filter clear")
    child.expect("Filters cleared")
    child.sendline("/frobnicate")
    child.expect("Unknown command /frobnicate")
    child.expect("/help")
    child.sendline("/llm bogus")  # the one llm spec grammar names what is expected
    child.expect_exact(f"error: llm 'bogus': expected {LLM_SPEC_HELP}")
    child.expect("papers>")  # a fresh prompt: keys now go to prompt_toolkit, not the tty

    child.send("a half-typed question")
    child.sendintr()  # Ctrl-C at the prompt clears the line, the session goes on
    child.sendline("/help")
    child.expect("Esc then Enter")

    transcript = tmp_path / "out" / "chat.md"
    child.sendline(f"/save {transcript}")
    child.expect("Saved the transcript")
    child.expect("papers>")
    assert _finish(child) == 0

    md = transcript.read_text()
    assert f"## 1. {SELF_RAG_Q}" in md and f"## 2. {FOLLOW_UP}" in md
    assert "> searching for: How does it decide when to retrieve? (" in md
    assert f"[1] {SELF_RAG_TITLE}" in md.split("## References", 1)[1]

    history = (data / "chat_history").read_text()
    for entry in (SELF_RAG_Q, FOLLOW_UP, "/sources", "/k 3", "/mode bm25", "/save"):
        assert f"+{entry}" in history
    assert "half-typed" not in history


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_repl_errors_multiline_input_and_history_across_sessions(
    index_copy: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    child = _spawn(
        index_copy,
        data,
        RAG_PAPERS_OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1",
        RAG_PAPERS_LLM_MAX_RETRIES="0",
    )
    # An LLM that cannot be reached: the error is printed and the session continues.
    child.sendline("/llm openai:nothing-listens")
    child.expect("llm = openai:nothing-listens")
    child.sendline(SELF_RAG_Q)
    child.expect("error: cannot reach the LLM server at http://127.0.0.1")
    child.sendline("/llm extractive")
    child.expect("llm = extractive")
    child.expect("papers>")
    # A trailing backslash continues the question on a second line; Esc+Enter adds one too.
    child.send("What is the boiling point \\\r")
    child.send("of tungsten\x1b\r")
    child.send("in Kelvin?\r")
    child.expect_exact("I cannot answer this from the indexed papers.")
    child.sendline("/k 4")
    child.expect("k = 4")
    child.expect("papers>")
    assert _finish(child) == 0
    history = (data / "chat_history").read_text()
    assert "+What is the boiling point \n+of tungsten\n+in Kelvin?" in history

    # A new session recalls the last entry with Up.
    child = _spawn(index_copy, data)
    child.send("\x1b[A")
    child.send("\r")
    child.expect("k = 4: 4 papers")
    child.expect("papers>")
    assert _finish(child) == 0


def test_repl_ctrl_c_stops_an_answer_not_the_session(index_copy: Path, tmp_path: Path) -> None:
    # The test hook streams one word per 0.3 s, so Ctrl-C lands mid-answer.
    child = _spawn(index_copy, tmp_path / "data", term="dumb", **{SLOW_STREAM_ENV: "0.3"})
    child.sendline(SELF_RAG_Q)
    child.expect_exact(SELF_RAG_Q)  # the dumb terminal echoes the line as typed
    child.expect(r"\r\n\s*[A-Za-z]+")  # the first word of the answer is written,
    child.expect(r"\s[A-Za-z]+")  # then the next (the stream is surely running)...
    child.sendintr()  # ...and Ctrl-C stops it
    child.expect_exact("[answer stopped]")
    assert "Sources:" not in child.before
    child.expect("papers>")
    child.sendline("/sources")
    child.expect("No papers cited yet")  # the stopped answer was not recorded
    child.sendline(OFF_TOPIC_Q)  # another question is answered (abstains: a short answer)
    child.expect_exact("I cannot answer this from the indexed papers.")
    child.expect("Closest papers:")
    child.expect("papers>")
    # A dumb terminal prints the prompt before prompt_toolkit takes the keyboard, so a
    # Ctrl-D sent now could reach the tty's line discipline instead: quit by command.
    assert _finish(child, "/quit\r") == 0
