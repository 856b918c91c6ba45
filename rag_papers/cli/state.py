"""What every command shares: the global options (``State``), the exit codes and which
error gets which, and JSON output. Light on purpose: imported for ``rag-papers --help``, so
only typer is loaded here; rich, the settings and the engine are imported on first use.

Exit codes: the table is in cli/app.py's docstring and, as ``EXIT_CODES_HELP``, in
``rag-papers --help``; ``exit_code_for`` maps each error kind to its code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers import PaperQA, Settings

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_USAGE",
    "CLIError",
    "State",
    "as_input_error",
    "current_state",
    "exit_code_for",
    "get_settings",
    "hint_if_empty",
    "is_user_error",
    "open_qa",
    "print_json",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_SERVICE = 4
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 a check you asked for failed (ingest --strict, eval --fail-under) "
    "or an internal error; 2 usage (unknown option, bad option value); 3 input or "
    "configuration (bad file, setting, LLM spec or API key, missing extra, unknown paper); "
    "4 a service failed (LLM server or API, Chroma server)."
)

# The library's errors by class name (a name in the MRO of a rag_papers error): matching by
# name keeps the error path from importing the store or the LLM backends to compare classes.
_EXIT_BY_ERROR = {
    "SettingsError": EXIT_INPUT,
    "LoaderError": EXIT_INPUT,
    "PromptError": EXIT_INPUT,
    "IndexMismatchError": EXIT_INPUT,
    "LLMError": EXIT_SERVICE,
    "StoreUnavailableError": EXIT_SERVICE,
    "EmbeddingError": EXIT_SERVICE,  # the embeddings server failed
    "WriterBusyError": EXIT_SERVICE,  # another ingest held the collection too long
}


class CLIError(Exception):
    """A problem found by the CLI itself; ``exit_code`` says which kind (default: input)."""

    def __init__(self, message: str, *, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code of an error a user can fix; None for anything else (a bug).

    The one place errors map to codes: a CLIError carries its own, a library error may set
    ``exit_code`` (see ``as_input_error``), else its class decides (``_EXIT_BY_ERROR``; any
    other ``RagPapersError`` is an input error).
    """
    if isinstance(exc, CLIError):
        return exc.exit_code
    from rag_papers import RagPapersError  # light: the error base loads nothing else

    if not isinstance(exc, RagPapersError):
        return None
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("rag_papers.") and cls.__name__ in _EXIT_BY_ERROR:
            return _EXIT_BY_ERROR[cls.__name__]
    return EXIT_INPUT


def is_user_error(exc: BaseException) -> bool:
    """True for an error a user can fix (bad settings, file, index, LLM, prompt, usage)."""
    return exit_code_for(exc) is not None


@contextmanager
def as_input_error() -> Iterator[None]:
    """Library errors raised inside are input/configuration errors (exit 3), whatever their
    class: an LLMError while the backend is being set up is a bad spec, key or model file,
    not a failed service."""
    from rag_papers import RagPapersError

    try:
        yield
    except RagPapersError as exc:
        exc.exit_code = EXIT_INPUT  # type: ignore[attr-defined]
        raise


@dataclass
class State:
    """What the global options say; ``settings`` is built on first use and then kept."""

    config: Path | None = None
    preset: str | None = None
    index_dir: Path | None = None
    chroma_url: str | None = None
    collection: str | None = None
    verbose: bool = False
    # Settings a command sets from its own options (ask --answer-style), before first use.
    overrides: dict[str, Any] = field(default_factory=dict)
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
                **self.overrides,
            )
        return self._settings

    @property
    def out(self) -> Console:
        """Results: stdout."""
        if self._out is None:
            from rag_papers.terminal.console import make_console

            self._out = make_console()
        return self._out

    @property
    def err(self) -> Console:
        """Progress, notices and errors: stderr, so stdout stays parseable."""
        if self._err is None:
            from rag_papers.terminal.console import make_console

            self._err = make_console(stderr=True)
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


def hint_if_empty(state: State, qa: PaperQA) -> None:
    """Say so on stderr when the index holds no papers: an empty result is then no answer."""
    if qa.count() == 0:
        state.err.print(
            f"the index at {qa.location} holds no papers: run rag-papers ingest FILE",
            style="yellow",
        )


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    # Plain print, not rich: no wrapping or colour may touch machine-readable output.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
