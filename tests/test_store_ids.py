"""Own ids in the index (issue 10): kept, stable across re-ingests, and an index of the old
format (format 1, which dropped them) migrates paper by paper without duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_papers.core.papers import Paper, make_paper_id
from rag_papers.core.settings import load_settings
from rag_papers.engine.qa import PaperQA
from rag_papers.ingest.loaders import load_papers
from rag_papers.store import index as index_module
from rag_papers.store.index import PaperIndex

ROWS = [
    {"id": "pmid-21645374", "title": "Aspirin and colorectal cancer", "doi": "10.1000/asp.1"},
    {"id": "pmid-21645375", "title": "Statins in the elderly"},
    {"id": "2301.01234v2", "title": "An arXiv paper, by its arXiv id"},
    {"id": "https://doi.org/10.1000/XYZ.9", "title": "A paper by its DOI"},
    {"title": "A record without any id"},
]


def _corpus(path: Path) -> Path:
    lines = [
        json.dumps({**row, "abstract": f"Abstract {i}: a finding about {row['title'].lower()}."})
        for i, row in enumerate(ROWS)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _chunk_ids(index: PaperIndex) -> list[str]:
    return sorted(index.collection.get(include=[])["ids"])


def test_own_ids_are_kept_and_stable_across_reingests(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "mixed.jsonl")
    settings = load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path)
    with PaperQA(settings) as qa:
        assert qa.ingest([corpus]).added == 5
        again = qa.ingest([corpus])
        assert (again.added, again.unchanged) == (0, 5)
        ids = [p.id for p in qa.list_papers().papers]
        assert ids[:4] == ["pmid-21645374", "pmid-21645375", "2301.01234", "doi:10.1000/xyz.9"]
        assert ids[4].startswith("a-record-without-any-id-")
        assert qa.paper("pmid-21645374").doi == "10.1000/asp.1"  # type: ignore[union-attr]
        hits = qa.search("aspirin colorectal cancer", k=1)
        assert hits[0].paper.id == "pmid-21645374"
    index = PaperIndex(settings)
    assert len(_chunk_ids(index)) == 5 and len(index.bm25) == 5
    index.close()


def test_format_1_index_migrates_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "mixed.jsonl")
    settings = load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path)
    papers = load_papers(corpus).papers
    # The ids the old rule gave: an own id was dropped for the DOI or a title slug.
    old_ids = [
        p.id if p.id.startswith(("2301.", "doi:10.1000/xyz")) or p.id.startswith("a-record")
        else make_paper_id(title=p.title, doi=p.doi)
        for p in papers
    ]  # fmt: skip
    assert old_ids[0] == "doi:10.1000/asp.1" and old_ids[1].startswith("statins-in-the-")
    monkeypatch.setattr(index_module, "FORMAT_VERSION", 1)
    old = PaperIndex(settings)
    old.ingest([Paper(**{**p.to_dict(), "id": i}) for p, i in zip(papers, old_ids, strict=True)])
    assert old.collection.metadata["rag_papers:format"] == 1
    old.close()
    monkeypatch.undo()

    with PaperQA(settings) as qa:  # re-ingest the same file with today's ids
        report = qa.ingest([corpus])
        assert (report.added, report.migrated, report.unchanged) == (2, 2, 3)
        assert sorted(p.id for p in qa.list_papers().papers) == sorted(p.id for p in papers)
        again = qa.ingest([corpus])
        assert (again.added, again.migrated, again.unchanged) == (0, 0, 5)
    index = PaperIndex(settings)
    try:
        assert sorted(i.split("#")[0] for i in _chunk_ids(index)) == sorted(p.id for p in papers)
        assert index.catalog.count() == 5 and len(index.bm25) == 5
        assert index.stats()["chunks"] == 5
    finally:
        index.close()


def test_newer_index_format_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path)
    monkeypatch.setattr(index_module, "FORMAT_VERSION", 99)
    PaperIndex(settings).collection  # noqa: B018 - creates it, as a future version would
    monkeypatch.undo()
    with pytest.raises(index_module.IndexMismatchError, match="newer rag_papers"):
        PaperIndex(settings).collection  # noqa: B018
