"""The one place ranx is called: ranked id lists in, per-query or mean scores out.

ranx is imported lazily (it costs seconds: numba; and it is in the ``eval`` extra), after
``prepare_eval_environment`` (ir_datasets, imported by ranx, writes its home folder).
Ranked lists are handed to it with strictly decreasing rank-derived scores, so ranx sees
exactly the engine's order, ties included, whatever the engine's own scores were.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

from rag_papers.evaluation.extra import prepare_eval_environment

__all__ = ["rank_scores", "ranx_means", "ranx_scores"]


def rank_scores(ids: Iterable[str]) -> dict[str, float]:
    """id -> a score that decreases with rank (duplicates keep their first rank)."""
    ranked = list(dict.fromkeys(ids))
    return {pid: float(len(ranked) - i) for i, pid in enumerate(ranked)}


def ranx_scores(
    gold: Mapping[str, Sequence[str]], ranked: Mapping[str, Sequence[str]], metric: str
) -> dict[str, float]:
    """Per-query ``metric`` (ranx syntax, e.g. 'ndcg@10') for ranked lists against gold.

    Every query of ``gold`` gets a value; one with nothing ranked scores 0.
    """
    if not gold:
        return {}
    prepare_eval_environment()
    from ranx import Qrels, Run, evaluate

    qrels = Qrels({qid: dict.fromkeys(ids, 1) for qid, ids in gold.items()})
    run_dict = {qid: rank_scores(ids) for qid, ids in ranked.items() if ids and qid in gold}
    if not run_dict:
        return dict.fromkeys(gold, 0.0)
    run = Run(run_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's unsafe-cast chatter
        evaluate(qrels, run, metric, return_mean=False, make_comparable=True)
    per_query = run.scores[metric]
    return {qid: float(per_query.get(qid, 0.0)) for qid in gold}


def ranx_means(
    qrels: Mapping[str, Mapping[str, int]],
    ranked: Mapping[str, Sequence[str]],
    metrics: Sequence[str],
) -> dict[str, float]:
    """metric -> mean over the qrels' queries (graded relevance; a query with no results
    scores 0), rounded to 6 places."""
    prepare_eval_environment()
    from ranx import Qrels, Run, evaluate

    run_dict = {qid: rank_scores(ids) for qid, ids in ranked.items() if ids and qid in qrels}
    if not run_dict:
        return dict.fromkeys(metrics, 0.0)
    q = Qrels({qid: dict(docs) for qid, docs in qrels.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(q, Run(run_dict), list(metrics), make_comparable=True)
    if len(metrics) == 1:  # ranx returns a bare float for a single metric
        return {metrics[0]: round(float(res), 6)}  # type: ignore[arg-type]
    return {m: round(float(res[m]), 6) for m in metrics}  # type: ignore[index]
