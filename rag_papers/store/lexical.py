"""The BM25 sidecar (bm25s): one document per paper (title + abstract), saved beside the index.

bm25s has no incremental update, so the sidecar is rebuilt from the catalog after every
ingest that wrote something; it records the catalog generation it was built from, and a
mismatch on open (an interrupted ingest, another writer) triggers a rebuild. A sidecar that
cannot be read or does not hold together (a damaged file) is a cache miss: it is logged with
its path and rebuilt from the catalog, like a missing one.

bm25s imports numba whenever numba is installed (0.5 s more per command) although this
index uses its numpy backend; ``import_bm25s`` hides numba while bm25s is imported.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["BM25Sidecar", "import_bm25s"]

log = logging.getLogger("rag_papers.store")
_IMPORT_LOCK = threading.Lock()
_ABSENT: Any = object()
_HIDDEN = ("numba", "scipy", "scipy.sparse")


def import_bm25s() -> ModuleType:
    """bm25s, imported without numba or scipy: it tries both with bare imports.

    A None entry in sys.modules makes such an import raise ImportError, so bm25s falls back
    to numpy (the backend we use anyway: numba costs 0.5 s, scipy.sparse 0.1 s per command);
    the entries are removed again afterwards. Modules already imported (the eval harness
    has numba and scipy) are hidden all the same and then put back.
    """
    if (mod := sys.modules.get("bm25s")) is not None:
        return mod
    with _IMPORT_LOCK:
        # bm25s makes tqdm bars (disabled) whose default lock is a multiprocessing one: a
        # process that forked (serve --workers) then warns of a leaked semaphore at exit.
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
        saved = {name: sys.modules.get(name, _ABSENT) for name in _HIDDEN}
        for name in _HIDDEN:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            import bm25s
        finally:
            for name, module in saved.items():
                if module is _ABSENT:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    return bm25s


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
        try:
            data = json.loads(info.read_text(encoding="utf-8"))
            ids = [str(pid) for pid in data["ids"]]
            generation = str(data["generation"])
            model = None
            if ids:
                bm25s = import_bm25s()
                model = bm25s.BM25.load(self.directory / "model", mmap=False, show_progress=False)
                _check_model(model, len(ids))
        except Exception as exc:  # any damage: a cache miss, rebuilt by the index
            log.warning(
                "BM25 index %s is damaged (%s: %s): rebuilding it from the catalog",
                self.directory,
                type(exc).__name__,
                str(exc)[:200],
            )
            return
        self._model, self._ids, self.generation = model, ids, generation
        self._pos = {pid: i for i, pid in enumerate(ids)}

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
        bm25s = import_bm25s()

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
        bm25s = import_bm25s()

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


def _check_model(model: Any, n_docs: int) -> None:
    """ValueError unless the loaded arrays describe ``n_docs`` documents consistently."""
    scores = model.scores
    data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
    if int(scores["num_docs"]) != n_docs:
        raise ValueError(f"{scores['num_docs']} documents in the model, {n_docs} ids")
    if len(data) != len(indices) or not len(indptr) or int(indptr[-1]) != len(indices):
        raise ValueError("score arrays of different lengths")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_docs):
        raise ValueError("document numbers out of range")
    if np.any(np.diff(indptr) < 0) or not np.all(np.isfinite(data)):
        raise ValueError("score arrays out of order or not finite")
    if model.vocab_dict and max(model.vocab_dict.values()) >= len(indptr):
        raise ValueError("vocabulary larger than the score arrays")
