"""The BM25 sidecar (bm25s): one document per paper (title + abstract), saved beside the index.

bm25s has no incremental update, so the sidecar is rebuilt from the catalog after every
ingest that wrote something; it records the catalog generation it was built from, and a
mismatch on open (an interrupted ingest, another writer) triggers a rebuild.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BM25Sidecar"]


def _stemmer() -> Any:
    import Stemmer  # PyStemmer: Snowball English, as Lucene-style BM25 baselines use

    return Stemmer.Stemmer("english")


class BM25Sidecar:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._model: Any = None
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._vocab: frozenset[str] | None = None
        self.generation: str | None = None
        self._stem = _stemmer()
        self._load()

    def _load(self) -> None:
        info = self.directory / "ids.json"
        if not info.exists():
            return
        import bm25s

        data = json.loads(info.read_text())
        self._ids = data["ids"]
        self.generation = data["generation"]
        self._pos = {pid: i for i, pid in enumerate(self._ids)}
        if self._ids:
            self._model = bm25s.BM25.load(self.directory / "model", mmap=False)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every stemmed word of the indexed titles and abstracts."""
        if self._vocab is None:
            self._vocab = (
                frozenset(self._model.vocab_dict) if self._model is not None else frozenset()
            )
        return self._vocab

    def build(self, docs: Iterable[tuple[str, str]], generation: str) -> None:
        """(paper id, text) pairs -> a fresh index, written atomically (tmp dir, then rename)."""
        import bm25s

        pairs = list(docs)
        tmp = self.directory.with_name(self.directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model = None
        if pairs:
            tokens = bm25s.tokenize(
                [t for _, t in pairs], stopwords="en", stemmer=self._stem, show_progress=False
            )
            model = bm25s.BM25()
            model.index(tokens, show_progress=False)
            model.save(tmp / "model", show_progress=False)
        ids = [pid for pid, _ in pairs]
        (tmp / "ids.json").write_text(json.dumps({"generation": generation, "ids": ids}))
        old = self.directory.with_name(self.directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.directory.exists():
            self.directory.rename(old)
        tmp.rename(self.directory)
        shutil.rmtree(old, ignore_errors=True)
        self._model, self._ids, self.generation = model, ids, generation
        self._vocab = None
        self._pos = {pid: i for i, pid in enumerate(ids)}

    def search(
        self, query: str, k: int, allowed: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (paper id, BM25 score) with score > 0, restricted to ``allowed`` ids."""
        if self._model is None or not self._ids:
            return []
        import bm25s

        tokens = bm25s.tokenize(
            [query], stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False
        )[0]
        vocab = self._model.vocab_dict
        tokens = [t for t in tokens if t in vocab]
        if not tokens:
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=np.float32)
            for pid in allowed:
                if (i := self._pos.get(pid)) is not None:
                    mask[i] = 1.0
            if not mask.any():
                return []
        k = min(k, len(self._ids))
        docs, scores = self._model.retrieve(
            [tokens], k=k, show_progress=False, weight_mask=mask, n_threads=1
        )
        return [
            (self._ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0
        ]
