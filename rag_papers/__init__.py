"""rag_papers: question answering over paper abstracts, with checked citations.

Public API: ``PaperQA`` (ingest, search, ask, stream, chat, llama-index adapters), one
``Settings`` object built with ``load_settings``, and the typed results it returns. Names are
resolved lazily so ``import rag_papers`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PaperQA": "rag_papers.engine",
    "sample_corpus_path": "rag_papers.engine",
    "Settings": "rag_papers.settings",
    "SettingsError": "rag_papers.settings",
    "load_settings": "rag_papers.settings",
    "Answer": "rag_papers.answer",
    "Citation": "rag_papers.answer",
    "Source": "rag_papers.answer",
    "SentenceVerdict": "rag_papers.answer",
    "Usage": "rag_papers.answer",
    "ABSTAIN_PHRASE": "rag_papers.answer",
    "Filters": "rag_papers.retrieval",
    "ScoredPaper": "rag_papers.retrieval",
    "Paper": "rag_papers.papers",
    "IngestReport": "rag_papers.index",
    "IndexMismatchError": "rag_papers.index",
    "StoreUnavailableError": "rag_papers.index",
    "LoaderError": "rag_papers.loaders",
    "LLMError": "rag_papers.llms",
    "ChatSession": "rag_papers.chat",
}

__all__ = [
    "ABSTAIN_PHRASE",
    "Answer",
    "ChatSession",
    "Citation",
    "Filters",
    "IndexMismatchError",
    "IngestReport",
    "LLMError",
    "LoaderError",
    "Paper",
    "PaperQA",
    "ScoredPaper",
    "SentenceVerdict",
    "Settings",
    "SettingsError",
    "Source",
    "StoreUnavailableError",
    "Usage",
    "__version__",
    "load_settings",
    "sample_corpus_path",
]

if TYPE_CHECKING:
    from rag_papers.answer import (
        ABSTAIN_PHRASE,
        Answer,
        Citation,
        SentenceVerdict,
        Source,
        Usage,
    )
    from rag_papers.chat import ChatSession
    from rag_papers.engine import PaperQA, sample_corpus_path
    from rag_papers.index import IndexMismatchError, IngestReport, StoreUnavailableError
    from rag_papers.llms import LLMError
    from rag_papers.loaders import LoaderError
    from rag_papers.papers import Paper
    from rag_papers.retrieval import Filters, ScoredPaper
    from rag_papers.settings import Settings, SettingsError, load_settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rag_papers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
