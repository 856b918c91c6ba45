"""BEIR retrieval evaluation: ingest a BEIR corpus into an index of its own, run every query
of a split through the engine's retriever per mode, and score with ranx.

A BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv. The index lives at
<data_dir>/beir/<dataset name> by default and is reused: the ingest is idempotent (papers
whose content hash is unchanged are skipped), so only the first run pays for embedding.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers import MODES
from rag_papers.evaluation.paths import beir_name, dedicated_index_dir
from rag_papers.evaluation.ranx_adapter import ranx_means

if TYPE_CHECKING:
    from rag_papers import IngestReport, Mode, PaperQA, Settings

__all__ = [
    "BEIR_METRICS",
    "PUBLISHED",
    "BeirData",
    "BeirError",
    "BeirResult",
    "TuneResult",
    "beir_runs",
    "beir_settings",
    "evaluate_runs",
    "fuse_runs",
    "ingest_beir",
    "load_beir",
    "run_beir",
    "tune_fusion",
    "write_beir_report",
]

BEIR_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")

# Published nDCG@10 on the test split (BEIR paper and model cards), for the report.
PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "scifact": [
        ("BM25", "0.665–0.679"),
        ("all-MiniLM-L6-v2", "0.645"),
        ("bge-small-en-v1.5", "0.713"),
        ("BGE-base-en-v1.5", "0.741"),
        ("BM25 + MiniLM cross-encoder", "0.682"),
    ],
}

ScoreMap = dict[str, dict[str, float]]  # query id -> paper id -> score (engine order)
BeirProgress = Callable[[str, int, int], None]


class BeirError(ValueError):
    """A BEIR folder that cannot be used; the message names the file."""


@dataclass(slots=True)
class BeirData:
    name: str
    folder: Path
    split: str
    corpus: Path
    queries: dict[str, str]  # only the queries of the split
    qrels: dict[str, dict[str, int]]

    def head(self, n: int | None) -> BeirData:
        if n is None:
            return self
        keep = list(self.queries)[:n]
        return BeirData(
            self.name,
            self.folder,
            self.split,
            self.corpus,
            {q: self.queries[q] for q in keep},
            {q: self.qrels[q] for q in keep},
        )


def load_beir(folder: Path | str, split: str = "test") -> BeirData:
    folder = Path(folder)
    corpus = folder / "corpus.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    queries_path = folder / "queries.jsonl"
    for path in (corpus, queries_path, qrels_path):
        if not path.is_file():
            raise BeirError(
                f"{path}: missing (a BEIR folder has corpus.jsonl, queries.jsonl "
                f"and qrels/<split>.tsv)"
            )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for number, rec in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not rec or (number == 1 and rec[0] == "query-id"):
                continue
            try:
                qid, doc, score = rec[0], rec[1], int(rec[2])
            except (IndexError, ValueError):
                raise BeirError(
                    f"{qrels_path}:{number}: expected query-id, corpus-id, score"
                ) from None
            if score > 0:
                qrels.setdefault(qid, {})[doc] = score
    texts: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                texts[str(rec["_id"])] = str(rec["text"])
            except (ValueError, KeyError, TypeError):
                raise BeirError(f"{queries_path}:{number}: expected {{'_id', 'text'}}") from None
    if missing := [q for q in qrels if q not in texts]:
        raise BeirError(
            f"{qrels_path}: queries not in {queries_path.name}: {', '.join(missing[:5])}"
        )
    if not qrels:
        raise BeirError(f"{qrels_path}: no relevance judgements")
    return BeirData(
        name=beir_name(folder.resolve()),
        folder=folder,
        split=split,
        corpus=corpus,
        queries={q: texts[q] for q in qrels},
        qrels=qrels,
    )


def beir_settings(
    settings: Settings, folder: Path | str, index_dir: Path | str | None = None
) -> Settings:
    """Settings for the dataset's own (local) index; everything else as given."""
    target = Path(index_dir) if index_dir else dedicated_index_dir(settings, folder)
    return settings.model_copy(update={"index_dir": target, "chroma_url": None})


def ingest_beir(
    qa: PaperQA, data: BeirData, *, progress: Callable[[str, int, int], None] | None = None
) -> IngestReport:
    return qa.ingest([data.corpus], format="beir", progress=progress)


def beir_runs(
    qa: PaperQA,
    queries: Mapping[str, str],
    modes: Iterable[Mode],
    k: int = 100,
    *,
    progress: BeirProgress | None = None,
) -> dict[str, ScoreMap]:
    """mode -> query id -> paper id -> engine score, from qa.search (the engine's retriever).

    Dicts keep the engine's order (best first). With k >= settings.candidates, the dense and
    bm25 maps are each branch's full candidate list, so fuse_runs reproduces 'hybrid'.
    """
    out: dict[str, ScoreMap] = {}
    for mode in modes:
        run: ScoreMap = {}
        total = len(queries)
        for i, (qid, text) in enumerate(queries.items(), start=1):
            results = qa.search(text, k=k, mode=mode)
            run[qid] = {r.paper.id: float(r.score) for r in results}
            if progress:
                progress(mode, i, total)
        out[mode] = run
    return out


def evaluate_runs(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = BEIR_METRICS,
) -> dict[str, dict[str, float]]:
    """mode -> metric -> mean over the qrels' queries (a query with no results scores 0).

    Only each run's order counts (ranx sees rank-derived scores), as in the engine.
    """
    return {
        mode: ranx_means(qrels, {qid: list(scores) for qid, scores in run.items()}, metrics)
        for mode, run in runs.items()
    }


def fuse_runs(
    dense: ScoreMap,
    bm25: ScoreMap,
    *,
    method: str,
    dense_weight: float = 0.5,
    rrf_k: int = 60,
    k: int = 100,
) -> ScoreMap:
    """Per query, the engine's fuse() of the two branch maps, top k, engine tie order."""
    # The one import below PaperQA (ignored by import-linter for this line only): tuning
    # re-fuses cached branch runs offline with the engine's own fusion, so the grid scores
    # are exactly what the engine would return, without re-querying per setting.
    from rag_papers.retrieval.retriever import fuse

    out: ScoreMap = {}
    for qid in dense.keys() | bm25.keys():
        fused = fuse(
            dense.get(qid, {}),
            bm25.get(qid, {}),
            method=method,  # type: ignore[arg-type]
            dense_weight=dense_weight,
            rrf_k=rrf_k,
        )
        top = sorted(fused, key=lambda pid: (-fused[pid], pid))[:k]
        out[qid] = {pid: fused[pid] for pid in top}
    return out


@dataclass(slots=True)
class BeirResult:
    data: BeirData
    modes: dict[str, dict[str, float]]
    seconds: dict[str, float]
    ingest: dict[str, Any]
    k: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.data.name,
            "split": self.data.split,
            "folder": str(self.data.folder),
            "n_queries": len(self.data.queries),
            "k": self.k,
            **self.meta,
            "ingest": self.ingest,
            "modes": {
                m: {**v, "seconds": round(self.seconds.get(m, 0.0), 2)}
                for m, v in self.modes.items()
            },
            "published_ndcg@10": dict(PUBLISHED.get(self.data.name.lower(), [])),
        }


def _meta(qa: PaperQA) -> dict[str, Any]:
    from rag_papers import __version__

    s = qa.settings
    stats = qa.stats()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "settings_fingerprint": s.fingerprint(),
        "embed_model": stats.get("embed_model"),
        "n_docs": stats.get("papers"),
        "index": str(s.resolved_index_dir),
        "fusion": s.fusion,
        "dense_weight": s.dense_weight,
        "rrf_k": s.rrf_k,
        "candidates": s.candidates,
    }


def run_beir(
    qa: PaperQA,
    data: BeirData,
    *,
    modes: Sequence[Mode] = MODES,
    k: int = 100,
    progress: BeirProgress | None = None,
) -> BeirResult:
    """Ingest (idempotent), retrieve every query per mode, score with ranx."""
    t = time.perf_counter()
    report = ingest_beir(
        qa, data, progress=(lambda s, d, n: progress(f"ingest:{s}", d, n)) if progress else None
    )
    ingest = {**report.to_dict(), "seconds": round(time.perf_counter() - t, 2)}
    ingest.pop("rejected", None)
    ingest["rejected"] = len(report.rejected)
    ingest.pop("duplicates", None)
    runs: dict[str, ScoreMap] = {}
    seconds: dict[str, float] = {}
    for mode in modes:
        t = time.perf_counter()
        runs.update(beir_runs(qa, data.queries, [mode], k, progress=progress))
        seconds[mode] = time.perf_counter() - t
    scores = evaluate_runs(data.qrels, runs)
    return BeirResult(data, scores, seconds, ingest, k, _meta(qa))


def write_beir_report(result: BeirResult, out_dir: Path | str) -> tuple[Path, Path]:
    """beir-<name>-<split>.json and .md in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"beir-{result.data.name}-{result.data.split}"
    data = result.to_dict()
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# BEIR {result.data.name} ({result.data.split})",
        "",
        f"- queries: {data['n_queries']}, documents: {data.get('n_docs')}, k = {result.k}",
        f"- embedding model: {data.get('embed_model')}; fusion: {data.get('fusion')} "
        f"(dense_weight {data.get('dense_weight')}, rrf_k {data.get('rrf_k')}), "
        f"candidates {data.get('candidates')}",
        f"- settings fingerprint {data.get('settings_fingerprint')}, rag_papers "
        f"{data.get('package_version')}, {data.get('date')}",
        f"- ingest: {result.ingest.get('added', 0)} added, {result.ingest.get('unchanged', 0)} "
        f"unchanged, {result.ingest.get('seconds')} s",
        "",
        "| mode | " + " | ".join(BEIR_METRICS) + " | seconds |",
        "|---|" + "---:|" * (len(BEIR_METRICS) + 1),
    ]
    for mode, vals in result.modes.items():
        cells = " | ".join(f"{vals[m]:.3f}" for m in BEIR_METRICS)
        lines.append(f"| {mode} | {cells} | {result.seconds.get(mode, 0):.1f} |")
    if published := PUBLISHED.get(result.data.name.lower()):
        lines += [
            "",
            "Published nDCG@10 on the test split:",
            "",
            "| system | nDCG@10 |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {value} |" for name, value in published]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


# --- tuning -----------------------------------------------------------------------------------
@dataclass(slots=True)
class TuneResult:
    metric: str
    grid: list[dict[str, Any]]  # {"fusion", "dense_weight" | "rrf_k", metric...}
    best: dict[str, Any]
    branches: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best": self.best,
            "branches": self.branches,
            "grid": self.grid,
        }


DENSE_WEIGHTS = tuple(round(i / 10, 1) for i in range(11))
RRF_KS = (1, 5, 10, 20, 30, 40, 60, 80, 100)


def tune_fusion(
    qa: PaperQA,
    data: BeirData,
    *,
    metric: str = "ndcg@10",
    k: int = 100,
    dense_weights: Sequence[float] = DENSE_WEIGHTS,
    rrf_ks: Sequence[int] = RRF_KS,
    progress: BeirProgress | None = None,
) -> TuneResult:
    """Grid-search weighted fusion (dense_weight) and RRF (rrf_k) on one dense and one bm25
    run: every setting re-fuses the stored per-query candidate maps, nothing is re-queried."""
    depth = max(k, qa.settings.candidates)  # each branch's full candidate list
    branches = beir_runs(qa, data.queries, ["dense", "bm25"], depth, progress=progress)
    metrics = list(dict.fromkeys([metric, *BEIR_METRICS]))
    grid: list[dict[str, Any]] = []
    base = evaluate_runs(data.qrels, branches, metrics)
    settings_grid: list[dict[str, Any]] = [
        {"fusion": "weighted", "dense_weight": w} for w in dense_weights
    ] + [{"fusion": "rrf", "rrf_k": r} for r in rrf_ks]
    for i, setting in enumerate(settings_grid, start=1):
        fused = fuse_runs(
            branches["dense"],
            branches["bm25"],
            method=setting["fusion"],
            dense_weight=setting.get("dense_weight", 0.5),
            rrf_k=setting.get("rrf_k", 60),
            k=k,
        )
        grid.append({**setting, **evaluate_runs(data.qrels, {"x": fused}, metrics)["x"]})
        if progress:
            progress("fuse", i, len(settings_grid))
    best = max(grid, key=lambda row: row[metric])
    return TuneResult(metric, grid, best, base)
