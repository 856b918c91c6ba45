"""One Settings object.

Precedence: defaults < preset < TOML file < environment (RAG_PAPERS_*) < explicit overrides.
The TOML file: the one named, else $RAG_PAPERS_CONFIG, else the user's own config.toml
(``Settings.user_config_file()``) when it exists. A problem is one ``SettingsError`` line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag_papers.core import env
from rag_papers.core.config_files import PRESETS, preset_values, read_config_file
from rag_papers.core.errors import SettingsError
from rag_papers.core.specs import AnswerStyle, Mode, parse_llm_spec

__all__ = [
    "PRESETS",
    "Settings",
    "SettingsError",
    "load_settings",
    "preset_values",
    "read_config_file",
]

# Fields that never change an answer (paths, keys, limits, speed): left out of the fingerprint.
_FINGERPRINT_EXCLUDE = frozenset(
    """
    data_dir index_dir chroma_url openai_api_key server_api_key llm_timeout llm_max_retries
    max_body_bytes max_question_chars max_k history_file ingest_batch_papers
    auto_ingest_sample embed_batch_size embed_concurrency server_min_key_chars ingest_roots
    max_ingest_file_bytes ingest_queue_size allowed_llms llm_cache_size rate_limit_per_minute
    embed_workers embed_cache_entries refresh_seconds writer_wait_seconds writer_lease_seconds
    """.split()
)


class Settings(BaseSettings):
    """Everything rag_papers can be told. Every front end takes one instance, passed explicitly."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_PAPERS_",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path(user_data_dir("rag-papers", appauthor=False)),
        description="Base directory for indexes, chat history and caches.",
    )
    index_dir: Path | None = Field(
        default=None,
        description="Directory of the persistent Chroma index; default <data_dir>/index.",
    )
    collection: str = Field(default="papers", description="Chroma collection name.")
    chroma_url: str | None = Field(
        default=None,
        description="URL of a Chroma server (chroma run); when set, the index lives there "
        "and only the BM25 sidecar stays in index_dir.",
    )
    refresh_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="How often a long-running reader checks for another writer's ingest.",
    )
    writer_wait_seconds: float = Field(
        default=600.0, ge=0.0, description="How long an ingest waits for another one to finish."
    )
    writer_lease_seconds: float = Field(
        default=60.0, ge=5.0, description="A writer that stops renewing its lock loses it then."
    )
    auto_ingest_sample: bool = Field(
        default=True,
        description="Ingest the bundled sample corpus the first time a command needs an "
        "index and none exists.",
    )

    # --- embeddings and chunking ------------------------------------------------------
    embed_backend: Literal["minilm", "openai"] = Field(
        default="minilm",
        description="'minilm': bundled all-MiniLM-L6-v2 (ONNX, offline); 'openai': the "
        "OpenAI embeddings API.",
    )
    openai_embed_model: str = Field(
        default="text-embedding-3-small", description="Model for embed_backend='openai'."
    )
    embed_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Texts per model batch or embeddings request."
    )
    embed_concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight.")
    embed_cache_entries: int = Field(
        default=50_000,
        ge=0,
        description="Most embeddings kept in <data_dir>/cache/embeddings.sqlite "
        "(about 1.6 kB each with MiniLM), least recently used go first; 0: no cache.",
    )
    embed_workers: int = Field(
        default=1, ge=1, le=64, description="Local embedding workers (each its own model session)."
    )
    embed_max_tokens: int = Field(
        default=256, ge=16, le=512, description="Word pieces the bundled model reads per text."
    )
    chunk_tokens: int = Field(
        default=220,
        ge=32,
        description="Longest chunk in tiktoken tokens (title included); an abstract that "
        "fits stays one chunk.",
    )
    chunk_overlap: int = Field(
        default=40, ge=0, description="Tokens of sentence overlap between adjacent chunks."
    )
    tokenizer: str = Field(
        default="cl100k_base",
        description="tiktoken encoding for counting; one whose files are cached offline "
        "(cl100k_base, o200k_base ship with llama-index-core).",
    )
    ingest_batch_papers: int = Field(
        default=256,
        ge=1,
        description="Papers embedded and stored per step; each step is committed on its own.",
    )

    # --- retrieval -------------------------------------------------------------------
    retrieval_mode: Mode = Field(
        default="hybrid", description="Dense (Chroma), lexical (BM25) or both fused."
    )
    top_k: int = Field(default=6, ge=1, le=100, description="Papers retrieved per question.")
    candidates: int = Field(
        default=100, ge=1, le=2000, description="Chunks each branch returns before fusion."
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="weighted",
        description="'rrf': reciprocal rank fusion; 'weighted': min-max normalised scores "
        "mixed with dense_weight.",
    )
    rrf_k: int = Field(default=60, ge=1, description="Rank constant of RRF.")
    dense_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the dense branch in weighted fusion."
    )

    # --- answering ------------------------------------------------------------------
    llm: str = Field(
        default="extractive",
        description="'extractive' (no LLM), 'openai:MODEL' (OpenAI or any OpenAI-compatible "
        "server, see openai_base_url) or 'gguf:PATH' (local file, needs the 'local' extra).",
    )
    answer_style: AnswerStyle = Field(
        default="auto",
        description="LLM answers: 'grounded' (claims with verbatim quotes, each checked "
        "against its abstract), 'free' (prose with [n]) or 'auto' (grounded for gguf "
        "models and OpenAI-compatible servers, free for OpenAI itself).",
    )
    openai_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (Ollama, vLLM, llama.cpp).",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RAG_PAPERS_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="API key; OPENAI_API_KEY is read too.",
    )
    llm_timeout: float = Field(default=60.0, gt=0, description="Seconds per LLM request.")
    llm_max_retries: int = Field(
        default=3, ge=0, description="Retries on 429, 5xx and connection errors."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(default=512, ge=16, description="Longest completion, in tokens.")
    context_window: int | None = Field(
        default=None, description="Model context in tokens; default: known per backend."
    )
    prompt_budget: int = Field(
        default=3000, ge=200, description="Most tokens of sources put into one prompt."
    )
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "gpt-4.1-mini": (0.40, 1.60),
            "gpt-4.1": (2.00, 8.00),
            "text-embedding-3-small": (0.02, 0.0),
        },
        description="USD per million (prompt, completion) tokens, by model id; unknown: free.",
    )
    prompts: dict[str, Path] = Field(
        default_factory=dict, description="Prompt name -> a user's own template file."
    )
    extractive_sentences: int = Field(
        default=8, ge=1, le=20, description="Most sentences an extractive answer quotes."
    )
    extractive_per_paper: int = Field(
        default=7,
        ge=1,
        le=20,
        description="Most sentences an extractive answer takes from one paper.",
    )
    extractive_paper_margin: float = Field(
        default=0.10,
        ge=0.0,
        description="Extractive mode: a paper is quoted only when its best sentence is within "
        "this cosine similarity of the best paper's (calibrated on sample_dev.jsonl).",
    )
    extractive_retrieval_weight: float = Field(
        default=0.30,
        ge=0.0,
        description="Extractive mode: weight of a paper's retrieval score (relative to the "
        "first paper's) added to its best sentence's similarity when papers are cut "
        "(calibrated on sample_dev.jsonl).",
    )
    abstain_threshold: float = Field(
        default=0.25,
        description="Abstain when the best dense cosine similarity of any retrieved paper is "
        "below this (calibrated on eval/datasets/sample.jsonl).",
    )
    abstain_sentence_threshold: float = Field(
        default=0.40,
        description="Extractive mode: abstain when no sentence of the retrieved abstracts "
        "reaches this cosine similarity to the question (calibrated on "
        "eval/datasets/sample.jsonl: no answerable question below it).",
    )
    evidence_papers: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Best retrieved abstracts read to decide whether the question's ask "
        "(a number, a named subject) is in the retrieved text at all.",
    )
    ask_similarity: float = Field(
        default=0.55,
        description="A question asking for a quantity ('how many GPU hours') is answerable "
        "when a retrieved sentence holds a number and every word of the ask, or a number, the "
        "ask's head noun and this cosine similarity to the question (calibrated on "
        "eval/datasets/sample_dev.jsonl).",
    )
    unseen_subject_threshold: float = Field(
        default=0.50,
        description="Abstain when the question names a technical term the collection has "
        "never seen and the best dense similarity is below this (sample_dev.jsonl).",
    )
    unseen_terms_threshold: float = Field(
        default=0.40,
        description="Abstain when two or more of the question's subject words appear nowhere "
        "in the collection and the best dense similarity is below this (sample_dev.jsonl).",
    )
    disagreement_threshold: float = Field(
        default=0.40,
        description="Abstain on a 'which paper' question when dense and BM25 rank different "
        "papers first and the best dense similarity is below this (sample_dev.jsonl).",
    )
    relevance_threshold: float = Field(
        default=0.30,
        description="A claim sentence counts as supported only when it also bears on the "
        "question (cosine similarity at least this), and extractive answers quote no sentence "
        "under it. Every reference-answer sentence of sample_dev.jsonl reaches it; 68% of the "
        "sentences of low-ranked off-topic papers do not.",
    )
    support_threshold: float = Field(
        default=0.69,
        description="A sentence without numbers is supported when its overlap with a cited "
        "source reaches this (calibrated on eval/datasets/support_labels.jsonl).",
    )

    # --- front ends -------------------------------------------------------------------
    history_file: Path | None = Field(
        default=None, description="Chat history file; default <data_dir>/chat_history."
    )
    server_api_key: SecretStr | None = Field(
        default=None,
        description="Key required by the HTTP server off loopback, and always for ingest.",
    )
    max_body_bytes: int = Field(default=20_000_000, description="Largest HTTP request body.")
    max_question_chars: int = Field(default=2000, description="Longest question accepted.")
    max_k: int = Field(default=50, ge=1, le=1000, description="Largest k a request may ask for.")
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description="API requests a minute per client address off loopback (0: no limit).",
    )
    server_min_key_chars: int = Field(
        default=16, ge=1, description="Shortest server_api_key the server starts with."
    )
    ingest_roots: list[Path] = Field(
        default_factory=list,
        description="Folders the server may ingest from by path (POST /v1/ingest with 'path'); "
        "none by default: the server ingests uploads only.",
    )
    max_ingest_file_bytes: int = Field(
        default=200_000_000, ge=1, description="Largest file one ingest reads (upload or path)."
    )
    ingest_queue_size: int = Field(
        default=4, ge=1, le=1000, description="Server ingest jobs waiting at most; more get 429."
    )
    allowed_llms: list[str] = Field(
        default_factory=list,
        description="LLM specs an HTTP client may ask for besides the configured llm and "
        "'extractive'; empty: only those two.",
    )
    llm_cache_size: int = Field(
        default=4, ge=1, le=64, description="LLM backends kept open at once (least recent go)."
    )
    max_abstract_chars: int = Field(
        default=20_000,
        ge=100,
        description="Longest abstract ingested; longer records are reported and skipped.",
    )

    @field_validator("tokenizer")
    @classmethod
    def _offline_tokenizer(cls, value: str) -> str:
        # tiktoken downloads an encoding it has not cached: refuse instead of going online.
        if value not in (available := env.offline_encodings()):
            raise ValueError(
                f"{value!r} is not available offline (tiktoken would download it); "
                f"choose one of {', '.join(available) or 'none: no tiktoken cache found'}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        parse_llm_spec(self.llm)  # ValueError naming the grammar
        return self

    @property
    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.data_dir / "index"

    @property
    def resolved_history_file(self) -> Path:
        return self.history_file or self.data_dir / "chat_history"

    user_config_file = staticmethod(env.user_config_file)
    config_file_in_use = staticmethod(env.config_file_in_use)

    def fingerprint(self) -> str:
        """Short hash of every setting that changes an answer (not paths, keys or limits)."""
        data = self.model_dump(mode="json", exclude=set(_FINGERPRINT_EXCLUDE))
        blob = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_settings(
    *, config: Path | str | None = None, preset: str | None = None, **overrides: Any
) -> Settings:
    """Build Settings: defaults < preset < config file < RAG_PAPERS_* env < overrides.

    ``config`` may itself name a preset (``preset = "openai"``); overrides that are None
    are ignored so CLI options left unset do not mask the environment.
    """
    path = env.config_file_in_use(config)
    file_data = read_config_file(path, "config file") if path else {}
    preset = preset or file_data.pop("preset", None) or os.environ.get("RAG_PAPERS_PRESET")
    file_data.pop("preset", None)
    data: dict[str, Any] = {**(preset_values(preset) if preset else {}), **file_data}
    try:
        from_env = Settings()
    except ValueError as exc:  # a bad RAG_PAPERS_* value: name the variable and field
        problem = env.describe_validation_error(exc, env_fields=Settings.model_fields)
        raise SettingsError(f"invalid environment setting: {problem}") from None
    data.update({k: getattr(from_env, k) for k in from_env.model_fields_set})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValueError as exc:  # pydantic's ValidationError included
        where = f" (config file {path})" if path else ""
        raise SettingsError(
            f"invalid settings{where}: {env.describe_validation_error(exc)}"
        ) from None
