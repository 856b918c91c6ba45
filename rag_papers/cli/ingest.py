"""``rag-papers ingest``: add papers from files, with a progress bar on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rag_papers.cli.options import FieldOpt, FormatOpt, JsonOpt, parse_fields
from rag_papers.cli.state import CLIError, current_state, is_user_error, open_qa, print_json

__all__ = ["ingest"]

_STAGES = {"embed": "embedding chunks", "bm25": "building the BM25 index"}


def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Files of papers.")],
    fmt: FormatOpt = None,
    field_map: FieldOpt = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Re-embed everything into a new index beside the old one, then switch to it "
            "(the old index answers until then, and survives any failure).",
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any record was rejected (the rest is kept).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add papers from files to the index; unchanged papers are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rag_papers.terminal.render import render_ingest_report

    state = current_state(ctx)
    settings = state.settings
    fields = parse_fields(field_map or [])
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=state.err,
        transient=True,
        disable=json_out,
    )
    with open_qa(state) as qa, progress:
        # PaperQA reads every file before it opens the index: a bad file stops the ingest
        # before anything is written; --rebuild builds beside the old index and switches last.
        task = progress.add_task("reading files", total=len(paths))
        reading: list[Path] = []
        writing = False

        def on_file(path: Path) -> None:
            if reading:
                progress.advance(task)
            reading.append(path)
            progress.update(task, description=f"reading {path.name}")

        def on_progress(stage: str, done: int, total: int) -> None:
            nonlocal writing
            writing = True
            progress.update(
                task, description=_STAGES.get(stage, stage), completed=done, total=total
            )

        try:
            report = qa.ingest(
                paths,
                format=fmt,
                fields=fields,
                rebuild=rebuild,
                on_file=on_file,
                progress=on_progress,
            )
        except ValueError as exc:
            if writing or is_user_error(exc):
                raise
            # A --field mapping that does not apply to the format of the file being read.
            raise CLIError(f"{reading[-1] if reading else paths[0]}: {exc}") from None
        location = qa.location
    if json_out:
        print_json(report.to_dict())
    else:
        render_ingest_report(state.out, report)
        state.out.print(f"index: {location} (collection {settings.collection})", style="dim")
    if strict and report.rejected:
        raise typer.Exit(1)
