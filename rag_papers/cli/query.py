"""``rag-papers search`` and ``rag-papers ask``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rag_papers.cli.options import (
    MAX_K,
    AnswerStyleOpt,
    AuthorOpt,
    CategoryOpt,
    JsonOpt,
    KOpt,
    LlmOpt,
    ModeOpt,
    YearOpt,
    parse_filters,
)
from rag_papers.cli.state import (
    as_input_error,
    current_state,
    hint_if_empty,
    open_qa,
    print_json,
)

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
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=MAX_K, help="Papers to show.")] = 10,
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
        if not results:
            hint_if_empty(state, qa)
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
    answer_style: AnswerStyleOpt = None,
    quotes: Annotated[
        bool,
        typer.Option(
            "--quotes",
            help="After the answer, each claim's verified quotes (source, field, characters) "
            "and the claims left out.",
        ),
    ] = False,
) -> None:
    """Answer a question from the papers, citing them; every citation is checked."""
    from rag_papers.terminal.render import render_answer, render_quotes, stream_writer

    question = read_text_argument(question, "QUESTION")
    state = current_state(ctx)
    if answer_style is not None:
        state.overrides["answer_style"] = answer_style
    filters = parse_filters(year, author, category)
    streamed = not (no_stream or json_out)
    with open_qa(state) as qa:
        with as_input_error():  # a bad spec, key or model file: configuration, not service
            qa.backend(llm)
        answer = qa.ask(
            question,
            k=k,
            mode=mode,
            filters=filters,
            llm=llm,
            on_delta=stream_writer(state.out) if streamed else None,
        )
        if answer.abstained and not answer.sources:
            hint_if_empty(state, qa)
    if json_out:
        print(answer.model_dump_json(indent=2))
        return
    render_answer(state.out, answer, streamed=streamed)
    if quotes:
        render_quotes(state.out, answer)
