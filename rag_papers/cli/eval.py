"""`rag-papers eval ...`: run a dataset, compare two runs, BEIR retrieval benchmarks.

Mounted lazily by rag_papers.cli.app; imports stay inside the commands so `--help` is instant.
Exit codes: 0 fine, 1 a --fail-under threshold (or --fail-on-regression) was missed or a
question failed with an error, 2 a usage problem (bad dataset, folder, option).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers.core.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="Evaluate retrieval and answers: run a question set, compare runs, BEIR benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FailUnderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-under",
        metavar="METRIC=VALUE",
        help="Exit 1 when METRIC is worse than VALUE (below it; above it for latency, tokens "
        "and cost). TYPE:METRIC=VALUE checks one question type. Repeatable.",
    ),
]


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _out() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _settings(ctx: typer.Context) -> Settings:
    """The Settings of the global options (rag_papers.cli.app), else load_settings()."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and obj.get("settings") is not None:
        return obj["settings"]  # type: ignore[no-any-return]
    try:
        from rag_papers.cli.app import get_settings
    except ImportError:
        from rag_papers.core.settings import load_settings

        return load_settings()
    return get_settings(ctx)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Problems a user can fix: one red line on stderr, exit 2."""
    from rag_papers.evaluation.beir import BeirError
    from rag_papers.evaluation.datasets import DatasetError

    try:
        yield
    except (DatasetError, BeirError, FileNotFoundError) as exc:
        _err().print(f"[bold red]error:[/] {exc}", soft_wrap=True, markup=True)
        raise typer.Exit(2) from None


def _thresholds(specs: list[str] | None) -> list[Any]:
    from rag_papers.evaluation.compare import parse_thresholds

    try:
        return parse_thresholds(specs or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fail-under") from None


def _check(summary: dict[str, Any], thresholds: list[Any], console: Console) -> None:
    from rag_papers.evaluation.compare import check_thresholds

    problems = check_thresholds(summary, thresholds)
    for p in problems:
        console.print(f"[bold red]fail-under:[/] {p}", soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def _progress(console: Console) -> Any:
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


def _ingest_progress(progress: Any, task: Any) -> Callable[[str, int, int], None]:
    stages = {"embed": "embedding the corpus", "bm25": "building the BM25 index"}

    def update(stage: str, done: int, total: int) -> None:
        name = stage.split(":", 1)[-1]
        progress.update(task, description=stages.get(name, name), completed=done, total=total)

    return update


def _corpus_file(path: Path) -> tuple[Path, str | None]:
    """A corpus to ingest: a BEIR folder means its corpus.jsonl (format beir)."""
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise FileNotFoundError(f"{path}: a folder must be a BEIR folder with corpus.jsonl")
        return path / "corpus.jsonl", "beir"
    if path.name == "corpus.jsonl" and (path.parent / "queries.jsonl").is_file():
        return path, "beir"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file")
    return path, None


def _print_metrics(summary: Any, console: Console) -> None:
    from rich.table import Table

    from rag_papers.evaluation.reports import _direction, _fmt

    m = summary.metrics
    types = list(m.per_type)
    table = Table(title=f"{summary.dataset}: {summary.n_answered}/{summary.n_questions} answered")
    table.add_column("metric")
    table.add_column("overall", justify="right")
    for t in types:
        table.add_column(t, justify="right")
    for key, value in m.overall.items():
        table.add_row(
            f"{key} {_direction(key)}",
            _fmt(value, key),
            *(_fmt(m.per_type[t].get(key), key) for t in types),
        )
    console.print(table)


@app.command("run")
def _run(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", help="Question set (JSONL).")],
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            metavar="PATH",
            help="Ingest this corpus (file, or BEIR folder) into an index of its own first "
            "(<data_dir>/beir/<name> for BEIR, else <data_dir>/eval-index/...).",
        ),
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option("--llm", metavar="SPEC", help="'extractive', 'openai:MODEL', 'gguf:PATH'."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Run folder (default eval/reports/<dataset>-<mode>-<date>); reused to resume.",
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("-j", "--jobs", min=1, help="Questions in parallel.")] = 1,
    k: Annotated[
        int | None, typer.Option("-k", "--top-k", min=1, help="Papers per answer.")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", metavar="SPEC", help="LLM judge for faithfulness/correctness."),
    ] = None,
    judge_base_url: Annotated[
        str | None,
        typer.Option("--judge-base-url", metavar="URL", help="OpenAI-compatible URL of the judge."),
    ] = None,
    index_dir: Annotated[
        Path | None, typer.Option("--index-dir", metavar="DIR", help="Index to use/fill.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N questions.")
    ] = None,
    fail_under: FailUnderOpt = None,
) -> None:
    """Ask every question of DATASET with the engine, score it, and write the reports."""
    thresholds = _thresholds(fail_under)
    err, console = _err(), _out()
    with _user_errors():
        from rag_papers.engine.qa import PaperQA
        from rag_papers.evaluation.datasets import load_dataset
        from rag_papers.evaluation.runner import dedicated_index_dir, default_out_dir, run_eval

        data = load_dataset(dataset).head(limit)
        settings = _settings(ctx)
        source: tuple[Path, str | None] | None = None
        if corpus is not None:
            source = _corpus_file(corpus)
            target = index_dir or dedicated_index_dir(settings, corpus)
            settings = settings.model_copy(update={"index_dir": target, "chroma_url": None})
        elif index_dir is not None:
            settings = settings.model_copy(update={"index_dir": index_dir})
        qa = PaperQA(settings, notify=lambda m: err.print(f"[dim]{m}[/]"))
        judge_backend = None
        if judge:
            from rag_papers.answering.llms import make_backend

            if judge == "extractive":
                raise typer.BadParameter("a judge must be an LLM", param_hint="--judge")
            jset = (
                settings
                if not judge_base_url
                else settings.model_copy(update={"openai_base_url": judge_base_url})
            )
            judge_backend = make_backend(jset, judge)
        run_dir = out or default_out_dir(dataset, llm or settings.llm)
        with _progress(err) as progress:
            if source is not None:
                task = progress.add_task(f"ingesting {source[0].name}", total=None)
                report = qa.ingest(
                    [source[0]], format=source[1], progress=_ingest_progress(progress, task)
                )
                progress.remove_task(task)
                err.print(
                    f"[dim]index {settings.resolved_index_dir}: {report.added} added, "
                    f"{report.updated} updated, {report.unchanged} unchanged[/]"
                )
            task = progress.add_task("asking", total=len(data))

            def on_progress(done: int, total: int, row: Any) -> None:
                progress.update(task, completed=done, total=total)

            summary = run_eval(
                qa,
                data,
                out_dir=run_dir,
                jobs=jobs,
                llm=llm,
                k=k,
                judge=judge_backend,
                progress=on_progress,
            )
        qa.index.close()
    _print_metrics(summary, console)
    for w in summary.warnings[:10]:
        err.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    console.print(f"reports: {run_dir}/report.md, report.html, summary.json, results.jsonl")
    _check(summary.model_dump(mode="json"), thresholds, err)
    if summary.n_errors:
        err.print(
            f"[bold red]error:[/] {summary.n_errors} question(s) failed (see the failures "
            "table); run the same command again to retry them"
        )
        raise typer.Exit(1)


@app.command("compare")
def _compare(
    run_a: Annotated[Path, typer.Argument(metavar="RUN_A", help="Baseline run folder.")],
    run_b: Annotated[Path, typer.Argument(metavar="RUN_B", help="New run folder.")],
    fail_under: FailUnderOpt = None,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 1 when any metric regressed.")
    ] = False,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Score drop (0-1 metrics) still not a regression.")
    ] = 0.01,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Metric deltas B - A, with regressions flagged (latency up is worse)."""
    import json

    from rag_papers.evaluation.compare import compare, render_comparison
    from rag_papers.evaluation.runner import read_summary

    thresholds = _thresholds(fail_under)
    err = _err()
    for run in (run_a, run_b):
        if not (run / "summary.json").is_file() and not run.is_file():
            err.print(f"[bold red]error:[/] {run}: no summary.json (not a run folder)")
            raise typer.Exit(2)
    result = compare(run_a, run_b, tolerance=tolerance)
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render_comparison(result, _out())
    _check(read_summary(run_b), thresholds, err)
    if fail_on_regression and result.regressions:
        err.print("[bold red]regression:[/] " + ", ".join(d.key for d in result.regressions))
        raise typer.Exit(1)


@app.command("beir")
def _beir(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="BEIR folder.")],
    split: Annotated[str, typer.Option("--split", help="qrels/<split>.tsv")] = "test",
    mode: Annotated[
        list[str] | None,
        typer.Option("--mode", help="dense, bm25, hybrid (repeatable; default all three)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Where the JSON/Markdown report goes.")
    ] = Path("eval/reports"),
    index_dir: Annotated[
        Path | None,
        typer.Option("--index-dir", metavar="DIR", help="Default <data_dir>/beir/<name>."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Papers retrieved per query.")] = 100,
    tune: Annotated[
        bool,
        typer.Option("--tune", help="Grid-search dense_weight (weighted) and rrf_k (rrf)."),
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N queries.")
    ] = None,
) -> None:
    """Retrieval on a BEIR dataset per mode: nDCG@10, Recall@100, MRR@10 (ranx)."""
    import json

    from rag_papers.evaluation.beir import MODES

    modes = list(dict.fromkeys(mode or MODES))
    if bad := [m for m in modes if m not in MODES]:
        raise typer.BadParameter(
            f"{', '.join(bad)}: choose from {', '.join(MODES)}", param_hint="--mode"
        )
    err, console = _err(), _out()
    with _user_errors():
        from rag_papers.engine.qa import PaperQA
        from rag_papers.evaluation.beir import (
            beir_settings,
            ingest_beir,
            load_beir,
            run_beir,
            tune_fusion,
            write_beir_report,
        )

        data = load_beir(folder, split).head(limit)
        settings = beir_settings(_settings(ctx), folder, index_dir)
        qa = PaperQA(settings, notify=lambda m: err.print(f"[dim]{m}[/]"))
        tasks: dict[str, Any] = {}
        with _progress(err) as progress:

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    label = stage.replace("ingest:", "ingest: ")
                    tasks[stage] = progress.add_task(label, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            if tune:
                ingest_beir(qa, data, progress=lambda s, d, n: on_progress(f"ingest:{s}", d, n))
                result = tune_fusion(qa, data, k=k, progress=on_progress)
            else:
                bres = run_beir(qa, data, modes=modes, k=k, progress=on_progress)
        qa.index.close()
    from rich.table import Table

    if tune:
        table = Table(title=f"fusion grid on {data.name} {split} ({len(data.queries)} queries)")
        metrics = [c for c in result.best if c not in ("fusion", "dense_weight", "rrf_k")]
        for col in ("fusion", "setting", *metrics):
            table.add_column(col, justify="left" if col in ("fusion", "setting") else "right")
        for row in result.grid:
            setting = (
                f"dense_weight={row['dense_weight']}"
                if row["fusion"] == "weighted"
                else f"rrf_k={row['rrf_k']}"
            )
            style = "bold green" if row is result.best else None
            table.add_row(row["fusion"], setting, *(f"{row[m]:.4f}" for m in metrics), style=style)
        console.print(table)
        for name, vals in result.branches.items():
            console.print(f"{name} alone: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()))
        best = result.best
        setting = (
            f'fusion = "weighted"\ndense_weight = {best["dense_weight"]}'
            if best["fusion"] == "weighted"
            else f'fusion = "rrf"\nrrf_k = {best["rrf_k"]}'
        )
        console.print(f"best by {result.metric}: {best[result.metric]:.4f} with\n{setting}")
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"beir-{data.name}-{split}-tune.json"
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"grid: {path}")
        return
    json_path, md_path = write_beir_report(bres, out)
    table = Table(title=f"BEIR {data.name} {split}: {len(data.queries)} queries, k={k}")
    table.add_column("mode")
    for m in ("ndcg@10", "recall@100", "mrr@10", "seconds"):
        table.add_column(m, justify="right")
    for name, vals in bres.modes.items():
        table.add_row(
            name,
            *(f"{vals[m]:.3f}" for m in ("ndcg@10", "recall@100", "mrr@10")),
            f"{bres.seconds[name]:.1f}",
        )
    console.print(table)
    console.print(f"reports: {json_path}, {md_path}")


def main() -> None:  # python -m rag_papers.cli.eval
    app()


if __name__ == "__main__":
    main()
