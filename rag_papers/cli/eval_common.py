"""What the ``rag-papers eval`` commands share: consoles, settings, the user-error guard,
--fail-under thresholds and progress bars. Imports stay inside the functions so
``rag-papers eval --help`` loads none of the harness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag_papers.cli.state import EXIT_INPUT, get_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from rag_papers import Settings

__all__ = [
    "FailUnderOpt",
    "check_thresholds",
    "corpus_file",
    "err_console",
    "eval_settings",
    "ingest_progress",
    "out_console",
    "parse_thresholds",
    "progress_bar",
    "require_eval_extra",
    "user_errors",
]

FailUnderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-under",
        metavar="METRIC=VALUE",
        help="Exit 1 when METRIC is worse than VALUE (below it; above it for latency, tokens "
        "and cost). TYPE:METRIC=VALUE checks one question type. Repeatable.",
    ),
]


def err_console() -> Console:
    """Progress, warnings and errors (markup on: our own messages only)."""
    from rag_papers.terminal.console import make_console

    return make_console(stderr=True, markup=True)


def out_console() -> Console:
    from rag_papers.terminal.console import make_console

    return make_console(markup=True)


def require_eval_extra(command: str) -> None:
    """Stop with one line naming the install command when the eval extra is missing."""
    from rich.text import Text

    from rag_papers.evaluation import EVAL_EXTRA_INSTALL, missing_eval_modules

    if missing := missing_eval_modules():
        message = (
            f"error: `rag-papers eval {command}` needs the eval extra "
            f"({', '.join(missing)} not installed): {EVAL_EXTRA_INSTALL}"
        )
        err_console().print(Text(message, style="bold red"), soft_wrap=True)
        raise typer.Exit(EXIT_INPUT)


def eval_settings(ctx: typer.Context) -> Settings:
    """The Settings of the global options (``rag-papers --index-dir ... eval run``); with
    the eval app invoked on its own, a root ``obj`` dict may carry them, else the defaults.
    The eval libraries' own folders (ir_datasets, matplotlib) go under <data_dir>/cache."""
    from rag_papers.evaluation import prepare_eval_environment

    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("settings") is not None:
        settings: Settings = obj["settings"]
    else:
        settings = get_settings(ctx)
    prepare_eval_environment(settings.data_dir / "cache")
    return settings


@contextmanager
def user_errors() -> Iterator[None]:
    """Problems a user can fix (bad dataset, BEIR folder, missing file): one red line on
    stderr, exit 3 (input)."""
    from rag_papers.evaluation import BeirError, DatasetError

    try:
        yield
    except (DatasetError, BeirError, FileNotFoundError) as exc:
        from rich.text import Text

        err_console().print(Text(f"error: {exc}", style="bold red"), soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from None


def parse_thresholds(specs: list[str] | None) -> list[Any]:
    """--fail-under values as thresholds; a malformed one is a usage error (exit 2)."""
    from rag_papers.evaluation import parse_thresholds as parse

    try:
        return list(parse(specs or []))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fail-under") from None


def check_thresholds(summary: dict[str, Any], thresholds: list[Any], console: Console) -> None:
    """Print every threshold the run misses and exit 1 if there is one."""
    from rag_papers.evaluation import check_thresholds as check

    problems = check(summary, thresholds)
    for p in problems:
        console.print(f"[bold red]fail-under:[/] {p}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def progress_bar(console: Console) -> Progress:
    """A transient progress bar with elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def ingest_progress(progress: Progress, task: Any) -> Callable[[str, int, int], None]:
    """A ``PaperQA.ingest`` progress callback that drives ``task`` of ``progress``."""
    stages = {"embed": "embedding the corpus", "bm25": "building the BM25 index"}

    def update(stage: str, done: int, total: int) -> None:
        name = stage.split(":", 1)[-1]
        progress.update(task, description=stages.get(name, name), completed=done, total=total)

    return update


def corpus_file(path: Path) -> tuple[Path, str | None]:
    """A corpus to ingest and its format: a BEIR folder means its corpus.jsonl (beir)."""
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise FileNotFoundError(f"{path}: a folder must be a BEIR folder with corpus.jsonl")
        return path / "corpus.jsonl", "beir"
    if path.name == "corpus.jsonl" and (path.parent / "queries.jsonl").is_file():
        return path, "beir"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    return path, None
