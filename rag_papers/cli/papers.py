"""``rag-papers papers list|show`` and ``rag-papers stats``.

Paper listings go through PaperQA, which reads an embedded index's local catalog directly
(no Chroma, no embedding model) and opens the store only when it must.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rag_papers.cli.options import MAX_ROWS, JsonOpt
from rag_papers.cli.state import CLIError, current_state, hint_if_empty, open_qa, print_json

__all__ = ["papers_app", "papers_list", "papers_show", "stats"]

papers_app = typer.Typer(
    help="List and show the papers in the index (fast: reads the local catalog).",
    no_args_is_help=True,
)


@papers_app.command("list")
def papers_list(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=0, max=MAX_ROWS, help="Papers to show.")
    ] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, max=MAX_ROWS, help="Papers to skip.")
    ] = 0,
    json_out: JsonOpt = False,
) -> None:
    """List the papers in the index."""
    from rag_papers.terminal.render import render_papers

    state = current_state(ctx)
    with open_qa(state) as qa:
        page = qa.list_papers(limit=limit, offset=offset)
        if not page.total:
            hint_if_empty(state, qa)
    if json_out:
        print_json(
            {
                "total": page.total,
                "offset": page.offset,
                "papers": [p.to_dict() for p in page.papers],
            }
        )
    else:
        render_papers(state.out, page.papers, total=page.total, offset=page.offset)


@papers_app.command("show")
def papers_show(
    ctx: typer.Context,
    paper_id: Annotated[str, typer.Argument(metavar="ID", help="Paper id (see papers list).")],
    json_out: JsonOpt = False,
) -> None:
    """Show one paper in full."""
    from rag_papers.terminal.render import render_paper

    state = current_state(ctx)
    with open_qa(state) as qa:
        paper = qa.paper(paper_id)
    if paper is None:
        raise CLIError(f"no paper with id {paper_id}")
    if json_out:
        print_json(paper.to_dict())
    else:
        render_paper(state.out, paper)


def stats(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Papers, chunks, embedding model, store location and size of the index."""
    from rag_papers.terminal.render import render_stats

    state = current_state(ctx)
    with open_qa(state) as qa:
        data = qa.stats()
    if json_out:
        print_json(data)
    else:
        render_stats(state.out, data)
