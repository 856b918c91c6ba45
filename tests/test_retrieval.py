"""Retrieval: modes, fusion, per-paper collapse, filters applied identically to both branches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_papers.core.settings import Settings, load_settings
from rag_papers.ingest.loaders import load_papers
from rag_papers.retrieval.retriever import Filters, Retriever, fuse
from rag_papers.store.index import PaperIndex


@pytest.fixture(scope="module")
def arxiv_index(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> PaperIndex:
    """60 arXiv cs.CL papers with years spread over 2020-2025 so year filters bite."""
    papers = load_papers(shared_dir / "datasets/arxiv/arxiv_cscl_2026_500.json").papers[:60]
    for i, p in enumerate(papers):
        p.year = 2020 + i % 6
    root = tmp_path_factory.mktemp("arxiv-index")
    index = PaperIndex(load_settings(index_dir=root, data_dir=root))
    index.ingest(papers)
    return index


def _retriever(index: PaperIndex, **overrides: object) -> Retriever:
    settings: Settings = index.settings.model_copy(update=overrides)
    return Retriever(index, settings)


def test_fuse_rrf_and_weighted() -> None:
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    lexical = {"b": 12.0, "d": 3.0}
    rrf = fuse(dense, lexical, method="rrf", rrf_k=60)
    assert max(rrf, key=rrf.get) == "b"  # ranked well by both
    weighted = fuse(dense, lexical, method="weighted", dense_weight=1.0)
    assert weighted["a"] == 1.0 and weighted["d"] == 0.0
    half = fuse(dense, lexical, method="weighted", dense_weight=0.5)
    assert half["b"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_modes_find_the_sample_paper(sample_qa) -> None:  # type: ignore[no-untyped-def]
    q = "self-reflection tokens to decide when to retrieve and critique generations"
    for mode in ("dense", "bm25", "hybrid"):
        results = sample_qa.search(q, k=5, mode=mode)
        assert results, mode
        assert "Self-RAG" in results[0].paper.title, (mode, [r.paper.title for r in results])
        assert [r.rank for r in results] == list(range(1, len(results) + 1))
        assert len({r.paper.id for r in results}) == len(results)  # collapsed to papers
    hybrid = sample_qa.search(q, k=5, mode="hybrid")[0]
    assert hybrid.dense is not None and hybrid.bm25 is not None


def test_exact_acronym_found_by_bm25(sample_qa) -> None:  # type: ignore[no-untyped-def]
    results = sample_qa.search("RegDGCNN", k=3, mode="bm25")
    assert results and results[0].paper.title.startswith("DrivAerNet")


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_apply_identically(arxiv_index: PaperIndex, mode: str) -> None:
    r = _retriever(arxiv_index, candidates=200)
    papers = arxiv_index.catalog.list()
    author = papers[7].authors[0]
    category = "cs.AI"
    query = "language models evaluation benchmark"
    cases = [
        (Filters(year_min=2022, year_max=2023), lambda p: 2022 <= p.year <= 2023),
        (
            Filters(author=author.split()[-1].lower()),
            lambda p: any(author.split()[-1].lower() in a.lower() for a in p.authors),
        ),
        (Filters(category=category), lambda p: category in p.categories),
        (
            Filters(paper_ids=[papers[3].id, papers[4].id]),
            lambda p: p.id in {papers[3].id, papers[4].id},
        ),
        (
            Filters(year_min=2024, category="cs.CL"),
            lambda p: p.year >= 2024 and "cs.CL" in p.categories,
        ),
    ]
    for filters, ok in cases:
        results = r.retrieve(query, k=60, mode=mode, filters=filters)  # type: ignore[arg-type]
        assert all(ok(x.paper) for x in results), (filters, [x.paper.id for x in results])
        allowed = {p.id for p in papers if ok(p)}
        assert {x.paper.id for x in results} <= allowed
        if mode == "dense":  # dense ranks every allowed paper (k large enough)
            assert {x.paper.id for x in results} == allowed


def test_filter_matching_nothing(arxiv_index: PaperIndex) -> None:
    r = _retriever(arxiv_index)
    assert r.retrieve("anything", filters=Filters(year_min=1990, year_max=1991)) == []
    assert r.retrieve("anything", filters=Filters(author="no such person zz")) == []


def test_parse_years() -> None:
    assert Filters.parse_years("2023:2025") == (2023, 2025)
    assert Filters.parse_years("2023:") == (2023, None)
    assert Filters.parse_years(":2024") == (None, 2024)
    assert Filters.parse_years("2024") == (2024, 2024)
    with pytest.raises(ValueError, match="year range"):
        Filters.parse_years("last year")


def test_search_results_serialise(sample_qa) -> None:  # type: ignore[no-untyped-def]
    results = sample_qa.search("aerodynamic drag of cars", k=3)
    data = json.loads(json.dumps([r.to_dict() for r in results]))
    assert data[0]["title"].startswith("DrivAerNet")
