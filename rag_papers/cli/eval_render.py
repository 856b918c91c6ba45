"""Rich tables of the eval harness's results: a run's metrics, a comparison of two runs, a
BEIR benchmark and a fusion grid. The harness returns data; showing it is the CLI's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from rag_papers.evaluation import BeirResult, Comparison, RunSummary, TuneResult

__all__ = [
    "render_beir",
    "render_comparison",
    "render_metrics",
    "render_tuning",
]

# The columns of the BEIR table, in order.
_BEIR_COLUMNS = ("ndcg@10", "recall@100", "mrr@10")


def render_metrics(console: Console, summary: RunSummary) -> None:
    """A run's metrics: one row per metric, overall then per question type."""
    from rich.table import Table

    from rag_papers.evaluation import format_metric, metric_direction

    m = summary.metrics
    types = list(m.per_type)
    table = Table(title=f"{summary.dataset}: {summary.n_answered}/{summary.n_questions} answered")
    table.add_column("metric")
    table.add_column("overall", justify="right")
    for t in types:
        table.add_column(t, justify="right")
    for key, value in m.overall.items():
        table.add_row(
            f"{key} {metric_direction(key)}",
            format_metric(value, key),
            *(format_metric(m.per_type[t].get(key), key) for t in types),
        )
    console.print(table)


def render_comparison(console: Console, comparison: Comparison) -> None:
    """Metric deltas B - A (``evaluation.compare``): regressions red, improvements green,
    then the notes (different datasets, settings, prompts)."""
    from rich.table import Table

    table = Table(title=f"{comparison.run_a} → {comparison.run_b}")
    table.add_column("metric")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    table.add_column("Δ", justify="right")
    table.add_column("")
    for d in comparison.deltas:
        arrow = "↑" if d.higher_is_better else "↓"
        delta = "" if d.delta is None else f"{d.delta:+.3f}"
        if d.regression:
            flag, style = "[bold red]regression[/]", "red"
        elif d.improvement:
            flag, style = "[green]better[/]", "green"
        else:
            flag, style = "", None
        table.add_row(
            f"{d.key} {arrow}",
            "n/a" if d.a is None else f"{d.a:.3f}",
            "n/a" if d.b is None else f"{d.b:.3f}",
            delta,
            flag,
            style=style,
        )
    console.print(table)
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")


def render_beir(console: Console, result: BeirResult, *, split: str, k: int) -> None:
    """One row per retrieval mode: nDCG@10, Recall@100, MRR@10 and seconds."""
    from rich.table import Table

    data = result.data
    table = Table(title=f"BEIR {data.name} {split}: {len(data.queries)} queries, k={k}")
    table.add_column("mode")
    for m in (*_BEIR_COLUMNS, "seconds"):
        table.add_column(m, justify="right")
    for name, vals in result.modes.items():
        table.add_row(
            name,
            *(f"{vals[m]:.3f}" for m in _BEIR_COLUMNS),
            f"{result.seconds[name]:.1f}",
        )
    console.print(table)


def _setting(row: dict[str, Any]) -> str:
    if row["fusion"] == "weighted":
        return f"dense_weight={row['dense_weight']}"
    return f"rrf_k={row['rrf_k']}"


def render_tuning(console: Console, result: TuneResult, *, title: str) -> None:
    """The fusion grid (best row in bold green), each branch alone, and the best setting
    as the TOML lines to paste into a config file."""
    from rich.table import Table

    table = Table(title=title)
    metrics = [c for c in result.best if c not in ("fusion", "dense_weight", "rrf_k")]
    for col in ("fusion", "setting", *metrics):
        table.add_column(col, justify="left" if col in ("fusion", "setting") else "right")
    for row in result.grid:
        style = "bold green" if row is result.best else None
        table.add_row(
            row["fusion"], _setting(row), *(f"{row[m]:.4f}" for m in metrics), style=style
        )
    console.print(table)
    for name, vals in result.branches.items():
        console.print(f"{name} alone: " + ", ".join(f"{m} {v:.4f}" for m, v in vals.items()))
    best = result.best
    toml = (
        f'fusion = "weighted"\ndense_weight = {best["dense_weight"]}'
        if best["fusion"] == "weighted"
        else f'fusion = "rrf"\nrrf_k = {best["rrf_k"]}'
    )
    console.print(f"best by {result.metric}: {best[result.metric]:.4f} with\n{toml}")
