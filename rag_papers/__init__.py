"""rag_papers: question answering over paper abstracts, with checked citations.

Public API: ``PaperQA`` (ingest, search, ask, stream, chat, llama-index adapters), one
``Settings`` object built with ``load_settings``, and the typed results it returns. Front
ends (CLI, server, chat) import from here only. Names are resolved lazily so
``import rag_papers`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PaperQA": "rag_papers.engine.qa",
    "PaperPage": "rag_papers.engine.qa",
    "sample_corpus_path": "rag_papers.engine.qa",
    "AnswerPipeline": "rag_papers.engine.pipeline",
    "ChatSession": "rag_papers.engine.conversation",
    "Turn": "rag_papers.engine.conversation",
    "SessionSource": "rag_papers.engine.conversation",
    "CancelToken": "rag_papers.engine.streaming",
    "AnswerCancelled": "rag_papers.engine.streaming",
    "RagPapersError": "rag_papers.core.errors",
    "Settings": "rag_papers.core.settings",
    "SettingsError": "rag_papers.core.settings",
    "load_settings": "rag_papers.core.settings",
    "preset_values": "rag_papers.core.settings",
    "read_config_file": "rag_papers.core.settings",
    "PRESETS": "rag_papers.core.settings",
    "MODES": "rag_papers.core.specs",
    "ANSWER_STYLES": "rag_papers.core.specs",
    "AnswerStyle": "rag_papers.core.specs",
    "Mode": "rag_papers.core.specs",
    "FORMATS": "rag_papers.core.specs",
    "QUESTION_TYPES": "rag_papers.core.specs",
    "LLM_SPEC_HELP": "rag_papers.core.specs",
    "LLMSpec": "rag_papers.core.specs",
    "parse_llm_spec": "rag_papers.core.specs",
    "Paper": "rag_papers.core.papers",
    "format_authors": "rag_papers.core.papers",
    "format_reference": "rag_papers.core.papers",
    "Answer": "rag_papers.answering.contract",
    "Citation": "rag_papers.answering.contract",
    "Source": "rag_papers.answering.contract",
    "SentenceVerdict": "rag_papers.answering.contract",
    "Quote": "rag_papers.answering.contract",
    "DroppedClaim": "rag_papers.answering.contract",
    "Usage": "rag_papers.answering.contract",
    "ABSTAIN_PHRASE": "rag_papers.answering.contract",
    "CITATION_PATTERN": "rag_papers.answering.contract",
    "expand_markers": "rag_papers.answering.citations",
    "encoding": "rag_papers.core.text",
    "EXTRACTIVE_LABEL": "rag_papers.answering.contract",
    "answer_label": "rag_papers.answering.contract",
    "LLMError": "rag_papers.answering.llms",
    "Generation": "rag_papers.answering.llms",
    "Filters": "rag_papers.retrieval.retriever",
    "FilterError": "rag_papers.core.errors",
    "MissingExtraError": "rag_papers.core.errors",
    "ScoredPaper": "rag_papers.retrieval.retriever",
    "IngestReport": "rag_papers.store.index",
    "IndexMismatchError": "rag_papers.store.index",
    "StoreUnavailableError": "rag_papers.store.index",
    "RebuildError": "rag_papers.store.errors",
    "ReadOnlyIndexError": "rag_papers.store.errors",
    "StoreDamagedError": "rag_papers.store.errors",
    "DiskFullError": "rag_papers.store.errors",
    "BoundsError": "rag_papers.store.bounds",
    "CatalogDamagedError": "rag_papers.store.catalog",
    "LoaderError": "rag_papers.ingest.loaders",
    "EmbeddingError": "rag_papers.store.embeddings",
    "WriterBusyError": "rag_papers.store.writelock",
    "resolve_fields": "rag_papers.ingest.loaders.records",
    "load_papers": "rag_papers.ingest.loaders",
    "Rejected": "rag_papers.ingest.loaders",
}

__all__ = [
    "ABSTAIN_PHRASE",
    "ANSWER_STYLES",
    "CITATION_PATTERN",
    "EXTRACTIVE_LABEL",
    "FORMATS",
    "LLM_SPEC_HELP",
    "MODES",
    "PRESETS",
    "QUESTION_TYPES",
    "Answer",
    "AnswerCancelled",
    "AnswerPipeline",
    "AnswerStyle",
    "BoundsError",
    "CancelToken",
    "CatalogDamagedError",
    "ChatSession",
    "Citation",
    "DiskFullError",
    "DroppedClaim",
    "EmbeddingError",
    "FilterError",
    "Filters",
    "Generation",
    "IndexMismatchError",
    "IngestReport",
    "LLMError",
    "LLMSpec",
    "LoaderError",
    "MissingExtraError",
    "Mode",
    "Paper",
    "PaperPage",
    "PaperQA",
    "Quote",
    "RagPapersError",
    "ReadOnlyIndexError",
    "RebuildError",
    "Rejected",
    "ScoredPaper",
    "SentenceVerdict",
    "SessionSource",
    "Settings",
    "SettingsError",
    "Source",
    "StoreDamagedError",
    "StoreUnavailableError",
    "Turn",
    "Usage",
    "WriterBusyError",
    "__version__",
    "answer_label",
    "encoding",
    "expand_markers",
    "format_authors",
    "format_reference",
    "load_papers",
    "load_settings",
    "parse_llm_spec",
    "preset_values",
    "read_config_file",
    "resolve_fields",
    "sample_corpus_path",
]

if TYPE_CHECKING:
    from rag_papers.answering.citations import expand_markers
    from rag_papers.answering.contract import (
        ABSTAIN_PHRASE,
        CITATION_PATTERN,
        EXTRACTIVE_LABEL,
        Answer,
        Citation,
        DroppedClaim,
        Quote,
        SentenceVerdict,
        Source,
        Usage,
        answer_label,
    )
    from rag_papers.answering.llms import Generation, LLMError
    from rag_papers.core.errors import FilterError, MissingExtraError, RagPapersError
    from rag_papers.core.papers import Paper, format_authors, format_reference
    from rag_papers.core.settings import (
        PRESETS,
        Settings,
        SettingsError,
        load_settings,
        preset_values,
        read_config_file,
    )
    from rag_papers.core.specs import (
        ANSWER_STYLES,
        FORMATS,
        LLM_SPEC_HELP,
        MODES,
        QUESTION_TYPES,
        AnswerStyle,
        LLMSpec,
        Mode,
        parse_llm_spec,
    )
    from rag_papers.core.text import encoding
    from rag_papers.engine.conversation import ChatSession, SessionSource, Turn
    from rag_papers.engine.pipeline import AnswerPipeline
    from rag_papers.engine.qa import PaperPage, PaperQA, sample_corpus_path
    from rag_papers.engine.streaming import AnswerCancelled, CancelToken
    from rag_papers.ingest.loaders import LoaderError, Rejected, load_papers
    from rag_papers.ingest.loaders.records import resolve_fields
    from rag_papers.retrieval.retriever import Filters, ScoredPaper
    from rag_papers.store.bounds import BoundsError
    from rag_papers.store.catalog import CatalogDamagedError
    from rag_papers.store.embeddings import EmbeddingError
    from rag_papers.store.errors import (
        DiskFullError,
        ReadOnlyIndexError,
        RebuildError,
        StoreDamagedError,
    )
    from rag_papers.store.index import IndexMismatchError, IngestReport, StoreUnavailableError
    from rag_papers.store.writelock import WriterBusyError


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rag_papers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
