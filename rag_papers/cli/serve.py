"""``rag-papers chat`` and ``rag-papers serve``: launchers of the other front ends.

The chat REPL and the HTTP server are imported only when their command runs, and a build
without them says so in one line instead of a traceback.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer

from rag_papers.cli.options import AnswerStyleOpt, KOpt, LlmOpt
from rag_papers.cli.state import CLIError, as_input_error, current_state, open_qa

__all__ = ["chat", "import_component", "serve"]


def import_component(module_name: str, attr: str, what: str) -> Any:
    """``module_name.attr``, or a CLIError when that module is not part of this build."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only our own module missing means "not available"; a missing dependency is a bug.
        if exc.name == module_name:
            raise CLIError(f"{what} is not available: {module_name} is missing") from None
        raise
    return getattr(module, attr)


def chat(
    ctx: typer.Context,
    llm: LlmOpt = None,
    k: KOpt = None,
    answer_style: AnswerStyleOpt = None,
) -> None:
    """Interactive chat: follow-up questions, history, commands (/help inside)."""
    run_repl = import_component("rag_papers.chat.repl", "run_repl", "the chat")
    state = current_state(ctx)
    if answer_style is not None:
        state.overrides["answer_style"] = answer_style
    with open_qa(state) as qa:
        with as_input_error():  # a bad spec, key or model file: before the first question
            qa.backend(llm)
        run_repl(qa, state.settings, llm=llm, k=k)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="Key clients must send (default: $RAG_PAPERS_SERVER_API_KEY).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes (up to 4 per CPU core). Each opens the index itself; "
            "the rate limit is shared among them.",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (ask, stream, search, papers, ingest)."""
    server_main = import_component("rag_papers.server.app", "serve", "the HTTP server")
    state = current_state(ctx)
    server_main(state.settings, host=host, port=port, api_key=api_key, workers=workers)
