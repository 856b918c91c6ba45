"""Shared fixtures: every user directory points into tmp; one sample index per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import isolate_user_dirs

from rag_papers.core.settings import Settings, load_settings

# The data sets live in shared/ beside the checkout (CI lays a copy there too).
SHARED = Path(os.environ.get("RAG_PAPERS_SHARED") or Path(__file__).resolve().parents[2] / "shared")


@pytest.fixture(autouse=True)
def _isolate_user_dirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Never touch the user's home or real config: data dir and HOME live in tmp."""
    isolate_user_dirs(monkeypatch, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(
            f"the shared data sets are not at {SHARED}: put them there, or point "
            "RAG_PAPERS_SHARED at a folder holding corpus/ and datasets/, to run this test"
        )
    return SHARED


@pytest.fixture(scope="session")
def _sample_index_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample corpus ingested once per test session (copied per test)."""
    from rag_papers.engine.qa import PaperQA, sample_corpus_path

    root = tmp_path_factory.mktemp("sample-index")
    qa = PaperQA(load_settings(index_dir=root / "index", data_dir=root))
    report = qa.ingest([sample_corpus_path()])
    assert report.added == 84
    qa.close()
    return root / "index"


@pytest.fixture
def sample_settings(_sample_index_master: Path, tmp_path: Path) -> Settings:
    """Settings over a private copy of the sample index (tests may write to it)."""
    dest = tmp_path / "index"
    shutil.copytree(_sample_index_master, dest)
    return load_settings(index_dir=dest, data_dir=tmp_path)


@pytest.fixture
def sample_qa(sample_settings: Settings) -> Iterator[object]:
    from rag_papers.engine.qa import PaperQA

    qa = PaperQA(sample_settings)
    yield qa
    qa.close()


@pytest.fixture(scope="session")
def shared_embedder() -> object:
    from rag_papers.store.embeddings import MiniLMEmbedder

    return MiniLMEmbedder()
