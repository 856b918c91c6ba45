"""The chat REPL: prompt_toolkit input, streamed answers, slash commands, Ctrl-C handling.

A thin terminal front end over rag_papers.engine.conversation.ChatSession; see that module for how
follow-ups are condensed and how citation numbers stay fixed for a session.

The REPL (:func:`run_repl`)
    prompt_toolkit with a persistent history file (settings.resolved_history_file). Enter
    sends; Esc then Enter (Alt+Enter) or a trailing backslash inserts a new line. Answers
    run in a worker thread and stream into the terminal; then rag_papers.terminal.render shows the
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.engine.conversation import ChatSession, Turn
from rag_papers.engine.streaming import AnswerCancelled, CancelToken
from rag_papers.retrieval.retriever import Filters

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers.core.settings import Settings
    from rag_papers.engine.qa import PaperQA

__all__ = ["HELP", "SLOW_STREAM_ENV", "run_repl"]

# A test hook: slows streamed pieces so a pty test can press Ctrl-C mid-answer.
SLOW_STREAM_ENV = "RAG_PAPERS_TEST_SLOW_STREAM"

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
        from rag_papers.terminal.render import safe_text

        self.console.file.write(safe_text(text))
        self.console.file.flush()

    def show_after(self, turn: Turn) -> None:
        """After the streamed text: label, sources, support verdict (or the abstention)."""
        from rag_papers.terminal.render import render_answer

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
        from rag_papers.terminal.render import render_paper

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
