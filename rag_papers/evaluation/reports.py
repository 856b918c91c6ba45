"""Run reports: summary.json, report.md and a self-contained report.html (plots as base64 PNG).

results.jsonl is written by the runner as questions finish; everything here is derived from
it and the RunSummary, so a report can be rebuilt without asking anything again.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_papers.evaluation.answer_metrics import CitationValidity
from rag_papers.evaluation.extra import prepare_eval_environment
from rag_papers.evaluation.facts import missing_facts
from rag_papers.evaluation.metrics import format_metric, metric_direction
from rag_papers.evaluation.retrieval_metrics import first_gold_rank
from rag_papers.evaluation.rows import EvalRow
from rag_papers.evaluation.summary import RunSummary

__all__ = ["diagnose", "failures", "plots", "render_html", "render_markdown", "write_reports"]

# Metrics shown in the per-type bar chart (when they apply to the type).
_BAR_METRICS = (
    "recall@5",
    "ndcg@10",
    "citation_precision",
    "citation_recall",
    "fact_recall",
    "support_rate",
    "abstention_recall",
)


def _title(row: EvalRow, pid: str) -> str:
    return row.gold_titles.get(pid) or pid


def diagnose(row: EvalRow, *, top_k: int | None = None) -> list[str]:
    """What went wrong with one question, in words; [] when nothing did."""
    if not row.ok or row.answer is None:
        return [f"error: {row.error or 'no answer'}"]
    reasons: list[str] = []
    answer = row.answer
    sources = set(row.source_ids)
    cited = set(row.cited_ids)
    for pid in row.gold_unresolved:
        reasons.append(f"gold not in the index: {pid}")
    if row.answerable:
        for pid in row.gold_ids:
            if pid in sources:
                if not answer.abstained and pid not in cited:
                    reasons.append(f"retrieved but not cited: {_title(row, pid)}")
            elif pid in row.retrieved:
                rank = row.retrieved.index(pid) + 1
                shown = f", beyond top {top_k}" if top_k else ""
                reasons.append(f"not retrieved: {_title(row, pid)} (rank {rank}{shown})")
            else:
                reasons.append(f"not retrieved: {_title(row, pid)}")
        if answer.abstained:
            reasons.append("wrongly abstained")
        else:
            reasons.extend(f"fact missing: {f}" for f in missing_facts(row))
    elif not answer.abstained:
        reasons.append("should have abstained")
    validity = CitationValidity().score(row)
    if validity is not None and validity < 1.0:
        bad = [c.paper_id for c in answer.citations if c.paper_id not in sources]
        reasons.append(f"invalid citation: {', '.join(bad)}")
    return reasons


def failures(
    rows: Sequence[EvalRow], *, top_k: int | None = None
) -> list[tuple[EvalRow, list[str]]]:
    out = []
    for row in rows:
        if reasons := diagnose(row, top_k=top_k):
            out.append((row, reasons))
    return out


# --- Markdown ---------------------------------------------------------------------------------
def _header_facts(summary: RunSummary) -> list[tuple[str, str]]:
    prompts = ", ".join(f"{k} {v}" for k, v in summary.prompt_hashes.items())
    by_type = ", ".join(f"{k} {v}" for k, v in summary.n_by_type.items())
    depth = summary.retrieval_depth
    facts = [
        (
            "dataset",
            f"{summary.dataset_path or summary.dataset} (sha256 {summary.dataset_sha256[:12]})",
        ),
        ("date", summary.date),
        (
            "questions",
            f"{summary.n_questions} ({by_type})",
        ),
        ("answered / errors", f"{summary.n_answered} / {summary.n_errors}"),
        ("llm", summary.llm),
        ("embedding model", summary.embed_model),
        (
            "retrieval",
            f"{summary.retrieval_mode}, top_k {summary.top_k}, metrics at depth {depth}",
        ),
        ("settings fingerprint", summary.settings_fingerprint),
        ("prompt hashes", prompts),
        ("rag_papers version", summary.package_version),
        ("index", f"{summary.index} ({summary.index_papers} papers)"),
        (
            "wall time",
            f"{summary.wall_s:.1f} s with {summary.jobs} job(s); {summary.n_resumed} resumed",
        ),
    ]
    if summary.judge_model:
        facts.append(("judge", summary.judge_model))
    return facts


def _type_columns(summary: RunSummary) -> list[str]:
    return list(summary.metrics.per_type)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: RunSummary, rows: Sequence[EvalRow]) -> str:
    m = summary.metrics
    lines = [f"# Evaluation: {summary.dataset}", ""]
    lines += [f"- **{k}**: {_md_escape(v)}" for k, v in _header_facts(summary)]
    lines += ["", "## Metrics", ""]
    types = _type_columns(summary)
    lines.append("| metric | overall | n | " + " | ".join(types) + " |")
    lines.append("|---|---:|---:|" + "---:|" * len(types))
    for key, value in m.overall.items():
        per = [format_metric(m.per_type.get(t, {}).get(key), key) for t in types]
        lines.append(
            f"| {key} {metric_direction(key)} | {format_metric(value, key)} | "
            f"{m.counts.get(key, 0)} | " + " | ".join(per) + " |"
        )
    lines += ["", "(n: questions the metric applies to; n/a: none)", ""]
    fails = failures(rows, top_k=summary.top_k)
    lines += [f"## Failures ({len(fails)} of {len(rows)})", ""]
    if fails:
        lines += ["| id | type | question | what went wrong |", "|---|---|---|---|"]
        for row, reasons in fails:
            q = row.question if len(row.question) <= 100 else row.question[:97] + "…"
            lines.append(
                f"| {row.id} | {row.type} | {_md_escape(q)} | "
                + _md_escape("; ".join(reasons))
                + " |"
            )
    else:
        lines.append("None.")
    if summary.warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- {_md_escape(w)}" for w in summary.warnings]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(summary: RunSummary, rows: Sequence[EvalRow]) -> dict[str, str]:
    """name -> base64 PNG: metrics per type, latency histogram, rank of the first gold paper."""
    prepare_eval_environment()  # matplotlib's config and font cache stay out of home
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe in threads and on servers
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    per_type = summary.metrics.per_type
    groups = ["overall", *per_type]
    values = {"overall": summary.metrics.overall, **per_type}
    keys = [k for k in _BAR_METRICS if any(values[g].get(k) is not None for g in groups)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        ys = [values[g].get(key) for g in groups]
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(
            [x for x, y in zip(xs, ys, strict=True) if y is not None],
            [y for y in ys if y is not None],
            width,
            label=key,
        )
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(groups))], groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("Metrics per question type")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    out["metrics_per_type"] = _png(fig)

    ok = [r for r in rows if r.ok]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([r.latency for r in ok] or [0.0], bins=20, color="#4c72b0")
    ax.set_xlabel("seconds per answer")
    ax.set_ylabel("questions")
    ax.set_title("Latency")
    out["latency"] = _png(fig)

    depth = summary.retrieval_depth
    labels = [str(i) for i in range(1, depth + 1)] + ["not\nretrieved"]
    counts = [0] * len(labels)
    for r in ok:
        if r.gold_ids:
            rank = first_gold_rank(r)
            counts[(rank - 1) if rank is not None and rank <= depth else depth] += 1
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ["#55a868"] * depth + ["#c44e52"]
    ax.bar(range(len(labels)), counts, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=0, fontsize=8)
    ax.set_xlabel("rank of the first gold paper")
    ax.set_ylabel("questions")
    ax.set_title("Rank of the first gold paper")
    out["gold_rank"] = _png(fig)
    return out


# --- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
font-size:14px;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;
font-variant-numeric:tabular-nums}img{max-width:100%;margin:1em 0}.warn{color:#a33}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}
"""


def render_html(summary: RunSummary, rows: Sequence[EvalRow], images: dict[str, str]) -> str:
    e = html.escape
    m = summary.metrics
    types = _type_columns(summary)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation: {e(summary.dataset)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Evaluation: {e(summary.dataset)}</h1><dl>",
    ]
    parts += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _header_facts(summary)]
    parts.append("</dl><h2>Metrics</h2><table><tr><th>metric</th><th>overall</th><th>n</th>")
    parts += [f"<th>{e(t)}</th>" for t in types]
    parts.append("</tr>")
    for key, value in m.overall.items():
        parts.append(
            f"<tr><td>{e(key)} {metric_direction(key)}</td>"
            f"<td class=num>{format_metric(value, key)}</td>"
            f"<td class=num>{m.counts.get(key, 0)}</td>"
        )
        parts += [
            f"<td class=num>{format_metric(m.per_type.get(t, {}).get(key), key)}</td>"
            for t in types
        ]
        parts.append("</tr>")
    parts.append("</table>")
    titles = {
        "metrics_per_type": "Metrics per question type",
        "latency": "Latency",
        "gold_rank": "Rank of the first gold paper",
    }
    for name, data in images.items():
        parts.append(
            f"<h2>{e(titles.get(name, name))}</h2>"
            f"<img alt='{e(name)}' src='data:image/png;base64,{data}'>"
        )
    fails = failures(rows, top_k=summary.top_k)
    parts.append(f"<h2>Failures ({len(fails)} of {len(rows)})</h2>")
    if fails:
        parts.append(
            "<table><tr><th>id</th><th>type</th><th>question</th><th>answer</th>"
            "<th>what went wrong</th></tr>"
        )
        for row, reasons in fails:
            answer = row.answer.text if row.answer else ""
            parts.append(
                f"<tr><td>{e(row.id)}</td><td>{e(row.type)}</td><td>{e(row.question)}</td>"
                f"<td>{e(answer[:400])}</td><td>"
                + "<br>".join(e(r) for r in reasons)
                + "</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if summary.warnings:
        parts.append("<h2>Warnings</h2><ul>")
        parts += [f"<li class=warn>{e(w)}</li>" for w in summary.warnings]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def write_reports(out_dir: Path | str, summary: RunSummary, rows: Sequence[EvalRow]) -> list[Path]:
    """summary.json, report.md and report.html beside the run's results.jsonl."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.json", out / "report.md", out / "report.html"]
    paths[0].write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(summary, rows), encoding="utf-8")
    paths[2].write_text(render_html(summary, rows, plots(summary, rows)), encoding="utf-8")
    return paths
