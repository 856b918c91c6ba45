"""The chat's slash commands (/sources, /paper, /k, /filter, /mode, /llm, /reset, /save,
/help, /quit) and the REPL's printing. They read and set the ChatSession's defaults and
reach the index only through PaperQA's public methods; modes and the llm spec grammar come
from the package's one declaration (rag_papers.MODES, rag_papers.LLM_SPEC_HELP)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rag_papers import LLM_SPEC_HELP, MODES, Filters

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers import ChatSession, Mode, PaperQA, Settings

__all__ = ["HELP", "SlashCommands"]

HELP = f"""\
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
  {"/mode " + "|".join(MODES):<24} retrieval mode
  /llm SPEC                {LLM_SPEC_HELP}
  /reset                   forget the conversation and the citation numbers
  /save FILE               write the transcript (Markdown, with a reference list)
  /help                    this text
  /quit                    leave (or Ctrl-D)"""

_COMMAND_NAMES = "/sources /paper /k /filter /mode /llm /reset /save /help /quit"
_COMMANDS = tuple(_COMMAND_NAMES.split())


class SlashCommands:
    """Printing and the slash commands over one ChatSession; the REPL adds answering."""

    def __init__(
        self, qa: PaperQA, settings: Settings, console: Console, session: ChatSession
    ) -> None:
        self.qa = qa
        self.settings = settings
        self.console = console
        self.session = session

    # --- printing ---------------------------------------------------------------------
    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def error(self, exc: BaseException) -> None:
        name = "" if isinstance(exc, ValueError | RuntimeError) else f"{type(exc).__name__}: "
        self.say(f"error: {name}{exc}", style="bold red")

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
        paper = self.qa.paper(paper_id)
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
        if arg not in MODES:
            self.say(f"/mode takes {', '.join(MODES[:-1])} or {MODES[-1]}.", style="yellow")
            return
        self.session.mode = cast("Mode", arg)
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
