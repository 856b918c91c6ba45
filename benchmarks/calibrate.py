"""Calibrate settings.support_threshold and settings.abstain_threshold; write a report.

    .venv/bin/python benchmarks/calibrate.py [--cost-ratio 5] [--out eval/reports/calibration.md]

support_threshold: each row of eval/datasets/support_labels.jsonl (a hand-labelled sentence
about one paper of the bundled sample corpus) is checked with answer.check_support against
that paper's "title. abstract", with the bundled MiniLM embedder, exactly as the engine does.
The score does not depend on the threshold, so it is computed once; a row whose number is not
in the source is rejected whatever the threshold. The chosen threshold maximises F1 of the
"supported" class (ties: the stricter threshold, then balanced accuracy).

abstain_threshold: for each question of eval/datasets/sample.jsonl, plus the off-topic
questions below, the engine's rule is replayed: the best dense cosine among the papers
qa.search(question, mode="hybrid") returns (PaperQA.ask abstains when it is below the
threshold). The threshold minimises
cost = cost_ratio * (answerable questions wrongly abstained) + (unanswerable questions answered):
wrongly refusing a question the corpus answers is worse than answering an unanswerable one with
checked citations, and the sample questions are deliberately paraphrased, so real ones will
usually match better. Cuts are midpoints between observed scores (a margin on both sides),
rounded down to 0.01; among equally good cuts the lowest wins.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

from rag_papers.answering.contract import check_support  # noqa: E402
from rag_papers.core.settings import Settings, load_settings  # noqa: E402
from rag_papers.engine.qa import PaperQA, sample_corpus_path  # noqa: E402
from rag_papers.ingest.loaders import load_papers  # noqa: E402
from rag_papers.retrieval.retriever import best_sentences  # noqa: E402

__all__ = [
    "OFF_TOPIC",
    "AbstainRow",
    "Metrics",
    "SupportRow",
    "abstain_scores",
    "choose_abstain_threshold",
    "choose_support_threshold",
    "main",
    "support_metrics",
    "support_scores",
]

SUPPORT_LABELS = ROOT / "eval" / "datasets" / "support_labels.jsonl"
SAMPLE_QUESTIONS = ROOT / "eval" / "datasets" / "sample.jsonl"
REPORT = ROOT / "eval" / "reports" / "calibration.md"

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
class SupportRow:
    id: str
    kind: str
    gold: bool  # labelled "supported"
    score: float  # check_support's score (0 when a rule decides)
    rule: str  # "" when the threshold decides; else why it is decided regardless


@dataclass(slots=True)
class Metrics:
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


# --- support_threshold ---------------------------------------------------------------------
def support_scores(rows: Sequence[dict[str, str]], embedder: object | None) -> list[SupportRow]:
    """check_support's threshold-independent score for every labelled row."""
    papers = {p.title: p for p in load_papers(sample_corpus_path()).papers}
    by_title: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["source_title"] not in papers:
            raise SystemExit(f"{row['id']}: no paper titled {row['source_title']!r}")
        by_title[row["source_title"]].append(row)
    out: dict[str, SupportRow] = {}
    for title, group in by_title.items():
        p = papers[title]
        source = {1: f"{p.title}. {p.abstract}"}
        # threshold=inf: every verdict the threshold decides comes back "weak overlap".
        verdicts = check_support(
            [(r["sentence"], [1]) for r in group], source, threshold=math.inf, embedder=embedder
        )
        for r, v in zip(group, verdicts, strict=True):
            rule = "" if v.reason.startswith("weak overlap") else v.reason
            out[r["id"]] = SupportRow(r["id"], r["kind"], r["label"] == "supported", v.score, rule)
    return [out[r["id"]] for r in rows]


def _predicted(row: SupportRow, threshold: float) -> bool:
    if row.rule:
        return row.rule == "not a claim"  # a number rule or "no citation" rejects
    return row.score >= threshold


def support_metrics(rows: Sequence[SupportRow], threshold: float) -> Metrics:
    c: Counter[str] = Counter()
    for r in rows:
        pred = _predicted(r, threshold)
        c[("t" if pred == r.gold else "f") + ("p" if pred else "n")] += 1
    return Metrics(threshold, c["tp"], c["fp"], c["tn"], c["fn"])


def choose_support_threshold(rows: Sequence[SupportRow]) -> Metrics:
    """Maximise F1 of 'supported'; ties go to the stricter threshold, then balanced accuracy."""
    scores = sorted({r.score for r in rows if not r.rule})
    # Any threshold in (previous score, score] gives the same predictions; round up to 0.01.
    candidates = sorted({math.ceil(s * 100) / 100 for s in scores} | {0.0, 1.0})
    metrics = [support_metrics(rows, t) for t in candidates]
    return max(metrics, key=lambda m: (round(m.f1, 6), m.threshold, m.balanced_accuracy))


# --- abstain_threshold ---------------------------------------------------------------------
@dataclass(slots=True)
class AbstainRow:
    id: str
    type: str  # sample.jsonl's type, or "off-topic"
    best_dense: float
    best_sentence: float  # best cosine of any sentence of the retrieved abstracts

    @property
    def answerable(self) -> bool:
        return self.type not in ("unanswerable", "off-topic")


def abstain_scores(qa: PaperQA, questions: Sequence[dict[str, object]]) -> list[AbstainRow]:
    """The two quantities PaperQA.ask compares: the best dense cosine of the retrieved
    papers, and (extractive mode) the best cosine of any of their sentences."""
    rows = []
    embedder = qa.index.embedder
    for q in questions:
        vector = embedder.embed_query(str(q["question"]))
        results = qa.search(str(q["question"]), mode="hybrid")
        best = max((r.dense for r in results if r.dense is not None), default=0.0)
        per_paper = best_sentences(vector, results, embedder)
        sentence = max((s[0][1] for s in per_paper if s), default=0.0)
        rows.append(AbstainRow(str(q["id"]), str(q["type"]), float(best), float(sentence)))
    return rows


def choose_sentence_threshold(rows: Sequence[AbstainRow], margin: float = 0.025) -> float:
    """Below every answerable question's best sentence by ``margin``, rounded down to 0.05:
    this gate must never refuse an answerable question of the calibration set."""
    lowest = min(r.best_sentence for r in rows if r.answerable)
    return math.floor((lowest - margin) * 20) / 20


def _abstain_counts(rows: Sequence[AbstainRow], t: float) -> tuple[int, int, int, int]:
    """(answerable abstained, answerable answered, unanswerable abstained, unanswerable
    answered)."""
    wrong = sum(r.answerable and r.best_dense < t for r in rows)
    ok = sum(r.answerable and r.best_dense >= t for r in rows)
    caught = sum(not r.answerable and r.best_dense < t for r in rows)
    missed = sum(not r.answerable and r.best_dense >= t for r in rows)
    return wrong, ok, caught, missed


def choose_abstain_threshold(rows: Sequence[AbstainRow], cost_ratio: float) -> float:
    values = sorted({round(r.best_dense, 4) for r in rows})
    # Midpoints between observed scores keep a margin on both sides of the cut.
    candidates = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)]

    def cost(t: float) -> float:
        wrong, _, _, missed = _abstain_counts(rows, t)
        return cost_ratio * wrong + missed

    best = min(candidates, key=lambda t: (cost(t), t))
    return math.floor(best * 100) / 100  # rounding down only ever abstains less


# --- report --------------------------------------------------------------------------------
def _rel(path: Path) -> str:
    full = path.resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(path)


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _support_table(rows: Sequence[SupportRow], chosen: float) -> list[str]:
    lines = [
        "| threshold | precision | recall | F1 | accuracy | balanced acc. | TP | FP | TN | FN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    grid = sorted({round(chosen + d / 100, 2) for d in range(-10, 11, 2)} | {0.5})
    for t in grid:
        if not 0.0 <= t <= 1.0:
            continue
        m = support_metrics(rows, t)
        mark = " **(chosen)**" if abs(t - chosen) < 1e-9 else ""
        lines.append(
            f"| {t:.2f}{mark} | {_fmt(m.precision)} | {_fmt(m.recall)} | {_fmt(m.f1)} | "
            f"{_fmt(m.accuracy)} | {_fmt(m.balanced_accuracy)} "
            f"| {m.tp} | {m.fp} | {m.tn} | {m.fn} |"
        )
    return lines


def _by_kind(rows: Sequence[SupportRow], t: float) -> list[str]:
    kinds: dict[str, list[SupportRow]] = defaultdict(list)
    for r in rows:
        kinds[r.kind].append(r)
    lines = ["| kind | label | rows | judged supported | mean score |", "|---|---|---|---|---|"]
    for kind, rs in sorted(kinds.items(), key=lambda kv: (not kv[1][0].gold, kv[0])):
        judged = sum(_predicted(r, t) for r in rs)
        label = "supported" if rs[0].gold else "unsupported"
        mean = sum(r.score for r in rs) / len(rs)
        lines.append(f"| {kind} | {label} | {len(rs)} | {judged} | {mean:.3f} |")
    return lines


def _abstain_table(rows: Sequence[AbstainRow], chosen: float, current: float) -> list[str]:
    n_ans = sum(r.answerable for r in rows)
    n_in = sum(r.type == "unanswerable" for r in rows)
    n_off = sum(r.type == "off-topic" for r in rows)
    lines = [
        "| threshold | answerable wrongly abstained | unanswerable (in-domain) abstained "
        "| off-topic abstained | abstention precision | abstention recall |",
        "|---|---|---|---|---|---|",
    ]
    grid = sorted(
        {round(chosen + d / 100, 2) for d in range(-6, 7, 2)}
        | {round(current, 2), 0.15, 0.2, 0.3, 0.35, 0.4}
    )
    for t in grid:
        wrong, _, caught, _ = _abstain_counts(rows, t)
        in_dom = sum(r.type == "unanswerable" and r.best_dense < t for r in rows)
        off = sum(r.type == "off-topic" and r.best_dense < t for r in rows)
        prec = caught / (caught + wrong) if caught + wrong else 1.0
        rec = caught / (n_in + n_off) if n_in + n_off else 1.0
        mark = " **(chosen)**" if abs(t - chosen) < 1e-9 else ""
        mark += " (current default)" if abs(t - current) < 1e-9 else ""
        lines.append(
            f"| {t:.2f}{mark} | {wrong} / {n_ans} | {in_dom} / {n_in} | {off} / {n_off} "
            f"| {_fmt(prec)} | {_fmt(rec)} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=SUPPORT_LABELS)
    parser.add_argument("--questions", type=Path, default=SAMPLE_QUESTIONS)
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument(
        "--cost-ratio",
        type=float,
        default=5.0,
        help="cost of wrongly abstaining on an answerable question, relative to answering an "
        "unanswerable one (default 5)",
    )
    parser.add_argument(
        "--index-dir", type=Path, default=None, help="sample index to reuse (default: build one)"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    defaults = Settings.model_fields

    # --- support --------------------------------------------------------------------------
    from rag_papers.store.embeddings import MiniLMEmbedder

    labels = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()]
    embedder = MiniLMEmbedder()
    rows = support_scores(labels, embedder)
    lexical_rows = support_scores(labels, None)
    best = choose_support_threshold(rows)
    best_lex = choose_support_threshold(lexical_rows)
    ruled = [r for r in rows if r.rule]
    open_rows = [r for r in rows if not r.rule]
    open_best = support_metrics(open_rows, best.threshold)
    cur_support = float(defaults["support_threshold"].default)

    print(f"support: {len(rows)} rows ({sum(r.gold for r in rows)} supported)")
    for line in _support_table(rows, best.threshold):
        print(line)
    print(
        f"chosen support_threshold = {best.threshold:.2f}  P={best.precision:.3f} "
        f"R={best.recall:.3f} F1={best.f1:.3f} acc={best.accuracy:.3f}"
    )

    # --- abstain --------------------------------------------------------------------------
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line]
    questions += [
        {"id": f"off{i:02d}", "question": q, "type": "off-topic"}
        for i, q in enumerate(OFF_TOPIC, 1)
    ]
    with tempfile.TemporaryDirectory(prefix="rag-papers-calibrate-") as tmp:
        index_dir = args.index_dir or Path(tmp) / "index"
        qa = PaperQA(load_settings(index_dir=index_dir, data_dir=Path(tmp)), notify=print)
        try:
            arows = abstain_scores(qa, questions)
        finally:
            qa.index.close()
    abstain = choose_abstain_threshold(arows, args.cost_ratio)
    cur_abstain = float(defaults["abstain_threshold"].default)
    wrong, _, caught, _ = _abstain_counts(arows, abstain)
    n_ans = sum(r.answerable for r in arows)
    in_dom = [r for r in arows if r.type == "unanswerable"]
    off = [r for r in arows if r.type == "off-topic"]
    caught_in = sum(r.best_dense < abstain for r in in_dom)
    caught_off = sum(r.best_dense < abstain for r in off)
    abst_prec = caught / (caught + wrong) if caught + wrong else 1.0
    abst_rec = caught / (len(in_dom) + len(off))
    for line in _abstain_table(arows, abstain, cur_abstain):
        print(line)
    print(
        f"chosen abstain_threshold = {abstain:.2f}: {wrong}/{n_ans} answerable wrongly "
        f"abstained, {caught_in}/{len(in_dom)} in-domain unanswerable and "
        f"{caught_off}/{len(off)} off-topic abstained"
    )
    ans_sorted = sorted((r for r in arows if r.answerable), key=lambda r: r.best_dense)
    sentence_t = choose_sentence_threshold(arows)
    passed = [r for r in arows if r.best_dense >= abstain]  # what reaches the sentence gate
    s_wrong = sum(r.answerable and r.best_sentence < sentence_t for r in passed)
    s_caught = sum(r.type == "unanswerable" and r.best_sentence < sentence_t for r in passed)
    s_lowest = min(r.best_sentence for r in arows if r.answerable)
    print(
        f"chosen abstain_sentence_threshold = {sentence_t:.2f}: {s_wrong}/{n_ans} answerable "
        f"wrongly abstained, {s_caught}/{len(in_dom)} in-domain unanswerable abstained"
    )

    # --- report ---------------------------------------------------------------------------
    cmd = "python benchmarks/calibrate.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    lex_note = (
        f"Without the embedder (lexical containment only) the best F1 would be "
        f"{best_lex.f1:.3f} at {best_lex.threshold:.2f} "
        f"(precision {best_lex.precision:.3f}, recall {best_lex.recall:.3f})."
    )
    wrong_ids = [r.id for r in rows if _predicted(r, best.threshold) != r.gold]
    report = [
        "# Calibration of support_threshold and abstain_threshold",
        "",
        f"Command: `{cmd}` (from the repository root; {time.perf_counter() - t0:.0f} s on this "
        "machine). Embedder: the bundled all-MiniLM-L6-v2 (ONNX int8), as in the engine.",
        "",
        "## Chosen values",
        "",
        "| setting | current default | calibrated | evidence |",
        "|---|---|---|---|",
        f"| `support_threshold` | {cur_support:.2f} | **{best.threshold:.2f}** | precision "
        f'{best.precision:.3f}, recall {best.recall:.3f}, F1 {best.f1:.3f} for "supported" '
        f"on {len(rows)} labelled sentences |",
        f"| `abstain_threshold` | {cur_abstain:.2f} | **{abstain:.2f}** | {wrong}/{n_ans} "
        f"answerable questions wrongly abstained; {caught_off}/{len(off)} off-topic and "
        f"{caught_in}/{len(in_dom)} in-domain unanswerable abstained (abstention precision "
        f"{abst_prec:.3f}, recall {abst_rec:.3f}; cost ratio {args.cost_ratio:g}:1) |",
        f"| `abstain_sentence_threshold` | "
        f"{float(defaults['abstain_sentence_threshold'].default):.2f} | **{sentence_t:.2f}** | "
        f"extractive mode only; lowest best-sentence cosine of an answerable question "
        f"{s_lowest:.3f}, minus a 0.025 margin, rounded down to 0.05: {s_wrong}/{n_ans} "
        f"answerable wrongly abstained, {s_caught}/{len(in_dom)} in-domain unanswerable "
        "abstained |",
        "",
        "## support_threshold",
        "",
        f"Data: `{_rel(args.labels)}`"
        f", {len(rows)} sentences written by hand from the abstracts of the bundled sample corpus, "
        f"{sum(r.gold for r in rows)} labelled supported (paraphrases and condensations of what "
        f"the abstract says) and {sum(not r.gold for r in rows)} unsupported (wrong numbers, "
        "negations, wrong entities, overclaims, sentences about another paper). Each is checked "
        "as the engine checks an answer sentence: `check_support([(sentence, [1])], "
        '{1: title + ". " + abstract}, threshold=t, embedder=MiniLMEmbedder())`.',
        "",
        'Objective: **F1 of the "supported" class**, ties broken towards the stricter threshold. '
        "Balanced accuracy is shown too; on this nearly balanced set both peak in the same region.",
        "",
        *_support_table(rows, best.threshold),
        "",
        f"{len(ruled)} rows are decided by a rule whatever the threshold (a number absent from "
        f"the source); on the other {len(open_rows)} rows alone, the chosen threshold gives "
        f"precision {open_best.precision:.3f}, recall {open_best.recall:.3f}, "
        f"F1 {open_best.f1:.3f}, accuracy {open_best.accuracy:.3f}. {lex_note}",
        "",
        f"By kind, at {best.threshold:.2f}:",
        "",
        *_by_kind(rows, best.threshold),
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
        f"Data: `{_rel(args.questions)}` ({n_ans} answerable and {len(in_dom)} unanswerable "
        f"questions) plus {len(off)} off-topic questions written for this calibration "
        "(`OFF_TOPIC` in the script: cooking, sport, medicine, physics, history, other areas "
        "of computing). Score: the best dense cosine of the papers "
        '`qa.search(question, mode="hybrid")` returns, the quantity `PaperQA.ask` compares '
        "with `abstain_threshold`.",
        "",
        f"Cost ratio: wrongly abstaining on an answerable question counts **{args.cost_ratio:g}** "
        "times as much as answering an unanswerable one, which still shows checked citations "
        "and can end in the model's own abstention. The sample questions are deliberately "
        "paraphrased away from the titles, so real questions usually score higher than these. "
        "Cuts are midpoints between observed scores, rounded down to 0.01.",
        "",
        *_abstain_table(arows, abstain, cur_abstain),
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
        "corpus's subject, which it separates with a margin. In extractive mode the sentence "
        f"threshold catches {s_caught} of them (no sentence comes close to the question); the "
        "rest are left to the model's own abstention (the fixed phrase in the system prompt) "
        "and to the citation check.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
