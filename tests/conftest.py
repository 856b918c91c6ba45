"""Shared fixtures: every user directory points into tmp; one sample index per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_papers.settings import Settings, load_settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():  # CI clones next to a copy of shared/
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _isolate_user_dirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Never touch the user's home or real config: data dir and HOME live in tmp."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("RAG_PAPERS_DATA_DIR", str(home / "rag-papers"))
    for var in (
        "RAG_PAPERS_CONFIG",
        "RAG_PAPERS_PRESET",
        "RAG_PAPERS_LLM",
        "OPENAI_API_KEY",
        "RAG_PAPERS_CHROMA_URL",
        "RAG_PAPERS_INDEX_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared data sets are missing: expected {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def _sample_index_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample corpus ingested once per test session (copied per test)."""
    from rag_papers.engine import PaperQA, sample_corpus_path

    root = tmp_path_factory.mktemp("sample-index")
    qa = PaperQA(load_settings(index_dir=root / "index", data_dir=root))
    report = qa.ingest([sample_corpus_path()])
    assert report.added == 84
    qa.index.close()
    return root / "index"


@pytest.fixture
def sample_settings(_sample_index_master: Path, tmp_path: Path) -> Settings:
    """Settings over a private copy of the sample index (tests may write to it)."""
    dest = tmp_path / "index"
    shutil.copytree(_sample_index_master, dest)
    return load_settings(index_dir=dest, data_dir=tmp_path)


@pytest.fixture
def sample_qa(sample_settings: Settings) -> Iterator[object]:
    from rag_papers.engine import PaperQA

    qa = PaperQA(sample_settings)
    yield qa
    qa.index.close()


@pytest.fixture(scope="session")
def shared_embedder() -> object:
    from rag_papers.embeddings import MiniLMEmbedder

    return MiniLMEmbedder()
