"""``rag-papers eval run`` (ask a question set, score it, write reports) and
``rag-papers eval compare`` (metric deltas between two runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rag_papers import LLM_SPEC_HELP
from rag_papers.cli.eval_common import (
    FailUnderOpt,
    check_thresholds,
    corpus_file,
    err_console,
    eval_settings,
    ingest_progress,
    out_console,
    parse_thresholds,
    progress_bar,
    require_eval_extra,
    user_errors,
)
from rag_papers.cli.state import EXIT_INPUT

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = ["compare_cmd", "run"]


def _judge(settings: Settings, spec: str | None, base_url: str | None) -> Any:
    """The LLM judge of faithfulness/correctness, or None without --judge."""
    if not spec:
        return None
    from rag_papers.evaluation import make_judge

    try:
        return make_judge(settings, spec, base_url=base_url)
    except ValueError as exc:  # 'extractive' or a malformed spec
        raise typer.BadParameter(str(exc), param_hint="--judge") from None


def run(
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
        str | None, typer.Option("--llm", metavar="SPEC", help=f"{LLM_SPEC_HELP}.")
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
    from rag_papers import PaperQA
    from rag_papers.cli.eval_render import render_metrics

    require_eval_extra("run")
    thresholds = parse_thresholds(fail_under)
    err, console = err_console(), out_console()
    with user_errors():
        from rag_papers.evaluation import (
            dedicated_index_dir,
            default_out_dir,
            load_dataset,
            run_eval,
        )

        data = load_dataset(dataset).head(limit)
        settings = eval_settings(ctx)
        source: tuple[Path, str | None] | None = None
        if corpus is not None:
            source = corpus_file(corpus)
            target = index_dir or dedicated_index_dir(settings, corpus)
            settings = settings.model_copy(update={"index_dir": target, "chroma_url": None})
        elif index_dir is not None:
            settings = settings.model_copy(update={"index_dir": index_dir})
        judge_obj = _judge(settings, judge, judge_base_url)  # a bad spec stops before ingest
        with PaperQA(settings, notify=lambda m: err.print(f"[dim]{m}[/]")) as qa:
            run_dir = out or default_out_dir(dataset, llm or settings.llm)
            with progress_bar(err) as progress:
                if source is not None:
                    task = progress.add_task(f"ingesting {source[0].name}", total=None)
                    report = qa.ingest(
                        [source[0]], format=source[1], progress=ingest_progress(progress, task)
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
                    judge=judge_obj,
                    progress=on_progress,
                )
    render_metrics(console, summary)
    for w in summary.warnings[:10]:
        err.print(f"[yellow]warning:[/] {w}", soft_wrap=True)
    console.print(f"reports: {run_dir}/report.md, report.html, summary.json, results.jsonl")
    check_thresholds(summary.model_dump(mode="json"), thresholds, err)
    if summary.n_errors:
        err.print(
            f"[bold red]error:[/] {summary.n_errors} question(s) failed (see the failures "
            "table); run the same command again to retry them"
        )
        raise typer.Exit(1)


def compare_cmd(
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

    from rag_papers.cli.eval_render import render_comparison

    # Exported as compare_runs: the package's `compare` attribute is its compare submodule.
    from rag_papers.evaluation import compare_runs, read_summary

    thresholds = parse_thresholds(fail_under)
    err = err_console()
    for folder in (run_a, run_b):
        if not (folder / "summary.json").is_file() and not folder.is_file():
            err.print(f"[bold red]error:[/] {folder}: no summary.json (not a run folder)")
            raise typer.Exit(EXIT_INPUT)
    result = compare_runs(run_a, run_b, tolerance=tolerance)
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render_comparison(out_console(), result)
    check_thresholds(read_summary(run_b), thresholds, err)
    if fail_on_regression and result.regressions:
        err.print("[bold red]regression:[/] " + ", ".join(d.key for d in result.regressions))
        raise typer.Exit(1)
