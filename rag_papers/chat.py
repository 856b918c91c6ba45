"""Chat: follow-up questions over the paper index, one citation numbering per session.

Condensing follow-ups
    A follow-up such as "How does it decide when to retrieve?" cannot be searched on its own.
    With an LLM configured, PaperQA.condense asks the model to rewrite it. In extractive mode
    (no LLM) it calls :func:`condense_heuristic`, which works like this:

    1. A follow-up *refers back* when it contains an anaphor (it, its, they, them, their, this,
       these, those, he, she; "that" only where it cannot be a conjunction: first or last word,
       or after a preposition or auxiliary as in "how does that work"), a phrase such as
       "the paper", "the method", "the model", "the approach", "the authors", or when it opens
       with "what about", "how about", "and", "but", "also", "what else", "tell me more"...
    2. It is *short* when it has at most three words, or no key term at all, and names
       nothing of its own (no acronym, CamelCase, digit or capitalised name): "Limitations?",
       "Any numbers?". "What is RAPTOR?" names something and is left alone.
    3. Either way it is rewritten by appending, in parentheses, the key terms of the previous
       standalone question (going back at most three turns to find some): runs of content
       words, stop words and question verbs removed, names and acronyms first, at most six,
       terms already in the follow-up skipped. "How does it decide when to retrieve?" after
       "What does Self-RAG add to retrieval-augmented generation?" becomes
       "How does it decide when to retrieve? (Self-RAG, retrieval-augmented generation)".
       Because the previous *standalone* question is used, a subject carries over chains of
       follow-ups. Anything else is returned unchanged. The heuristic never replaces the
       pronoun (which needs a parser to do well); retrieval only needs the terms.

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
    should they ever differ.

The REPL (:func:`run_repl`)
    prompt_toolkit with a persistent history file (settings.resolved_history_file). Enter
    sends; Esc then Enter (Alt+Enter) or a trailing backslash inserts a new line. Answers
    run in a worker thread and stream into the terminal; then rag_papers.render shows the
    label, sources and support verdict as the CLI does. Ctrl-C while an answer is written
    cancels it (the worker stops at its next piece of text, and the turn is not recorded)
    and returns to the prompt; Ctrl-C at the prompt clears the line; Ctrl-D exits.

Test hook
    RAG_PAPERS_TEST_SLOW_STREAM=SECONDS makes the REPL's worker hand the answer to the
    terminal one word at a time with that pause between words, so a test driving the REPL
    through a pty can press Ctrl-C while an answer is being written. Nothing else reads it.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.answer import (
    CITATION_PATTERN,
    STOPWORDS,
    Answer,
    expand_markers,
)
from rag_papers.engine import MarkerFilter
from rag_papers.retrieval import Filters

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers.engine import PaperQA
    from rag_papers.retrieval import Mode
    from rag_papers.settings import Settings

__all__ = [
    "AnswerCancelled",
    "CancelToken",
    "ChatSession",
    "SessionSource",
    "Turn",
    "condense_heuristic",
    "renumber_answer",
    "run_repl",
]

SLOW_STREAM_ENV = "RAG_PAPERS_TEST_SLOW_STREAM"

# --- condensing follow-ups ----------------------------------------------------------------
_ANAPHORA_WORDS = (
    "it its it's itself they them their theirs themselves this these those he she his her"
)
_ANAPHORA = frozenset(_ANAPHORA_WORDS.split())
# "that" is a pronoun (not a conjunction) after these words: "how does that work".
_BEFORE_THAT_WORDS = "about of in on with for from to like behind is was does did do are were than"
_BEFORE_THAT = frozenset(_BEFORE_THAT_WORDS.split())
_REFERRING_NOUNS = (
    "paper|papers|method|methods|model|models|approach|approaches|authors|framework|technique|"
    "system|study|work|results|idea|architecture|dataset|benchmark|same"
)
_REFERRING = re.compile(rf"\b(?:the|that|this|these|those|such)\s+(?:{_REFERRING_NOUNS})\b", re.I)
_OPENERS = re.compile(
    r"^\s*(?:what about|how about|and|but|also|so|what else|anything else|tell me more|"
    r"more about|more on|same for|compared to|compared with|how so|why so)\b",
    re.I,
)
# Words that carry no subject: stop words plus question words and generic question verbs.
_QUESTION_TEXT = (
    "what which who whom whose why how when where whether is are was were be been being do does "
    "did done doing can could would should will shall might must there here you your i me my "
    "add adds added mean means say says said tell explain describe give gives compare differ "
    "differs about any some much many more less else like please vs versus one ones"
)
_GENERIC = STOPWORDS | frozenset(_QUESTION_TEXT.split())
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.\-'’][A-Za-z0-9]+)*")
_MAX_TERMS = 6


def _is_name(token: str, first: bool) -> bool:
    """Acronyms (RAG), CamelCase or hyphenated names (Self-RAG, LLaMA), digits (GPT-4)."""
    if any(c.isdigit() for c in token):
        return True
    if sum(c.isupper() for c in token) >= 2 or any(c.isupper() for c in token[1:]):
        return True
    return token[:1].isupper() and not first


def _key_terms(text: str) -> list[str]:
    """Runs of adjacent content words (at most four), names first, in order, deduplicated."""
    runs: list[list[tuple[str, bool]]] = [[]]
    last_end = 0
    for i, m in enumerate(_TOKEN.finditer(text)):
        token = m.group(0)
        gap = text[last_end : m.start()]
        last_end = m.end()
        if gap.strip() or token.lower() in _GENERIC or len(token) < 2 or len(runs[-1]) >= 4:
            runs.append([])  # punctuation, a stop word or a long run ends the term
        if token.lower() not in _GENERIC and len(token) >= 2:
            runs[-1].append((token, _is_name(token, first=i == 0)))
    terms: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for run in runs:
        if run and (phrase := " ".join(t for t, _ in run)).lower() not in seen:
            seen.add(phrase.lower())
            terms.append((phrase, any(n for _, n in run)))
    return [t for t, n in terms if n] + [t for t, n in terms if not n]


def _refers_back(question: str) -> bool:
    tokens = [t.lower() for t in _TOKEN.findall(question)]
    if _ANAPHORA & set(tokens) or _REFERRING.search(question) or _OPENERS.match(question):
        return True
    for i, tok in enumerate(tokens):
        if tok == "that" and (i in (0, len(tokens) - 1) or tokens[i - 1] in _BEFORE_THAT):
            return True
    return False


def _is_short(question: str) -> bool:
    tokens = _TOKEN.findall(question)
    names = any(_is_name(t, first=i == 0) for i, t in enumerate(tokens))
    return not names and (len(tokens) <= 3 or not _key_terms(question))


def condense_heuristic(question: str, history: Sequence[tuple[str, str]]) -> str:
    """Rewrite a follow-up into a standalone question without an LLM (see the module doc).

    ``history`` holds (question, answer) pairs, oldest first; the first element is taken as
    the earlier *standalone* question. Returns ``question`` unchanged when it neither refers
    back nor is short, or when there is nothing to add.
    """
    if not history or not question.strip():
        return question
    if not (_refers_back(question) or _is_short(question)):
        return question
    present = {t.lower() for t in _TOKEN.findall(question)}
    for previous, _ in reversed(history[-3:]):
        terms = [
            t
            for t in _key_terms(previous)
            if not all(w.lower() in present for w in _TOKEN.findall(t))
        ][:_MAX_TERMS]
        if terms:
            return f"{question.strip()} ({', '.join(terms)})"
    return question


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
class AnswerCancelled(Exception):
    """The answer was stopped (Ctrl-C in the REPL); the turn is not recorded."""


class CancelToken:
    """Stops an answer being written in another thread; ``cancel`` and the session's commit
    are decided under one lock, so a cancelled answer is never recorded and a recorded one
    was not cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "running"

    def cancel(self) -> bool:
        """True when the answer is (now) cancelled; False when it was already recorded."""
        with self._lock:
            if self._state == "running":
                self._state = "cancelled"
            return self._state == "cancelled"

    @property
    def cancelled(self) -> bool:
        return self._state == "cancelled"

    def check(self) -> None:
        if self._state == "cancelled":
            raise AnswerCancelled

    def _commit(self) -> bool:
        with self._lock:
            if self._state == "running":
                self._state = "done"
                return True
            return False


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
        return _marker_runs(self.streamed) == _marker_runs(self.answer.text)


def _marker_runs(text: str) -> list[int]:
    return [n for m in CITATION_PATTERN.finditer(text) for n in expand_markers(m.group(1))]


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
        self._lock = threading.Lock()

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
        on_delta: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Answer a follow-up; returns the session-numbered Answer and records the turn.

        ``standalone_question``: skip condensing (the caller already did it). ``on_delta``
        receives the text as it is written, markers already in session numbers. ``cancel``:
        when cancelled, the next piece of text raises AnswerCancelled and nothing is recorded.
        """
        opts: dict[str, Any] = {
            "llm": self.llm,
            "k": self.k,
            "mode": self.mode,
            "filters": self.filters,
            **kwargs,
        }
        if cancel is not None:
            cancel.check()
        standalone = standalone_question or self.condense(question, llm=opts["llm"])
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
            if cancel is not None and not cancel._commit():
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
    parts = [f"[{s.number}] {s.title}"]
    if s.authors:
        more = " et al." if len(s.authors) > 3 else ""
        parts.append(", ".join(s.authors[:3]) + more)
    if s.year:
        parts.append(str(s.year))
    text = ". ".join(parts) + "."
    if s.url:
        text += f" <{s.url}>"
    return text + f" (id `{s.paper_id}`)"


def _verdict_line(a: Answer) -> str:
    from rag_papers.render import answer_label  # the label the terminal shows, too

    label = answer_label(a)
    return f"{label[:1].upper()}{label[1:]}. Supported: {a.supported}/{a.claims} claim sentences."


# --- the REPL ---------------------------------------------------------------------------------
HELP = """\
Ask a question about the indexed papers; follow-ups may refer back ("how does it work?").
Keys: Enter sends · Esc then Enter (or Alt+Enter) inserts a new line · a line ending in \\
  continues on the next · Ctrl-C stops an answer being written, or clears the line ·
  Ctrl-D quits. Up/Down walk the history (kept between sessions).
Commands:
  /sources                 papers cited so far, with their session numbers
  /paper ID|N              one paper in full (its id, or its session number N)
  /k N                     papers retrieved per question
  /filter year=2023:2025 author=NAME category=cs.CL   (quote values with spaces)
  /filter clear            remove the filters; /filter alone shows them
  /mode dense|bm25|hybrid  retrieval mode
  /llm SPEC                extractive | openai:MODEL | gguf:PATH
  /reset                   forget the conversation and the citation numbers
  /save FILE               write the transcript (Markdown, with a reference list)
  /help                    this text
  /quit                    leave (or Ctrl-D)"""

_COMMAND_NAMES = "/sources /paper /k /filter /mode /llm /reset /save /help /quit"
_COMMANDS = tuple(_COMMAND_NAMES.split())


def _slow_stream_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(SLOW_STREAM_ENV, "") or 0.0))
    except ValueError:
        return 0.0


class _Repl:
    def __init__(
        self, qa: PaperQA, settings: Settings, console: Console, session: ChatSession
    ) -> None:
        self.qa = qa
        self.settings = settings
        self.console = console
        self.session = session
        self._worker: threading.Thread | None = None

    # --- printing ---------------------------------------------------------------------
    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def error(self, exc: BaseException) -> None:
        name = "" if isinstance(exc, ValueError | RuntimeError) else f"{type(exc).__name__}: "
        self.say(f"error: {name}{exc}", style="bold red")

    def write(self, text: str) -> None:
        """Raw text (answer pieces): no markup, control characters removed."""
        from rag_papers.render import safe_text

        self.console.file.write(safe_text(text))
        self.console.file.flush()

    def show_after(self, turn: Turn) -> None:
        """After the streamed text: label, sources, support verdict (or the abstention)."""
        from rag_papers.render import render_answer

        if turn.stream_exact:
            render_answer(self.console, turn.answer, streamed=True)
            return
        self.write("\n")
        self.say("(citation numbers corrected:)", style="yellow")
        render_answer(self.console, turn.answer)

    # --- answering --------------------------------------------------------------------
    def answer(self, question: str) -> None:
        if self._worker is not None and self._worker.is_alive():
            self.say("(waiting for the stopped answer to end…)", style="dim")
            self._worker.join()
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        token = CancelToken()
        delay = _slow_stream_delay()

        def on_delta(text: str) -> None:
            if not delay:
                events.put(("delta", text))
                return
            for piece in re.findall(r"\s*\S+", text):  # test hook: one word at a time
                token.check()
                time.sleep(delay)
                events.put(("delta", piece))

        def work() -> None:
            try:
                standalone = self.session.condense(question)
                events.put(("rewrite", standalone))
                self.session.ask(
                    question, standalone_question=standalone, on_delta=on_delta, cancel=token
                )
                events.put(("answer", self.session.history[-1]))  # the turn just recorded
            except AnswerCancelled:
                events.put(("cancelled", None))
            except BaseException as exc:  # shown in the main thread; the session goes on
                events.put(("error", exc))

        self._worker = threading.Thread(target=work, name="rag-papers-answer", daemon=True)
        self._worker.start()
        shown: list[bool] = []  # set once answer text has been written
        try:
            self._pump(events, question, shown)
        except KeyboardInterrupt:
            self.write("\n" if shown else "")
            if token.cancel():
                self.say("[answer stopped]", style="yellow")
            else:  # it had been recorded a moment before: say so rather than hide it
                self.say("[output stopped; the answer was complete and is kept]", style="yellow")

    def _pump(self, events: queue.Queue[tuple[str, Any]], question: str, shown: list[bool]) -> None:
        """Print the worker's events until its answer, error or cancellation."""
        while True:
            try:
                kind, value = events.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "rewrite":
                if value.strip() != question.strip():
                    self.say(f"↳ searching for: {value}", style="cyan")
            elif kind == "delta":
                shown.append(True)
                self.write(value)
            elif kind == "answer":
                self.show_after(value)
                return
            elif kind == "cancelled":
                return
            else:
                self.write("\n" if shown else "")
                self.error(value)
                return

    # --- commands ---------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        name = name.lower()
        if name in ("/quit", "/exit", "/q"):
            return False
        handler = {
            "/sources": self.cmd_sources,
            "/paper": self.cmd_paper,
            "/k": self.cmd_k,
            "/filter": self.cmd_filter,
            "/mode": self.cmd_mode,
            "/llm": self.cmd_llm,
            "/reset": self.cmd_reset,
            "/save": self.cmd_save,
            "/help": self.cmd_help,
        }.get(name)
        if handler is None:
            close = [c for c in _COMMANDS if c.startswith(name[:3])] if len(name) > 1 else []
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            self.say(
                f"Unknown command {name}.{hint} Commands: {' '.join(_COMMANDS)}. "
                "Type /help for details.",
                style="yellow",
            )
            return True
        try:
            handler(arg)
        except Exception as exc:
            self.error(exc)
        return True

    def cmd_help(self, arg: str) -> None:
        self.say(HELP)

    def cmd_sources(self, arg: str) -> None:
        sources = self.session.sources
        if not sources:
            self.say("No papers cited yet.")
            return
        for s in sources:
            year = f" ({s.year})" if s.year else ""
            turns = ", ".join(str(t) for t in s.turns)
            self.say(f"[{s.number}] {s.title}{year}")
            self.say(f"     id {s.paper_id} · cited in turn {turns}", style="dim")

    def cmd_paper(self, arg: str) -> None:
        from rag_papers.render import render_paper

        if not arg:
            self.say("Usage: /paper ID  (or the session number N of a cited paper)")
            return
        paper_id = arg
        if arg.isdigit() and len(arg) <= 4:
            match = [s for s in self.session.sources if s.number == int(arg)]
            if not match:
                self.say(f"No paper has session number {arg} (see /sources).", style="yellow")
                return
            paper_id = match[0].paper_id
        paper = self.qa.index.paper(paper_id)
        if paper is None:
            self.say(f"No paper with id {paper_id!r} in the index.", style="yellow")
            return
        if number := self.session.number_of(paper.id):
            self.say(f"[{number}] in this session", style="cyan")
        render_paper(self.console, paper)

    def cmd_k(self, arg: str) -> None:
        if not arg:
            self.say(f"k = {self.session.k or self.settings.top_k}")
            return
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if not 1 <= k <= self.settings.max_k:
            self.say(f"/k needs a whole number from 1 to {self.settings.max_k}.", style="yellow")
            return
        self.session.k = k
        self.say(f"k = {k}: {k} papers retrieved per question.")

    def cmd_mode(self, arg: str) -> None:
        if not arg:
            self.say(f"mode = {self.session.mode or self.settings.retrieval_mode}")
            return
        if arg not in ("dense", "bm25", "hybrid"):
            self.say("/mode takes dense, bm25 or hybrid.", style="yellow")
            return
        self.session.mode = arg  # type: ignore[assignment]
        self.say(f"mode = {arg}")

    def cmd_filter(self, arg: str) -> None:
        if arg.lower() in ("clear", "none", "off"):
            self.session.filters = None
            self.say("Filters cleared.")
            return
        if not arg:
            current = self.session.filters.to_dict() if self.session.filters else {}
            shown = " ".join(f"{k}={v}" for k, v in current.items()) or "none"
            self.say(f"Filters: {shown}")
            return
        filters = Filters()
        for part in shlex.split(arg):
            key, eq, value = part.partition("=")
            key = key.lower()
            if not eq or not value:
                raise ValueError(f"/filter: expected KEY=VALUE, got {part!r}")
            if key == "year":
                filters.year_min, filters.year_max = Filters.parse_years(value)
            elif key == "author":
                filters.author = value
            elif key == "category":
                filters.category = value
            else:
                raise ValueError(f"/filter: unknown key {key!r} (year, author, category)")
        self.session.filters = filters
        shown = " ".join(f"{k}={v}" for k, v in filters.to_dict().items())
        self.say(f"Filters: {shown}")

    def cmd_llm(self, arg: str) -> None:
        if not arg:
            self.say(f"llm = {self.session.llm or self.settings.llm}")
            return
        self.qa.backend(arg)  # builds it now, so a bad spec fails here, not mid-question
        self.session.llm = arg
        self.say(f"llm = {arg}")

    def cmd_reset(self, arg: str) -> None:
        self.session.reset()
        self.say("Conversation reset: history and citation numbers cleared.")

    def cmd_save(self, arg: str) -> None:
        if not arg:
            self.say("Usage: /save FILE.md", style="yellow")
            return
        path = Path(arg).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.session.to_markdown(), encoding="utf-8")
        n_refs = len(self.session.sources)
        self.say(
            f"Saved the transcript to {path} "
            f"({len(self.session.history)} turns, {n_refs} references)."
        )


def _key_bindings() -> Any:
    from prompt_toolkit.key_binding import KeyBindings

    kb = KeyBindings()

    @kb.add("enter")
    def _submit(event: Any) -> None:
        buffer = event.current_buffer
        if buffer.document.text_before_cursor.endswith("\\"):
            buffer.delete_before_cursor(1)  # "line \" + Enter: continue on the next line
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    @kb.add("escape", "enter")  # also what Alt+Enter sends
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    return kb


def _turn(prompt: Any, repl: _Repl) -> bool:
    """Read one entry and act on it; False means quit."""
    try:
        line = prompt.prompt("papers> ")
    except KeyboardInterrupt:
        return True  # Ctrl-C at the prompt clears the line
    text = line.strip()
    if not text:
        return True
    try:
        if text.startswith("/"):
            return repl.command(text)
        repl.answer(text)
    except KeyboardInterrupt:  # Ctrl-C while a command prints: back to the prompt
        repl.say("\n[interrupted]", style="yellow")
    return True


def run_repl(
    qa: PaperQA, settings: Settings, *, llm: str | None = None, k: int | None = None
) -> None:
    """The interactive chat (``rag-papers chat``); returns when the user quits."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from rich.console import Console

    console = Console(highlight=False)
    session = ChatSession(qa, llm=llm, k=k)
    repl = _Repl(qa, settings, console, session)
    try:
        papers = qa.index.catalog.count()
    except Exception as exc:  # the index cannot be opened: say why and stop
        repl.error(exc)
        return
    history_file = settings.resolved_history_file
    history_file.parent.mkdir(parents=True, exist_ok=True)
    answers = llm or settings.llm
    answers = "extractive (no LLM: quoted sentences)" if answers == "extractive" else answers
    repl.say(f"rag-papers chat · {papers} papers · answers: {answers}", style="bold")
    repl.say(
        "Enter sends · Esc+Enter (Alt+Enter) or a trailing \\ adds a line · "
        "/help for commands · Ctrl-D quits",
        style="dim",
    )
    prompt: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_file)),
        multiline=True,  # our Enter binding submits; see _key_bindings
        key_bindings=_key_bindings(),
        prompt_continuation=lambda width, line_number, is_soft_wrap: "… ".rjust(width),
    )
    while True:
        try:
            if not _turn(prompt, repl):
                break
        except KeyboardInterrupt:  # Ctrl-C between the prompt and the work: back to the prompt
            repl.write("\n")
        except EOFError:  # Ctrl-D on an empty line
            break
    repl.say("Bye.", style="dim")
    sys.stdout.flush()
