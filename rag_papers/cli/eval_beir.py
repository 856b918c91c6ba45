"""``rag-papers eval beir``: retrieval on a BEIR dataset per mode, or a fusion grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rag_papers.cli.eval_common import (
    err_console,
    eval_settings,
    out_console,
    progress_bar,
    require_eval_extra,
    user_errors,
)
from rag_papers.cli.options import ModesOpt, parse_modes

__all__ = ["beir"]


def beir(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="BEIR folder.")],
    split: Annotated[str, typer.Option("--split", help="qrels/<split>.tsv")] = "test",
    mode: ModesOpt = None,
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

    from rag_papers import PaperQA
    from rag_papers.cli.eval_render import render_beir, render_tuning

    require_eval_extra("beir")
    modes = parse_modes(mode)
    err, console = err_console(), out_console()
    with user_errors():
        from rag_papers.evaluation import (
            beir_settings,
            ingest_beir,
            load_beir,
            run_beir,
            tune_fusion,
            write_beir_report,
        )

        data = load_beir(folder, split).head(limit)
        settings = beir_settings(eval_settings(ctx), folder, index_dir)
        tasks: dict[str, Any] = {}
        with (
            PaperQA(settings, notify=lambda m: err.print(f"[dim]{m}[/]")) as qa,
            progress_bar(err) as progress,
        ):

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    label = stage.replace("ingest:", "ingest: ")
                    tasks[stage] = progress.add_task(label, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            if tune:
                ingest_beir(qa, data, progress=lambda s, d, n: on_progress(f"ingest:{s}", d, n))
                tuned = tune_fusion(qa, data, k=k, progress=on_progress)
            else:
                result = run_beir(qa, data, modes=modes, k=k, progress=on_progress)
    if tune:
        title = f"fusion grid on {data.name} {split} ({len(data.queries)} queries)"
        render_tuning(console, tuned, title=title)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"beir-{data.name}-{split}-tune.json"
        path.write_text(json.dumps(tuned.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"grid: {path}")
        return
    json_path, md_path = write_beir_report(result, out)
    render_beir(console, result, split=split, k=k)
    console.print(f"reports: {json_path}, {md_path}")
