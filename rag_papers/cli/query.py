"""``rag-papers search`` and ``rag-papers ask``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rag_papers.cli.options import (
    AuthorOpt,
    CategoryOpt,
    JsonOpt,
    KOpt,
    LlmOpt,
    ModeOpt,
    YearOpt,
    parse_filters,
)
from rag_papers.cli.state import current_state, open_qa, print_json

__all__ = ["ask", "read_text_argument", "search"]


def read_text_argument(value: str, what: str) -> str:
    """The argument itself, or standard input when it is '-' (``echo q | rag-papers ask -``)."""
    if value == "-":
        import sys

        value = sys.stdin.read()
    text = value.strip()
    if not text:
        raise typer.BadParameter(f"the {what.lower()} is empty", param_hint=what)
    return text


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for ('-': read standard input).")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Papers to show.")] = 10,
    mode: ModeOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find papers: rank, score, year, title and each paper's best-matching sentence."""
    from rag_papers.terminal.render import render_search

    query = read_text_argument(query, "QUERY")
    state = current_state(ctx)
    filters = parse_filters(year, author, category)
    with open_qa(state) as qa:
        results = qa.search(query, k=k, mode=mode, filters=filters, sentences=True)
    if json_out:
        rows: list[dict[str, Any]] = []
        for r in results:
            row = r.to_dict()
            row["authors"] = r.paper.authors
            row["sentence"] = r.best_sentence
            score = r.best_sentence_score
            row["sentence_score"] = None if score is None else round(score, 6)
            rows.append(row)
        print_json(rows)
    else:
        render_search(state.out, results)


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question ('-': read standard input).")],
    llm: LlmOpt = None,
    k: KOpt = None,
    mode: ModeOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    json_out: JsonOpt = False,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the answer when complete.")
    ] = False,
) -> None:
    """Answer a question from the papers, citing them; every citation is checked."""
    from rag_papers.terminal.render import render_answer, stream_writer

    question = read_text_argument(question, "QUESTION")
    state = current_state(ctx)
    filters = parse_filters(year, author, category)
    streamed = not (no_stream or json_out)
    with open_qa(state) as qa:
        answer = qa.ask(
            question,
            k=k,
            mode=mode,
            filters=filters,
            llm=llm,
            on_delta=stream_writer(state.out) if streamed else None,
        )
    if json_out:
        print(answer.model_dump_json(indent=2))
    else:
        render_answer(state.out, answer, streamed=streamed)
