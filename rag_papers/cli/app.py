"""The ``rag-papers`` command line: a thin typer + rich layer over ``rag_papers.PaperQA``.

This module holds the root app: the global options (one Settings, built lazily and kept in
the typer context as ``State``), the mapping of errors to exit codes, the lazily mounted
sub-apps and ``main``. The commands live beside it (ingest, papers, query, serve, config,
eval). Nothing heavy is imported at module level (no Chroma, llama-index, onnxruntime, numpy,
nor the engine), so ``--help`` answers at once; each command imports what it uses.

Global options may come before or after the command (``rag-papers ingest f.jsonl
--index-dir D``): ``_RootGroup`` moves them to the front unless the command has an option of
that name itself. Shell completion: ``--install-completion`` / ``--show-completion``.

Errors a user can fix (bad settings, files, index, LLM, prompt) are one red line on stderr
(``-v`` shows the traceback too) and exit with the code of their kind (cli/state.py maps
errors to codes in one place):

==  =====================================================================================
0   done
1   a check you asked for failed (``ingest --strict``, ``eval --fail-under``,
    ``eval compare --fail-on-regression``); also an unexpected internal error (traceback)
2   usage: an unknown command or option, a bad option value (``--year 2030:2020``)
3   input or configuration: a bad file, setting, config file, prompt file or LLM spec, a
    missing API key or extra, an index built with other settings, an unknown paper id
4   a service failed: the LLM server or API, or the Chroma server
==  =====================================================================================
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rag_papers import __version__
from rag_papers.cli.config import config_app
from rag_papers.cli.ingest import ingest
from rag_papers.cli.papers import papers_app, stats
from rag_papers.cli.query import ask, search
from rag_papers.cli.serve import chat, serve
from rag_papers.cli.state import (
    EXIT_CODES_HELP,
    CLIError,
    State,
    exit_code_for,
    get_settings,
)

__all__ = ["CLIError", "State", "app", "get_settings", "hoist_global_options", "main"]


# --- the root group: error handling and lazily mounted sub-apps ----------------------------
# name -> (module, attribute, one-line help). The module is imported only when the command
# runs (or completes), never for `rag-papers --help`.
_LAZY_APPS: dict[str, tuple[str, str, str]] = {
    "eval": (
        "rag_papers.cli.eval",
        "app",
        "Evaluate retrieval and answers (run, compare, beir; needs the eval extra).",
    ),
}
# The root's options that take a value, and its flags: accepted after the command too.
_GLOBAL_VALUE_OPTIONS = {"--config", "--preset", "--index-dir", "--chroma-url", "--collection"}
_GLOBAL_FLAGS = {"-v", "--verbose"}


def _option_names(command: Any) -> dict[str, bool]:
    """Option name -> takes a value, over ``command`` and every command below it."""
    names: dict[str, bool] = {}
    for param in getattr(command, "params", []):
        # typer ships its own copy of click: compare by kind, not by class.
        if getattr(param, "param_type_name", "") == "option":
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not param.is_flag and not getattr(param, "count", False)
    for sub in getattr(command, "commands", {}).values():
        names.update(_option_names(sub))
    return names


def hoist_global_options(args: list[str], command: Any) -> tuple[list[str], list[str]]:
    """Split what follows a command name into (the root's options, the rest), so the root's
    options can go before the command. An option ``command`` (or a command below it) has
    itself stays with it (``eval run --index-dir``)."""
    own = _option_names(command)
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # everything after it is an argument
            kept += args[i:]
            break
        name, inline = arg.split("=", 1)[0], "=" in arg
        if name in own:  # the command's own option, with its value
            step = 2 if own[name] and not inline else 1
            kept += args[i : i + step]
        elif name in _GLOBAL_VALUE_OPTIONS or name in _GLOBAL_FLAGS:
            step = 2 if name in _GLOBAL_VALUE_OPTIONS and not inline else 1
            moved += args[i : i + step]
        else:
            step = 1
            kept.append(arg)
        i += step
    return moved, kept


class _RootGroup(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Global options after the command move before it: find the command name past the
        # leading options and their values, then take the root's options out of the rest.
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            i += 2 if args[i] in _GLOBAL_VALUE_OPTIONS else 1
        if i < len(args) and not args[i].startswith("-"):
            try:
                command = self._command_for_hoisting(ctx, args[i])
            except Exception:  # e.g. a lazy app that is missing: invoke() reports it
                command = None
            if command is not None:
                moved, kept = hoist_global_options(args[i + 1 :], command)
                args = [*args[:i], *moved, args[i], *kept]
        return super().parse_args(ctx, args)

    def _command_for_hoisting(self, ctx: Any, name: str) -> Any:
        if name in _LAZY_APPS and name not in self.commands:
            return _load_lazy_app(name)
        return self.get_command(ctx, name)

    def list_commands(self, ctx: Any) -> list[str]:
        # Lazy apps join the listing; `config` goes last, after the sub-apps.
        names = super().list_commands(ctx) + [n for n in _LAZY_APPS if n not in self.commands]
        return sorted(names, key=lambda n: n == "config")

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in _LAZY_APPS:
            return super().get_command(ctx, cmd_name)
        # A stand-in for help listings; resolve_command loads the real one.
        return TyperGroup(name=cmd_name, help=_LAZY_APPS[cmd_name][2])

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and args[0] in _LAZY_APPS and args[0] not in self.commands:
            return args[0], _load_lazy_app(args[0]), args[1:]
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:
                raise
            state = ctx.find_object(State) or State()
            if state.verbose:
                traceback.print_exc(file=sys.stderr)
            from rich.text import Text

            state.err.print(Text(f"error: {exc}", style="bold red"), soft_wrap=True)
            raise typer.Exit(code) from None


def _load_lazy_app(name: str) -> Any:
    module_name, attr, _ = _LAZY_APPS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module of our own means "not available"; anything else is a bug.
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise CLIError(
                f"`rag-papers {name}` is not available: {module_name} is missing from this build"
            ) from None
        raise
    command = typer.main.get_command(getattr(module, attr))
    command.name = name
    return command


app = typer.Typer(
    cls=_RootGroup,
    name="rag-papers",
    help="Question answering over scientific paper abstracts, with checked citations.",
    epilog="Global options may also follow the command: rag-papers ingest FILE --index-dir "
    "DIR.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    pretty_exceptions_enable=False,  # plain tracebacks; and locals (keys!) never printed
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(papers_app, name="papers")
for _command in (ingest, stats, search, ask, chat, serve):
    app.command()(_command)
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rag-papers {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="PATH",
            help="TOML settings file (default: $RAG_PAPERS_CONFIG, else the user's "
            "config.toml: see `rag-papers config path`).",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", metavar="NAME", help="Bundled preset, e.g. offline, openai."),
    ] = None,
    index_dir: Annotated[
        Path | None,
        typer.Option(
            "--index-dir", metavar="DIR", help="Index directory (default: <data_dir>/index)."
        ),
    ] = None,
    chroma_url: Annotated[
        str | None,
        typer.Option("--chroma-url", metavar="URL", help="Use a Chroma server (chroma run)."),
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", metavar="NAME", help="Chroma collection name.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Log more; show tracebacks on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Question answering over scientific paper abstracts, with checked citations."""
    del version  # handled by its eager callback, before any command
    ctx.obj = State(
        config=config,
        preset=preset,
        index_dir=index_dir,
        chroma_url=chroma_url,
        collection=collection,
        verbose=verbose,
    )
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``rag-papers``)."""
    app(args=list(argv) if argv is not None else None, prog_name="rag-papers")


if __name__ == "__main__":  # pragma: no cover
    main()
