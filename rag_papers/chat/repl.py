"""The chat REPL: prompt_toolkit input, streamed answers, Ctrl-C handling.

A thin terminal front end over the public ``rag_papers.ChatSession`` (see
rag_papers.engine.conversation for how follow-ups are condensed and how citation numbers
stay fixed for a session); it reaches the index only through PaperQA's public methods. The
slash commands are in rag_papers.chat.commands.

The REPL (:func:`run_repl`)
    prompt_toolkit with a persistent history file (settings.resolved_history_file). Enter
    sends; Esc then Enter (Alt+Enter) or a trailing backslash inserts a new line. Answers
    come from ``ChatSession.stream`` (the package's one thread-to-iterator bridge) and are
    written as they arrive; then rag_papers.terminal.render shows the label, sources and
    support verdict as the CLI does. Ctrl-C while an answer is written cancels its
    CancelToken (the worker stops at its next piece of text, and the turn is not recorded)
    and returns to the prompt; Ctrl-C at the prompt clears the line; Ctrl-D exits.

Test hook
    RAG_PAPERS_TEST_SLOW_STREAM=SECONDS makes the answer's worker hand the text on one word
    at a time with that pause between words, so a test driving the REPL through a pty can
    press Ctrl-C while an answer is being written. Nothing else reads it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rag_papers import AnswerCancelled, CancelToken, ChatSession
from rag_papers.chat.commands import HELP, SlashCommands

if TYPE_CHECKING:
    from rag_papers import Answer, PaperQA, Settings, Turn

__all__ = ["HELP", "SLOW_STREAM_ENV", "run_repl"]

# A test hook: slows streamed pieces so a pty test can press Ctrl-C mid-answer.
SLOW_STREAM_ENV = "RAG_PAPERS_TEST_SLOW_STREAM"


def _slow_stream_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(SLOW_STREAM_ENV, "") or 0.0))
    except ValueError:
        return 0.0


class _PacedSession(ChatSession):
    """The test hook: ChatSession.stream runs ask() in its worker, so pacing ask's pieces
    there (one word, then a pause) keeps the answer unrecorded long enough for a Ctrl-C."""

    def __init__(self, qa: PaperQA, *, delay: float, **kwargs: Any) -> None:
        super().__init__(qa, **kwargs)
        self.delay = delay

    def ask(
        self, question: str, *, on_delta: Callable[[str], None] | None = None, **kwargs: Any
    ) -> Answer:
        paced: Callable[[str], None] | None = None
        if on_delta is not None:
            write = on_delta

            def paced(text: str) -> None:
                for word in re.findall(r"\s*\S+", text):
                    time.sleep(self.delay)
                    write(word)  # the bridge's writer: raises AnswerCancelled once stopped

        return super().ask(question, on_delta=paced, **kwargs)


class _Repl(SlashCommands):
    """The slash commands plus answering: streamed text, then the rendered answer."""

    # --- answering --------------------------------------------------------------------
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

    def answer(self, question: str) -> None:
        if self.session.answering:
            self.say("(waiting for the stopped answer to end…)", style="dim")
        token = CancelToken()
        rewrites: list[str] = []  # set by the worker before it writes any text
        shown = False  # answer text has been written
        try:
            for item in self.session.stream(question, cancel=token, on_standalone=rewrites.append):
                self.show_rewrite(question, rewrites)
                if isinstance(item, str):
                    shown = True
                    self.write(item)
                else:
                    self.show_after(self.session.history[-1])  # the turn just recorded
        except KeyboardInterrupt:
            self.write("\n" if shown else "")
            if token.cancel():
                self.say("[answer stopped]", style="yellow")
            else:  # it had been recorded a moment before: say so rather than hide it
                self.say("[output stopped; the answer was complete and is kept]", style="yellow")
        except AnswerCancelled:  # only this REPL cancels the token, after it stops reading
            pass
        except Exception as exc:  # shown; the session goes on
            self.show_rewrite(question, rewrites)
            self.write("\n" if shown else "")
            self.error(exc)

    def show_rewrite(self, question: str, rewrites: list[str]) -> None:
        """The search form of a follow-up, once, when condensing changed it."""
        while rewrites:
            if (standalone := rewrites.pop()).strip() != question.strip():
                self.say(f"↳ searching for: {standalone}", style="cyan")


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
    delay = _slow_stream_delay()
    session = (
        _PacedSession(qa, delay=delay, llm=llm, k=k) if delay else ChatSession(qa, llm=llm, k=k)
    )
    repl = _Repl(qa, settings, console, session)
    try:
        papers = qa.count()
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
        prompt_continuation=lambda width, _line, _soft_wrap: "… ".rjust(width),
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
