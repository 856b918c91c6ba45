"""Calibrate settings.support_threshold and settings.abstain_threshold; write a report.

    .venv/bin/python benchmarks/calibrate.py [--cost-ratio 5] [--out eval/reports/calibration.md]

Everything is measured with the engine's own named answer steps (rag_papers.engine.pipeline),
over an index of the bundled sample corpus, so nothing here re-implements a rule:

support_threshold: each row of eval/datasets/support_labels.jsonl (a hand-labelled sentence
about one paper of the sample corpus) is written as a one-sentence answer citing that paper,
"sentence [1].", and judged by ``pipeline.check`` exactly as an answer sentence is. At
support_threshold 1.0 the score comes back threshold-independent (max of lexical
containment and embedding cosine), so it is computed once; a row whose number is not in the
source is rejected whatever the threshold. The chosen threshold maximises F1 of the
"supported" class (ties: the stricter threshold, then balanced accuracy).

abstain_threshold: for each question of eval/datasets/sample.jsonl, plus the off-topic
questions of calibrate_report.OFF_TOPIC, ``pipeline.retrieve(question, mode="hybrid")`` once;
every candidate threshold is then tried with ``pipeline.gate`` (the step PaperQA.ask runs).
The threshold minimises
cost = cost_ratio * (answerable questions wrongly abstained) + (unanswerable questions answered):
wrongly refusing a question the corpus answers is worse than answering an unanswerable one with
checked citations, and the sample questions are deliberately paraphrased, so real ones will
usually match better. Cuts are midpoints between observed scores (a margin on both sides),
rounded down to 0.01; among equally good cuts the lowest wins.

abstain_sentence_threshold (extractive mode): below every answerable question's best
sentence cosine (over the abstracts ``pipeline.context`` shows) by a margin; its effect is
then counted with ``pipeline.generate``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):  # run from a source checkout without installing
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from calibrate_report import OFF_TOPIC, Metrics, write_report  # noqa: E402

from rag_papers import (  # noqa: E402
    Answer,
    AnswerPipeline,
    Paper,
    PaperQA,
    ScoredPaper,
    Settings,
    load_settings,
)

# The step inputs (what retrieval found, what was shown, what was written) built by hand for
# one labelled sentence; and check_support for the one counterfactual the engine has no mode
# for: support without the embedder.
from rag_papers.answering.support import check_support  # noqa: E402
from rag_papers.engine.pipeline import Context, Generated, Retrieved  # noqa: E402

__all__ = [
    "AbstainRow",
    "SupportRow",
    "abstain_reasons",
    "abstain_scores",
    "abstains",
    "choose_abstain_threshold",
    "choose_sentence_threshold",
    "choose_support_threshold",
    "main",
    "predicted",
    "support_metrics",
    "support_scores",
    "with_thresholds",
]

SUPPORT_LABELS = ROOT / "eval" / "datasets" / "support_labels.jsonl"
SAMPLE_QUESTIONS = ROOT / "eval" / "datasets" / "sample.jsonl"
REPORT = ROOT / "eval" / "reports" / "calibration.md"


def with_thresholds(pipeline: AnswerPipeline, **thresholds: float) -> AnswerPipeline:
    """The same steps over the same open index, with some thresholds of Settings changed."""
    settings = pipeline.settings.model_copy(update=thresholds)
    return AnswerPipeline(settings, pipeline.index, pipeline.backend)


# --- support_threshold ---------------------------------------------------------------------
@dataclass(slots=True)
class SupportRow:
    id: str
    kind: str
    gold: bool  # labelled "supported"
    score: float  # the support score (0 when a rule decides)
    rule: str  # "" when the threshold decides; else why it is decided regardless


def _as_answer(sentence: str) -> str:
    """'A claim.' -> 'A claim [1].': a one-sentence answer citing source 1."""
    s = sentence.rstrip()
    end = s[-1] if s[-1] in ".!?" else "."
    return f"{s[:-1] if s[-1] in '.!?' else s} [1]{end}"


def support_scores(
    rows: Sequence[dict[str, str]], papers: dict[str, Paper], pipeline: AnswerPipeline | None
) -> list[SupportRow]:
    """The threshold-independent support score of every labelled row: from ``pipeline.check``
    (threshold 1.0: every score the threshold could decide is fully computed), or, with no
    pipeline, lexical containment alone."""
    steps = with_thresholds(pipeline, support_threshold=1.0) if pipeline else None
    out = []
    for row in rows:
        paper = papers.get(row["source_title"])
        if paper is None:
            raise SystemExit(f"{row['id']}: no paper titled {row['source_title']!r}")
        if steps is None:
            source = {1: f"{paper.title}. {paper.abstract}"}
            (v,) = check_support([(row["sentence"], [1])], source, threshold=math.inf)
        else:
            shown = Context(text="", shown=[ScoredPaper(paper=paper, score=1.0, rank=1)])
            answer = Answer(question="", text="", mode="extractive", model="calibration")
            checked = steps.check(answer, Generated(raw=_as_answer(row["sentence"])), shown)
            (v,) = checked.sentences
        decided_by_threshold = v.reason == "supported" or v.reason.startswith("weak overlap")
        rule = "" if decided_by_threshold else v.reason
        out.append(SupportRow(row["id"], row["kind"], row["label"] == "supported", v.score, rule))
    return out


def predicted(row: SupportRow, threshold: float) -> bool:
    """Whether the engine would call the row supported at ``threshold``."""
    if row.rule:
        return row.rule == "not a claim"  # a number rule or "no citation" rejects
    return row.score >= threshold


def support_metrics(rows: Sequence[SupportRow], threshold: float) -> Metrics:
    c: Counter[str] = Counter()
    for r in rows:
        pred = predicted(r, threshold)
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
    retrieved: Retrieved  # pipeline.retrieve's output, kept for every gate tried
    best_sentence: float  # best cosine of any sentence of the shown abstracts

    @property
    def answerable(self) -> bool:
        return self.type not in ("unanswerable", "off-topic")

    @property
    def best_dense(self) -> float:
        """The score the retrieval gate compares with abstain_threshold."""
        return self.retrieved.best_dense or 0.0


def abstain_scores(qa: PaperQA, questions: Sequence[dict[str, object]]) -> list[AbstainRow]:
    """Retrieve once per question with the engine's step; note the extractive gate's score."""
    pipeline = qa.pipeline("extractive")
    rows = []
    for q in questions:
        text = str(q["question"])
        retrieved = pipeline.retrieve(text, mode="hybrid")
        shown = {item.paper.id for item in pipeline.context(retrieved).shown}
        # The same ranking with each paper's best sentence (PaperQA.search, sentences=True).
        sentences = qa.search(text, mode="hybrid", sentences=True)
        best = max(
            (r.best_sentence_score or 0.0 for r in sentences if r.paper.id in shown), default=0.0
        )
        rows.append(AbstainRow(str(q["id"]), str(q["type"]), retrieved, float(best)))
    return rows


def abstain_reasons(
    rows: Sequence[AbstainRow],
    pipeline: AnswerPipeline,
    threshold: float,
    sentence_threshold: float | None = None,
) -> list[str | None]:
    """Per row, why the engine abstains (None: it answers): ``pipeline.gate`` at
    ``threshold``; with a ``sentence_threshold``, then also the extractive generate step."""
    update = {"abstain_threshold": threshold}
    if sentence_threshold is not None:
        update["abstain_sentence_threshold"] = sentence_threshold
    steps = with_thresholds(pipeline, **update)
    out = []
    for r in rows:
        why = steps.gate(r.retrieved)
        if why is None and sentence_threshold is not None:
            why = steps.generate(r.retrieved, steps.context(r.retrieved)).abstain_reason
        out.append(why)
    return out


def abstains(rows: Sequence[AbstainRow], pipeline: AnswerPipeline, threshold: float) -> list[bool]:
    """Per row, whether ``pipeline.gate`` refuses it at ``threshold``."""
    return [why is not None for why in abstain_reasons(rows, pipeline, threshold)]


def choose_sentence_threshold(rows: Sequence[AbstainRow], margin: float = 0.025) -> float:
    """Below every answerable question's best sentence by ``margin``, rounded down to 0.05:
    this gate must never refuse an answerable question of the calibration set."""
    lowest = min(r.best_sentence for r in rows if r.answerable)
    return math.floor((lowest - margin) * 20) / 20


def choose_abstain_threshold(
    rows: Sequence[AbstainRow], pipeline: AnswerPipeline, cost_ratio: float
) -> float:
    values = sorted({round(r.best_dense, 4) for r in rows})
    # Midpoints between observed scores keep a margin on both sides of the cut.
    candidates = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)]

    def cost(t: float) -> float:
        refused = abstains(rows, pipeline, t)
        wrong = sum(r.answerable and a for r, a in zip(rows, refused, strict=True))
        missed = sum(not r.answerable and not a for r, a in zip(rows, refused, strict=True))
        return cost_ratio * wrong + missed

    best = min(candidates, key=lambda t: (cost(t), t))
    return math.floor(best * 100) / 100  # rounding down only ever abstains less


# --- main ----------------------------------------------------------------------------------
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
    fields = Settings.model_fields
    defaults = {k: float(fields[k].default) for k in _THRESHOLDS}
    labels = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()]
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line]
    questions += [
        {"id": f"off{i:02d}", "question": q, "type": "off-topic"}
        for i, q in enumerate(OFF_TOPIC, 1)
    ]
    with tempfile.TemporaryDirectory(prefix="rag-papers-calibrate-") as tmp:
        index_dir = args.index_dir or Path(tmp) / "index"
        settings = load_settings(index_dir=index_dir, data_dir=Path(tmp))
        with PaperQA(settings, notify=print) as qa:
            pipeline = qa.pipeline("extractive")
            papers = {p.title: p for p in qa.list_papers().papers}
            support = support_scores(labels, papers, pipeline)
            lexical = support_scores(labels, papers, None)
            arows = abstain_scores(qa, questions)
            abstain = choose_abstain_threshold(arows, pipeline, args.cost_ratio)
            sentence_t = choose_sentence_threshold(arows)
            reasons = abstain_reasons(arows, pipeline, abstain)
            reasons_extractive = abstain_reasons(arows, pipeline, abstain, sentence_t)
            grid = _abstain_grid(arows, pipeline, abstain, defaults["abstain_threshold"])
    write_report(
        args.out,
        argv=sys.argv[1:] if argv is None else list(argv),
        seconds=time.perf_counter() - t0,
        labels_path=args.labels,
        questions_path=args.questions,
        cost_ratio=args.cost_ratio,
        defaults=defaults,
        support=support,
        best=choose_support_threshold(support),
        best_lexical=choose_support_threshold(lexical),
        metrics_at=lambda t: support_metrics(support, t),
        predicted=predicted,
        arows=arows,
        abstain=abstain,
        reasons=reasons,
        sentence_t=sentence_t,
        reasons_extractive=reasons_extractive,
        grid=grid,
    )
    print(f"wrote {args.out}")
    return 0


_THRESHOLDS = ("support_threshold", "abstain_threshold", "abstain_sentence_threshold")


def _abstain_grid(
    rows: Sequence[AbstainRow], pipeline: AnswerPipeline, chosen: float, current: float
) -> dict[float, list[bool]]:
    """The gate's decisions at the thresholds the report tabulates."""
    grid = sorted(
        {round(chosen + d / 100, 2) for d in range(-6, 7, 2)}
        | {round(current, 2), 0.15, 0.2, 0.3, 0.35, 0.4}
    )
    return {t: abstains(rows, pipeline, t) for t in grid}


if __name__ == "__main__":
    raise SystemExit(main())
