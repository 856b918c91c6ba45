"""What every command shares: the global options (``State``), the user-error test and JSON
output. Light on purpose: imported for ``rag-papers --help``, so only typer is loaded here;
rich, the settings and the engine are imported on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers import PaperQA, Settings

__all__ = [
    "CLIError",
    "State",
    "current_state",
    "get_settings",
    "is_user_error",
    "open_qa",
    "print_json",
]


class CLIError(Exception):
    """A usage problem found by the CLI itself (unknown paper id, missing component)."""


def is_user_error(exc: BaseException) -> bool:
    """True for an error a user can fix (bad settings, file, index, LLM, prompt, usage)."""
    from rag_papers import RagPapersError  # light: the error base loads nothing else

    return isinstance(exc, CLIError | RagPapersError)


@dataclass
class State:
    """What the global options say; ``settings`` is built on first use and then kept."""

    config: Path | None = None
    preset: str | None = None
    index_dir: Path | None = None
    chroma_url: str | None = None
    collection: str | None = None
    verbose: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from rag_papers import load_settings

            self._settings = load_settings(
                config=self.config,
                preset=self.preset,
                index_dir=self.index_dir,
                chroma_url=self.chroma_url,
                collection=self.collection,
            )
        return self._settings

    @property
    def out(self) -> Console:
        """Results: stdout."""
        if self._out is None:
            from rich.console import Console

            self._out = Console(highlight=False, markup=False)
        return self._out

    @property
    def err(self) -> Console:
        """Progress, notices and errors: stderr, so stdout stays parseable."""
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, markup=False)
        return self._err

    def notify(self, message: str) -> None:
        from rich.text import Text

        self.err.print(Text(message, style="dim"))


def current_state(ctx: typer.Context) -> State:
    """The State of the global options (an empty one for a sub-app invoked on its own)."""
    state = ctx.find_object(State)
    if state is None:  # a sub-app invoked on its own (tests, embedding)
        state = ctx.ensure_object(State)
    return state


def get_settings(ctx: typer.Context) -> Settings:
    """The Settings the global options describe, for commands mounted under this app
    (``rag-papers eval ...``): ``get_settings(ctx)`` inside any command."""
    return current_state(ctx).settings


def open_qa(state: State) -> PaperQA:
    """The engine over the settings of ``state``; use it as a context manager."""
    from rag_papers import PaperQA

    return PaperQA(state.settings, notify=state.notify)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    # Plain print, not rich: no wrapping or colour may touch machine-readable output.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
