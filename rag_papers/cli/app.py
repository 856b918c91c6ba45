"""The ``rag-papers`` command line: a thin typer + rich layer over the library.

Nothing heavy is imported at module level (no Chroma, llama-index, onnxruntime, numpy, nor
the engine/index modules), so ``--help`` answers at once; each command imports what it uses.
The global options build one Settings, lazily, kept in the typer context (``State``).
Errors a user can fix (bad settings, files, index, LLM, prompt) are one red line on stderr
and exit code 2; ``-v`` shows the traceback too.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from rag_papers import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers.core.settings import Settings
    from rag_papers.engine.qa import PaperQA
    from rag_papers.retrieval.retriever import Filters
    from rag_papers.store.catalog import Catalog

__all__ = ["CLIError", "State", "app", "get_settings", "main"]

ModeName = Literal["dense", "bm25", "hybrid"]


class CLIError(Exception):
    """A usage problem found by the CLI itself (unknown paper id, missing component)."""


# Exceptions that mean "the user must change something", by (module, class name). Matched
# through sys.modules: if one was raised its module is loaded, and checking needs no import.
_USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("rag_papers.cli.app", "CLIError"),
    ("rag_papers.core.settings", "SettingsError"),
    ("rag_papers.ingest.loaders.common", "LoaderError"),
    ("rag_papers.store.index", "IndexMismatchError"),
    ("rag_papers.store.index", "StoreUnavailableError"),
    ("rag_papers.answering.llms", "LLMError"),
    ("rag_papers.answering.prompts", "PromptError"),
)


def _is_user_error(exc: BaseException) -> bool:
    for module_name, class_name in _USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


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
            from rag_papers.core.settings import load_settings

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


def _state(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    if state is None:  # a sub-app invoked on its own (tests, embedding)
        state = ctx.ensure_object(State)
    return state


def get_settings(ctx: typer.Context) -> Settings:
    """The Settings the global options describe, for commands mounted under this app
    (``rag-papers eval ...``): ``get_settings(ctx)`` inside any command."""
    return _state(ctx).settings


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
            if not _is_user_error(exc):
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
papers_app = typer.Typer(
    help="List and show the papers in the index (fast: reads the local catalog).",
    no_args_is_help=True,
)
app.add_typer(papers_app, name="papers")


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
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Question answering over scientific paper abstracts, with checked citations."""
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


# --- helpers -------------------------------------------------------------------------------
def _qa(state: State) -> PaperQA:
    from rag_papers.engine.qa import PaperQA

    return PaperQA(state.settings, notify=state.notify)


def _filters(year: str | None, author: str | None, category: str | None) -> Filters | None:
    from rag_papers.retrieval.retriever import Filters

    try:
        year_min, year_max = Filters.parse_years(year)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--year") from None
    filters = Filters(year_min=year_min, year_max=year_max, author=author, category=category)
    return None if filters.empty else filters


def _print_json(data: Any) -> None:
    # Plain print, not rich: no wrapping or colour may touch machine-readable output.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _parse_fields(pairs: Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    fields: dict[str, str] = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise typer.BadParameter(f"{pair!r}: expected OURS=THEIRS", param_hint="--field")
        fields[ours.strip()] = theirs.strip()
    from rag_papers.ingest.loaders.records import resolve_fields

    try:
        resolve_fields(fields)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--field") from None
    return fields


# Options shared by search and ask.
KOpt = Annotated[int | None, typer.Option("-k", "--top-k", min=1, help="Papers to retrieve.")]
ModeOpt = Annotated[
    ModeName | None, typer.Option("--mode", help="Retrieval mode (default: from settings).")
]
YearOpt = Annotated[
    str | None,
    typer.Option("--year", metavar="FROM:TO", help="Year or range: 2024, 2023:2025, 2023:."),
]
AuthorOpt = Annotated[
    str | None, typer.Option("--author", metavar="NAME", help="Author name contains NAME.")
]
CategoryOpt = Annotated[
    str | None, typer.Option("--category", metavar="C", help="Exact category, e.g. cs.CL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
LlmOpt = Annotated[
    str | None,
    typer.Option(
        "--llm",
        metavar="SPEC",
        help="'extractive', 'openai:MODEL' or 'gguf:PATH' (default: settings).",
    ),
]


# --- ingest --------------------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Files of papers.")],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            metavar="F",
            help="hf, json, jsonl, csv, bibtex, atom or beir (default: detected per file).",
        ),
    ] = None,
    field_map: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="OURS=THEIRS",
            help="Read our field from another key (json/jsonl/csv), e.g. abstract=summary.",
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Drop the index first and re-embed everything.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any record was rejected (the rest is kept).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add papers from files to the index; unchanged papers are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rag_papers.store.index import PaperIndex, load_files
    from rag_papers.terminal.render import render_ingest_report

    state = _state(ctx)
    settings = state.settings
    fields = _parse_fields(field_map or [])
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=state.err,
        transient=True,
        disable=json_out,
    )
    with progress:
        # Every file is read before the index is opened: a bad file stops the ingest before
        # anything is written, and before --rebuild drops the old index.
        task = progress.add_task("reading files", total=len(paths))
        reading: list[Path] = []

        def on_file(path: Path) -> None:
            if reading:
                progress.advance(task)
            reading.append(path)
            progress.update(task, description=f"reading {path.name}")

        try:
            papers, report = load_files(paths, format=fmt, fields=fields, on_file=on_file)
        except ValueError as exc:  # a --field mapping that does not apply to this format
            raise CLIError(f"{reading[-1] if reading else paths[0]}: {exc}") from None

        stages = {"embed": "embedding chunks", "bm25": "building the BM25 index"}

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stages.get(stage, stage), completed=done, total=total)

        index = PaperIndex(settings, rebuild=rebuild)
        try:
            report.merge(index.ingest(papers, progress=on_progress))
        finally:
            index.close()
    if json_out:
        _print_json(report.to_dict())
    else:
        render_ingest_report(state.out, report)
        state.out.print(f"index: {index.location} (collection {settings.collection})", style="dim")
    if strict and report.rejected:
        raise typer.Exit(1)


# --- papers --------------------------------------------------------------------------------
def _open_catalog(state: State) -> tuple[Catalog, Callable[[], None]]:
    """The catalog to read, and how to close it.

    Fast path: the local SQLite catalog, read directly (no Chroma import). With a Chroma
    server, or before any index exists, the engine opens (and syncs, or first fills) it.
    """
    settings = state.settings
    path = settings.resolved_index_dir / "sidecar" / settings.collection / "catalog.sqlite"
    if not settings.chroma_url and path.is_file():
        from rag_papers.store.catalog import Catalog

        catalog = Catalog(path)
        if catalog.count():
            return catalog, catalog.close
        catalog.close()
    index = _qa(state).index
    return index.catalog, index.close


@papers_app.command("list")
def papers_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Papers to show.")] = 20,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Papers to skip.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """List the papers in the index."""
    from rag_papers.terminal.render import render_papers

    state = _state(ctx)
    catalog, close = _open_catalog(state)
    try:
        total = catalog.count()
        papers = catalog.list(limit=limit, offset=offset)
    finally:
        close()
    if json_out:
        data = {"total": total, "offset": offset, "papers": [p.to_dict() for p in papers]}
        _print_json(data)
    else:
        render_papers(state.out, papers, total=total, offset=offset)


@papers_app.command("show")
def papers_show(
    ctx: typer.Context,
    paper_id: Annotated[str, typer.Argument(metavar="ID", help="Paper id (see papers list).")],
    json_out: JsonOpt = False,
) -> None:
    """Show one paper in full."""
    from rag_papers.terminal.render import render_paper

    state = _state(ctx)
    catalog, close = _open_catalog(state)
    try:
        paper = catalog.get(paper_id)
    finally:
        close()
    if paper is None:
        raise CLIError(f"no paper with id {paper_id}")
    if json_out:
        _print_json(paper.to_dict())
    else:
        render_paper(state.out, paper)


# --- stats ---------------------------------------------------------------------------------
@app.command()
def stats(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Papers, chunks, embedding model, store location and size of the index."""
    from rag_papers.store.index import PaperIndex
    from rag_papers.terminal.render import render_stats

    state = _state(ctx)
    index = PaperIndex(state.settings)
    try:
        data = index.stats()
    finally:
        index.close()
    if json_out:
        _print_json(data)
    else:
        render_stats(state.out, data)


# --- search / ask --------------------------------------------------------------------------
@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Papers to show.")] = 10,
    mode: ModeOpt = None,
    year: YearOpt = None,
    author: AuthorOpt = None,
    category: CategoryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find papers: rank, score, year, title and each paper's best-matching sentence."""
    from rag_papers.retrieval.retriever import best_sentences
    from rag_papers.terminal.render import render_search

    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    state = _state(ctx)
    filters = _filters(year, author, category)
    qa = _qa(state)
    index = qa.index
    qvec = index.embedder.embed_query(query)
    results = qa.retriever.retrieve(query, k=k, mode=mode, filters=filters, query_vector=qvec)
    sentences = best_sentences(qvec, results, index.embedder)
    index.close()
    if json_out:
        rows = []
        for r, best in zip(results, sentences, strict=True):
            row = r.to_dict()
            row["authors"] = r.paper.authors
            row["sentence"] = best[0][0] if best else None
            row["sentence_score"] = round(best[0][1], 6) if best else None
            rows.append(row)
        _print_json(rows)
    else:
        render_search(state.out, results, sentences)


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question.")],
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

    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    state = _state(ctx)
    filters = _filters(year, author, category)
    qa = _qa(state)
    streamed = not (no_stream or json_out)
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


# --- chat / serve --------------------------------------------------------------------------
def _import_component(module_name: str, attr: str, what: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise CLIError(f"{what} is not available: {module_name} is missing") from None
        raise
    return getattr(module, attr)


@app.command()
def chat(ctx: typer.Context, llm: LlmOpt = None, k: KOpt = None) -> None:
    """Interactive chat: follow-up questions, history, commands (/help inside)."""
    run_repl = _import_component("rag_papers.chat.repl", "run_repl", "the chat")
    state = _state(ctx)
    run_repl(_qa(state), state.settings, llm=llm, k=k)


@app.command()
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
) -> None:
    """Serve the HTTP API (ask, stream, search, papers, ingest)."""
    server_main = _import_component("rag_papers.server.app", "serve", "the HTTP server")
    state = _state(ctx)
    server_main(state.settings, host=host, port=port, api_key=api_key)


# --- config --------------------------------------------------------------------------------
def _setting_sources(state: State, settings: Settings) -> dict[str, str]:
    """Where each setting's value came from, by the precedence load_settings applies:
    option > environment > config file > preset > default."""
    from rag_papers.core.settings import preset_values, read_config_file

    sources = dict.fromkeys(type(settings).model_fields, "default")
    config = state.config or os.environ.get("RAG_PAPERS_CONFIG") or None
    file_data: dict[str, Any] = read_config_file(Path(config), "config file") if config else {}
    preset = state.preset or file_data.get("preset") or os.environ.get("RAG_PAPERS_PRESET")
    if preset:
        for key in preset_values(preset):
            sources[key] = f"preset {preset}"
    for key in file_data:
        if key in sources:
            sources[key] = f"config {config}"
    env = {k.upper(): k for k in os.environ}
    for name, info in type(settings).model_fields.items():
        names = [f"RAG_PAPERS_{name.upper()}"]
        alias = info.validation_alias
        names += [c.upper() for c in getattr(alias, "choices", []) if isinstance(c, str)]
        if found := next((env[n] for n in names if n in env), None):
            sources[name] = f"env {found}"
    for name in ("index_dir", "chroma_url", "collection"):
        if getattr(state, name) is not None:
            sources[name] = f"option --{name.replace('_', '-')}"
    return sources


def _mask_url(value: Any) -> Any:
    # A URL may carry a password (https://user:pass@host): never print it.
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        cred, _, host = rest.rpartition("@")
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:****@{host}"
    return value


@app.command("config")
def config_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    from rag_papers.terminal.render import render_settings

    state = _state(ctx)
    settings = state.settings
    values = {k: _mask_url(v) for k, v in settings.model_dump(mode="json").items()}
    sources = _setting_sources(state, settings)
    derived = {
        "resolved_index_dir": str(settings.resolved_index_dir),
        "fingerprint": settings.fingerprint(),
    }
    if json_out:
        _print_json({"settings": values, "sources": sources, **derived})
        return
    rows = [
        (
            name,
            json.dumps(v) if isinstance(v, dict | list) else "—" if v is None else str(v),
            sources.get(name, ""),
        )
        for name, v in values.items()
    ]
    rows += [(name, value, "derived") for name, value in derived.items()]
    render_settings(state.out, rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``rag-papers``)."""
    app(args=list(argv) if argv is not None else None, prog_name="rag-papers")


if __name__ == "__main__":  # pragma: no cover
    main()
