"""The ``rag-papers`` command line: a thin typer + rich layer over ``rag_papers.PaperQA``.

This module holds the root app: the global options (one Settings, built lazily and kept in
the typer context as ``State``), the mapping of errors to exit codes, the lazily mounted
sub-apps and ``main``. The commands live beside it (ingest, papers, query, serve, config,
eval). Nothing heavy is imported at module level (no Chroma, llama-index, onnxruntime, numpy,
nor the engine), so ``--help`` answers at once; each command imports what it uses.

Errors a user can fix (bad settings, files, index, LLM, prompt) are one red line on stderr
and exit code 2; ``-v`` shows the traceback too.
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
from rag_papers.cli.config import config_cmd
from rag_papers.cli.ingest import ingest
from rag_papers.cli.papers import papers_app, stats
from rag_papers.cli.query import ask, search
from rag_papers.cli.serve import chat, serve
from rag_papers.cli.state import CLIError, State, get_settings, is_user_error

__all__ = ["CLIError", "State", "app", "get_settings", "main"]


# --- the root group: error handling and lazily mounted sub-apps ----------------------------
# name -> (module, attribute, one-line help). The module is imported only when the command
# runs (or completes), never for `rag-papers --help`.
_LAZY_APPS: dict[str, tuple[str, str, str]] = {
    "eval": (
        "rag_papers.cli.eval",
        "app",
        "Evaluate retrieval and answers (run, compare, beir).",
    ),
}


class _RootGroup(TyperGroup):
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
            if not is_user_error(exc):
                raise
            state = ctx.find_object(State) or State()
            if state.verbose:
                traceback.print_exc(file=sys.stderr)
            from rich.text import Text

            state.err.print(Text(f"error: {exc}", style="bold red"), soft_wrap=True)
            raise typer.Exit(2) from None


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
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # plain tracebacks; and locals (keys!) never printed
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(papers_app, name="papers")
for _command in (ingest, stats, search, ask, chat, serve):
    app.command()(_command)
app.command("config")(config_cmd)


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
            "--config", metavar="PATH", help="TOML settings file (default: $RAG_PAPERS_CONFIG)."
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
