"""Chat: follow-up questions over the paper index, one citation numbering per session.

Citation numbers
    Each Answer numbers its own sources [1..n]. A chat keeps one number per paper for the
    whole session, assigned in order of first citation. :func:`renumber_answer` maps every
    marker through the answer's citations (marker -> paper id -> session number) in one
    regex pass (so "[1][2]" -> "[2][1]" never chains) and returns a *copy* of the Answer:
    text, citations and sentence verdicts carry session numbers; in the copy's ``sources`` a
    cited paper's ``marker`` is its session number and a shown-but-uncited paper's is None
    (its per-answer number would clash with the session's). The engine's own Answer is kept
    untouched on the Turn (``Turn.original``).

Streaming
    Markers are renumbered on the fly, so the streamed text already shows session numbers.
    The engine reports marker -> paper (``on_sources``) before it writes any text, and a
    MarkerFilter subclass rewrites each marker as it closes, assigning provisional numbers
    that are committed when the answer is recorded. ``Turn.stream_exact`` still checks the
    streamed markers against the final citations, and the REPL reprints the renumbered text
    should they ever differ. :meth:`ChatSession.stream` / :meth:`ChatSession.astream` run
    :meth:`ChatSession.ask` through the one bridge (rag_papers.engine.streaming): a stream
    that is closed early or whose CancelToken is cancelled stops at its next piece of text,
    and its turn is not recorded (``CancelToken.commit`` decides, under one lock).

One answer at a time
    A session is one conversation, so its answers are serialised: an ask waits for the one
    before it (a stopped answer may still be ending in its thread) and then sees its turn.

The terminal REPL over a ChatSession is rag_papers.chat.repl.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rag_papers.answering.citations import MarkerFilter, expand_markers, markers_in
from rag_papers.answering.contract import CITATION_PATTERN, Answer, answer_label
from rag_papers.core.papers import format_reference
from rag_papers.engine.streaming import AnswerCancelled, CancelToken, aiter_stream, iter_stream

if TYPE_CHECKING:
    from rag_papers.core.specs import Mode
    from rag_papers.engine.qa import PaperQA
    from rag_papers.retrieval.retriever import Filters

__all__ = [
    "ChatSession",
    "SessionSource",
    "Turn",
    "renumber_answer",
]


# --- session citation numbers ---------------------------------------------------------------
_SPACED_MARKER = re.compile(r"([ \t]*)" + CITATION_PATTERN.pattern)


def _renumber_markers(text: str, to_session: Callable[[int], int | None]) -> str:
    """Map every marker in one pass; a marker without a paper is dropped (with the space
    before it), never guessed."""

    def repl(match: re.Match[str]) -> str:
        numbers = (to_session(n) for n in expand_markers(match.group(2)))
        out = "".join(f"[{n}]" for n in dict.fromkeys(n for n in numbers if n is not None))
        return match.group(1) + out if out else ""

    return _SPACED_MARKER.sub(repl, text)


def _numberer(
    marker_paper: Callable[[int], str | None], numbers: dict[str, int]
) -> Callable[[int], int | None]:
    """marker -> paper id -> session number, giving a new paper the next number."""

    def to_session(marker: int) -> int | None:
        paper_id = marker_paper(marker)
        if paper_id is None:
            return None
        return numbers.setdefault(paper_id, len(numbers) + 1)

    return to_session


def renumber_answer(answer: Answer, numbers: dict[str, int]) -> Answer:
    """A copy of ``answer`` with its markers mapped to session numbers.

    ``numbers`` (paper id -> session number) is updated in place: papers cited here for the
    first time get the next numbers, in order of first appearance in the text.
    """
    by_marker = {c.marker: c.paper_id for c in answer.citations}
    to_session = _numberer(by_marker.get, numbers)
    text = _renumber_markers(answer.text, to_session)
    for marker in sorted(by_marker):  # cited but (oddly) absent from the text: still numbered
        to_session(marker)
    out = answer.model_copy(deep=True)
    out.text = text
    out.citations = sorted(
        (c.model_copy(update={"marker": numbers[c.paper_id]}) for c in answer.citations),
        key=lambda c: c.marker,
    )
    for verdict in out.sentences:
        verdict.text = _renumber_markers(verdict.text, to_session)
        verdict.markers = [numbers[by_marker[m]] for m in verdict.markers if m in by_marker]
    cited = {c.paper_id for c in answer.citations}
    for source in out.sources:
        source.marker = numbers[source.paper_id] if source.paper_id in cited else None
    return out


class _RenumberingFilter(MarkerFilter):
    """engine.MarkerFilter whose closed markers are rewritten to session numbers."""

    def __init__(self, to_session: Callable[[int], int | None]) -> None:
        super().__init__(n_shown=0)
        self._to_session = to_session

    def _resolve(self) -> str:
        text, self._buf = self._buf, ""
        return _renumber_markers(text, self._to_session)


# --- the session ------------------------------------------------------------------------------
@dataclass(slots=True)
class Turn:
    question: str
    standalone_question: str
    answer: Answer  # session-numbered copy
    original: Answer  # the engine's answer, per-answer markers
    streamed: str | None = None  # what on_delta received, when streaming

    @property
    def stream_exact(self) -> bool:
        """The streamed text carried the same markers as the final, renumbered answer."""
        if self.streamed is None:
            return True
        return markers_in(self.streamed) == markers_in(self.answer.text)


@dataclass(slots=True)
class SessionSource:
    number: int
    paper_id: str
    title: str
    year: int | None = None
    url: str | None = None
    authors: list[str] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)  # 1-based turns that cite it


class ChatSession:
    """A conversation over one PaperQA: condenses follow-ups, keeps session citation numbers.

    ``llm``, ``k``, ``mode`` and ``filters`` are the defaults for each ask; keyword arguments
    of :meth:`ask` override them.
    """

    def __init__(
        self,
        qa: PaperQA,
        *,
        llm: str | None = None,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
    ) -> None:
        self.qa = qa
        self.llm = llm
        self.k = k
        self.mode = mode
        self.filters = filters
        self.history: list[Turn] = []
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()  # numbers and history
        self._answering = threading.Lock()  # one answer at a time (see the module doc)

    @property
    def answering(self) -> bool:
        """True while an answer is being written (a stopped one may still be ending)."""
        return self._answering.locked()

    def condense(self, question: str, *, llm: str | None = None) -> str:
        """The standalone form of ``question`` given the turns so far."""
        pairs = [(t.standalone_question, t.answer.text) for t in self.history]
        rewritten = self.qa.condense(question, pairs, llm=llm or self.llm)
        return rewritten.strip() or question

    def ask(
        self,
        question: str,
        *,
        standalone_question: str | None = None,
        on_standalone: Callable[[str], None] | None = None,
        on_delta: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Answer a follow-up; returns the session-numbered Answer and records the turn.

        ``standalone_question``: skip condensing (the caller already did it).
        ``on_standalone`` receives the standalone question before any text is written.
        ``on_delta`` receives the text as it is written, markers already in session numbers.
        ``cancel``: when cancelled, the next piece of text raises AnswerCancelled and nothing
        is recorded. Other keyword arguments (k, mode, filters, llm) go to PaperQA.ask.
        """
        with self._answering:
            opts: dict[str, Any] = {
                "llm": self.llm,
                "k": self.k,
                "mode": self.mode,
                "filters": self.filters,
                **kwargs,
            }
            if cancel is not None:
                cancel.check()  # stopped while waiting for the answer before it
            standalone = standalone_question or self.condense(question, llm=opts["llm"])
            if cancel is not None:
                cancel.check()  # stopped while condensing: do not retrieve
            if on_standalone is not None:
                on_standalone(standalone)
            sink: Callable[[str], None] | None = None
            streamed: list[str] = []
            if on_delta is not None:
                with self._lock:
                    provisional = dict(self._numbers)
                # The engine reports marker -> paper before it writes any text (on_sources).
                shown: dict[int, str] = {}
                opts["on_sources"] = shown.update
                flt = _RenumberingFilter(_numberer(shown.get, provisional))

                def sink(delta: str) -> None:
                    if cancel is not None:
                        cancel.check()
                    if text := flt.feed(delta):
                        streamed.append(text)
                        on_delta(text)

            original = self.qa.ask(question, standalone_question=standalone, on_delta=sink, **opts)
            if on_delta is not None and (rest := flt.flush()):
                streamed.append(rest)
                on_delta(rest)
            with self._lock:
                if cancel is not None and not cancel.commit():
                    raise AnswerCancelled
                answer = renumber_answer(original, self._numbers)
                self.history.append(
                    Turn(
                        question=question,
                        standalone_question=standalone,
                        answer=answer,
                        original=original,
                        streamed="".join(streamed) if on_delta is not None else None,
                    )
                )
            return answer

    def stream(
        self, question: str, *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> Iterator[str | Answer]:
        """Run :meth:`ask` in a worker thread; yield its text pieces (session numbers), then
        the session-numbered Answer. Closing the iterator early, or ``cancel.cancel()``,
        stops the answer at its next piece and the turn is not recorded. ``kwargs`` go to
        :meth:`ask` (``on_standalone`` is called in the worker, before any piece)."""
        token = cancel or CancelToken()  # ask commits the same token the bridge cancels
        return iter_stream(
            lambda write: self.ask(question, on_delta=write, cancel=token, **kwargs), cancel=token
        )

    def astream(
        self, question: str, *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> AsyncIterator[str | Answer]:
        """Async form of :meth:`stream`; a consumer that stops or is cancelled stops the
        answer, and its turn is not recorded."""
        token = cancel or CancelToken()
        return aiter_stream(
            lambda write: self.ask(question, on_delta=write, cancel=token, **kwargs), cancel=token
        )

    @property
    def sources(self) -> list[SessionSource]:
        """Every paper cited so far, by session number."""
        out: dict[str, SessionSource] = {}
        for turn_no, turn in enumerate(self.history, start=1):
            details = {s.paper_id: s for s in turn.answer.sources}
            for c in turn.answer.citations:
                entry = out.get(c.paper_id)
                if entry is None:
                    src = details.get(c.paper_id)
                    entry = out[c.paper_id] = SessionSource(
                        number=self._numbers[c.paper_id],
                        paper_id=c.paper_id,
                        title=c.title,
                        year=c.year,
                        url=c.url,
                        authors=list(src.authors) if src else [],
                    )
                if turn_no not in entry.turns:
                    entry.turns.append(turn_no)
        return sorted(out.values(), key=lambda s: s.number)

    def number_of(self, paper_id: str) -> int | None:
        return self._numbers.get(paper_id)

    def reset(self) -> None:
        """Forget the turns and the citation numbers."""
        with self._lock:
            self.history.clear()
            self._numbers.clear()

    def to_markdown(self) -> str:
        """The transcript: each question, its search form when rewritten, the answer with its
        support verdict, then one reference list in session numbers."""
        lines = ["# rag-papers chat", ""]
        lines.append(f"_Saved {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}._")
        lines.append("")
        for i, turn in enumerate(self.history, start=1):
            a = turn.answer
            lines += [f"## {i}. {turn.question.strip()}", ""]
            if turn.standalone_question.strip() != turn.question.strip():
                lines += [f"> searching for: {turn.standalone_question}", ""]
            lines += [a.text, ""]
            if a.abstained:
                lines.append(f"_Abstained: {a.abstain_reason}._")
            else:
                lines.append(f"_{_verdict_line(a)}_")
                for v in a.sentences:
                    if v.claim and not v.supported:
                        lines.append(f"- unsupported: “{v.text}” ({v.reason})")
            lines.append("")
        lines += ["## References", ""]
        sources = self.sources
        if not sources:
            lines.append("_No papers cited._")
        for s in sources:
            lines.append(f"- {_reference(s)}")
        return "\n".join(lines).rstrip() + "\n"


def _reference(s: SessionSource) -> str:
    """'[N] Title. A, B, C et al. 2024. <url> (id `x`)': the one reference form, numbered."""
    reference = format_reference(
        s.title, authors=s.authors, year=s.year, url=s.url, paper_id=s.paper_id
    )
    return f"[{s.number}] {reference}"


def _verdict_line(a: Answer) -> str:
    label = answer_label(a)
    return f"{label[:1].upper()}{label[1:]}. Supported: {a.supported}/{a.claims} claim sentences."
