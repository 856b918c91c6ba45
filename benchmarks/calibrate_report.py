"""The calibration report (eval/reports/calibration.md) and the data it is about: the
off-topic questions and the confusion counts of a support threshold. calibrate.py measures;
this module only formats what it measured."""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OFF_TOPIC", "Metrics", "write_report"]

ROOT = Path(__file__).resolve().parents[1]

# sample.jsonl's unanswerable questions are all machine-learning questions the corpus happens
# not to cover; the abstain threshold exists for questions off the corpus's subject altogether.
# Written by hand for this calibration: everyday, other-science and other-CS questions.
OFF_TOPIC = (
    "What is the best recipe for sourdough bread?",
    "How do I fix a leaking kitchen faucet?",
    "Who won the 2018 FIFA World Cup?",
    "What causes the northern lights?",
    "How do mRNA vaccines train the immune system?",
    "What is the capital of Australia?",
    "How does photosynthesis convert light into chemical energy?",
    "What are the symptoms of vitamin D deficiency?",
    "Which stocks should I buy this year?",
    "How do black holes evaporate through Hawking radiation?",
    "What were the main causes of the French Revolution?",
    "How do I configure a firewall on a Linux server?",
    "What is the time complexity of quicksort in the worst case?",
    "How does TCP congestion control work?",
    "Which programming language should I learn first for web development?",
    "How do I write a SQL query that joins three tables?",
    "What is the difference between a virus and a bacterium?",
    "How do solar panels generate electricity?",
    "What is the plot of Shakespeare's Hamlet?",
    "How does inflation affect interest rates?",
    "What are good exercises for lower back pain?",
    "How do bees communicate the location of flowers?",
    "How does public-key cryptography keep messages secret?",
    "How are earthquakes measured on the Richter scale?",
)


@dataclass(slots=True)
class Metrics:
    """Confusion counts of the "supported" class at one threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / max(1, self.tp + self.fp + self.tn + self.fn)

    @property
    def balanced_accuracy(self) -> float:
        tnr = self.tn / (self.tn + self.fp) if self.tn + self.fp else 1.0
        return (self.recall + tnr) / 2


def _rel(path: Path) -> str:
    full = path.resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(path)


def _f(x: float) -> str:
    return f"{x:.3f}"


def _support_table(chosen: float, metrics_at: Callable[[float], Metrics]) -> list[str]:
    lines = [
        "| threshold | precision | recall | F1 | accuracy | balanced acc. | TP | FP | TN | FN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    grid = sorted({round(chosen + d / 100, 2) for d in range(-10, 11, 2)} | {0.5})
    for t in (t for t in grid if 0.0 <= t <= 1.0):
        m = metrics_at(t)
        mark = " **(chosen)**" if abs(t - chosen) < 1e-9 else ""
        lines.append(
            f"| {t:.2f}{mark} | {_f(m.precision)} | {_f(m.recall)} | {_f(m.f1)} | "
            f"{_f(m.accuracy)} | {_f(m.balanced_accuracy)} | {m.tp} | {m.fp} | {m.tn} | {m.fn} |"
        )
    return lines


def _by_kind(rows: Sequence[Any], t: float, predicted: Callable[[Any, float], bool]) -> list[str]:
    kinds: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        kinds[r.kind].append(r)
    lines = ["| kind | label | rows | judged supported | mean score |", "|---|---|---|---|---|"]
    for kind, rs in sorted(kinds.items(), key=lambda kv: (not kv[1][0].gold, kv[0])):
        judged = sum(predicted(r, t) for r in rs)
        label = "supported" if rs[0].gold else "unsupported"
        mean = sum(r.score for r in rs) / len(rs)
        lines.append(f"| {kind} | {label} | {len(rs)} | {judged} | {mean:.3f} |")
    return lines


def _count(rows: Sequence[Any], refused: Sequence[bool], kind: str) -> int:
    """Abstentions among rows of a kind: 'answerable', 'unanswerable' or 'off-topic'."""
    return sum(
        a and (r.answerable if kind == "answerable" else r.type == kind)
        for r, a in zip(rows, refused, strict=True)
    )


def _abstain_table(
    rows: Sequence[Any], chosen: float, current: float, grid: dict[float, list[bool]]
) -> list[str]:
    n_ans = sum(r.answerable for r in rows)
    n_in = sum(r.type == "unanswerable" for r in rows)
    n_off = sum(r.type == "off-topic" for r in rows)
    lines = [
        "| threshold | answerable wrongly abstained | unanswerable (in-domain) abstained "
        "| off-topic abstained | abstention precision | abstention recall |",
        "|---|---|---|---|---|---|",
    ]
    for t, refused in grid.items():
        wrong = _count(rows, refused, "answerable")
        in_dom = _count(rows, refused, "unanswerable")
        off = _count(rows, refused, "off-topic")
        caught = in_dom + off
        prec = caught / (caught + wrong) if caught + wrong else 1.0
        rec = caught / (n_in + n_off) if n_in + n_off else 1.0
        mark = " **(chosen)**" if abs(t - chosen) < 1e-9 else ""
        mark += " (current default)" if abs(t - current) < 1e-9 else ""
        lines.append(
            f"| {t:.2f}{mark} | {wrong} / {n_ans} | {in_dom} / {n_in} | {off} / {n_off} "
            f"| {_f(prec)} | {_f(rec)} |"
        )
    return lines


def write_report(out: Path, **m: Any) -> None:
    """Print the chosen values and write the Markdown report (``m``: calibrate.main's
    measurements, by name)."""
    support, best, lex = m["support"], m["best"], m["best_lexical"]
    arows, abstain, sentence_t = m["arows"], m["abstain"], m["sentence_t"]
    reasons = m["reasons"]
    refused = [why is not None for why in reasons]
    ext = [why is not None for why in m["reasons_extractive"]]
    cur = m["defaults"]
    ruled = [r for r in support if r.rule]
    open_best = Metrics(best.threshold, 0, 0, 0, 0)
    for r in (r for r in support if not r.rule):
        pred = m["predicted"](r, best.threshold)
        kind = ("tp" if r.gold else "fp") if pred else ("fn" if r.gold else "tn")
        setattr(open_best, kind, getattr(open_best, kind) + 1)
    n_ans = sum(r.answerable for r in arows)
    in_dom = [r for r in arows if r.type == "unanswerable"]
    off = [r for r in arows if r.type == "off-topic"]
    wrong = _count(arows, refused, "answerable")
    caught_in, caught_off = (
        _count(arows, refused, "unanswerable"),
        _count(arows, refused, "off-topic"),
    )
    caught = caught_in + caught_off
    abst_prec = caught / (caught + wrong) if caught + wrong else 1.0
    abst_rec = caught / (len(in_dom) + len(off))
    by_sentence = [e and not g for g, e in zip(refused, ext, strict=True)]  # the sentence gate
    s_wrong = _count(arows, by_sentence, "answerable")
    s_caught = _count(arows, by_sentence, "unanswerable")
    s_lowest = min(r.best_sentence for r in arows if r.answerable)
    # Refused although retrieval is strong enough: the gate's other checks (evidence.py).
    by_evidence = [a and r.best_dense >= abstain for r, a in zip(arows, refused, strict=True)]
    e_caught = _count(arows, by_evidence, "unanswerable")
    refused_answerable = [
        f"{r.id} ({why})" for r, why in zip(arows, reasons, strict=True) if why and r.answerable
    ]
    ans_sorted = sorted((r for r in arows if r.answerable), key=lambda r: r.best_dense)
    wrong_ids = [r.id for r in support if m["predicted"](r, best.threshold) != r.gold]
    support_table = _support_table(best.threshold, m["metrics_at"])
    abstain_table = _abstain_table(arows, abstain, cur["abstain_threshold"], m["grid"])
    print(f"support: {len(support)} rows ({sum(r.gold for r in support)} supported)")
    print("\n".join([*support_table, *abstain_table]))
    print(
        f"chosen support_threshold = {best.threshold:.2f}  P={best.precision:.3f} "
        f"R={best.recall:.3f} F1={best.f1:.3f} acc={best.accuracy:.3f}\n"
        f"chosen abstain_threshold = {abstain:.2f}: {wrong}/{n_ans} answerable wrongly "
        f"abstained, {caught_in}/{len(in_dom)} in-domain unanswerable and "
        f"{caught_off}/{len(off)} off-topic abstained\n"
        f"chosen abstain_sentence_threshold = {sentence_t:.2f}: {s_wrong}/{n_ans} answerable "
        f"wrongly abstained, {s_caught}/{len(in_dom)} in-domain unanswerable abstained"
    )
    argv = m["argv"]
    cmd = "python benchmarks/calibrate.py" + (" " + shlex.join(argv) if argv else "")
    report = [
        "# Calibration of support_threshold and abstain_threshold",
        "",
        f"Command: `{cmd}` (from the repository root; {m['seconds']:.0f} s on this "
        "machine). Embedder: the bundled all-MiniLM-L6-v2 (ONNX int8), as in the engine. "
        "Every decision below is made by the engine's own answer steps "
        "(`rag_papers.engine.pipeline.AnswerPipeline`).",
        "",
        "## Chosen values",
        "",
        "| setting | current default | calibrated | evidence |",
        "|---|---|---|---|",
        f"| `support_threshold` | {cur['support_threshold']:.2f} | **{best.threshold:.2f}** | "
        f"precision {best.precision:.3f}, recall {best.recall:.3f}, F1 {best.f1:.3f} for "
        f'"supported" on {len(support)} labelled sentences |',
        f"| `abstain_threshold` | {cur['abstain_threshold']:.2f} | **{abstain:.2f}** | "
        f"{wrong}/{n_ans} answerable questions wrongly abstained; "
        f"{caught_off}/{len(off)} off-topic and {caught_in}/{len(in_dom)} in-domain "
        "unanswerable abstained (abstention precision "
        f"{abst_prec:.3f}, recall {abst_rec:.3f}; cost ratio {m['cost_ratio']:g}:1) |",
        f"| `abstain_sentence_threshold` | {cur['abstain_sentence_threshold']:.2f} | "
        f"**{sentence_t:.2f}** | extractive mode only; lowest best-sentence cosine of an "
        f"answerable question {s_lowest:.3f}, minus a 0.025 margin, rounded down to 0.05: "
        f"{s_wrong}/{n_ans} answerable wrongly abstained, {s_caught}/{len(in_dom)} in-domain "
        "unanswerable abstained |",
        "",
        "## support_threshold",
        "",
        f"Data: `{_rel(m['labels_path'])}`, {len(support)} sentences written by hand from the "
        f"abstracts of the bundled sample corpus, {sum(r.gold for r in support)} labelled "
        "supported (paraphrases and condensations of what the abstract says) and "
        f"{sum(not r.gold for r in support)} unsupported (wrong numbers, negations, wrong "
        "entities, overclaims, sentences about another paper). Each is checked as the engine "
        "checks an answer sentence: written as the one-sentence answer `sentence [1].` citing "
        "that paper and judged by `AnswerPipeline.check` (the engine's MiniLM embedder).",
        "",
        'Objective: **F1 of the "supported" class**, ties broken towards the stricter threshold. '
        "Balanced accuracy is shown too; on this nearly balanced set both peak in the same region.",
        "",
        *support_table,
        "",
        f"{len(ruled)} rows are decided by a rule whatever the threshold (a number absent from "
        f"the source); on the other {len(support) - len(ruled)} rows alone, the chosen "
        f"threshold gives precision {open_best.precision:.3f}, recall {open_best.recall:.3f}, "
        f"F1 {open_best.f1:.3f}, accuracy {open_best.accuracy:.3f}. Without the embedder "
        f"(lexical containment only) the best F1 would be {lex.f1:.3f} at {lex.threshold:.2f} "
        f"(precision {lex.precision:.3f}, recall {lex.recall:.3f}).",
        "",
        f"By kind, at {best.threshold:.2f}:",
        "",
        *_by_kind(support, best.threshold, m["predicted"]),
        "",
        "Misjudged rows at the chosen threshold: " + (", ".join(wrong_ids) or "none") + ".",
        "",
        "What it cannot do: overlap and embedding similarity do not see meaning flips. Negations "
        "and wrong entities that reuse the abstract's words score like paraphrases; only the "
        "number rule is exact. The support figure is a check that a sentence is *about* what its "
        "source says, not that it is true.",
        "",
        "## abstain_threshold",
        "",
        f"Data: `{_rel(m['questions_path'])}` ({n_ans} answerable and {len(in_dom)} unanswerable "
        f"questions) plus {len(off)} off-topic questions written for this calibration "
        "(`OFF_TOPIC` in benchmarks/calibrate_report.py: cooking, sport, medicine, physics, "
        "history, other areas of computing). Score: the best dense cosine of the papers "
        '`pipeline.retrieve(question, mode="hybrid")` finds; every threshold is applied by '
        "`pipeline.gate`, the step `PaperQA.ask` runs before answering.",
        "",
        f"Cost ratio: wrongly abstaining on an answerable question counts **{m['cost_ratio']:g}** "
        "times as much as answering an unanswerable one, which still shows checked citations "
        "and can end in the model's own abstention. The sample questions are deliberately "
        "paraphrased away from the titles, so real questions usually score higher than these. "
        "Cuts are midpoints between observed scores, rounded down to 0.01.",
        "",
        *abstain_table,
        "",
        "Lowest-scoring answerable questions: "
        + ", ".join(f"{r.id} ({r.type}) {r.best_dense:.3f}" for r in ans_sorted[:5])
        + f"; median {ans_sorted[len(ans_sorted) // 2].best_dense:.3f}.",
        "",
        "Highest-scoring off-topic questions: "
        + ", ".join(f"{r.best_dense:.3f}" for r in sorted(off, key=lambda r: -r.best_dense)[:5])
        + ".",
        "",
        "In-domain unanswerable questions (best cosine): "
        + ", ".join(
            f"{r.id} {r.best_dense:.3f}" for r in sorted(in_dom, key=lambda r: r.best_dense)
        )
        + ". They overlap the answerable ones completely: they are machine-learning questions "
        "the corpus does not cover, or ask for a detail no abstract gives, so retrieval is as "
        "strong as for answerable questions. No retrieval threshold separates them without "
        "refusing answerable questions: the retrieval threshold's job is questions off the "
        "corpus's subject, which it separates with a margin. At the chosen threshold the "
        f"gate's evidence checks (answering/evidence.py) refuse {e_caught} of them; in "
        f"extractive mode the sentence threshold catches {s_caught} more (no sentence comes "
        "close to the question); the rest are left to the model's own abstention (the fixed "
        "phrase in the system prompt) and to the citation check.",
        "",
        "Answerable questions the gate refuses at the chosen threshold: "
        + ("; ".join(refused_answerable) or "none")
        + ".",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report))
