"""The local paper catalog (SQLite): what is in the index, by paper id and content hash.

A cache of the Chroma collection: it answers `papers list/show` without importing Chroma,
decides what an ingest must (re)write, and is rebuilt from Chroma when they disagree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rag_papers.core.papers import Paper

__all__ = ["Catalog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    year INTEGER,
    authors TEXT NOT NULL DEFAULT '',
    categories TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS papers_year ON papers (year);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_INSERT = (
    "INSERT OR REPLACE INTO papers (id, hash, n_chunks, year, authors, categories, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _row(p: Paper, n_chunks: int) -> tuple[object, ...]:
    # Lower-cased, '|'-delimited copies make author/category filters plain SQL LIKEs.
    authors = "|" + "|".join(a.lower() for a in p.authors) + "|"
    categories = "|" + "|".join(c.lower() for c in p.categories) + "|"
    return (p.id, p.content_hash, n_chunks, p.year, authors, categories, json.dumps(p.to_dict()))


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- papers -------------------------------------------------------------------------
    def hashes(self, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """id -> (content hash, chunk count) for the ids that are stored."""
        out: dict[str, tuple[str, int]] = {}
        ids = list(ids)
        for start in range(0, len(ids), 900):  # SQLite caps bound parameters
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, hash, n_chunks FROM papers WHERE id IN ({marks})"
            for pid, h, n in self._db.execute(query, part):
                out[pid] = (h, n)
        return out

    def upsert(self, rows: Iterable[tuple[Paper, int]]) -> None:
        with self.transaction() as db:
            db.executemany(_INSERT, [_row(p, n) for p, n in rows])

    def replace_all(self, rows: Iterable[tuple[Paper, int]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM papers")
            db.executemany(_INSERT, [_row(p, n) for p, n in rows])

    def get(self, paper_id: str) -> Paper | None:
        row = self._db.execute("SELECT data FROM papers WHERE id = ?", (paper_id,)).fetchone()
        return Paper.from_dict(json.loads(row[0])) if row else None

    def get_many(self, ids: Iterable[str]) -> dict[str, Paper]:
        out: dict[str, Paper] = {}
        ids = list(ids)
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            for (data,) in self._db.execute(f"SELECT data FROM papers WHERE id IN ({marks})", part):
                paper = Paper.from_dict(json.loads(data))
                out[paper.id] = paper
        return out

    def list(self, limit: int | None = None, offset: int = 0) -> list[Paper]:
        query = "SELECT data FROM papers ORDER BY rowid LIMIT ? OFFSET ?"
        rows = self._db.execute(query, (-1 if limit is None else limit, offset))
        return [Paper.from_dict(json.loads(d)) for (d,) in rows]

    def iter_all(self) -> Iterator[Paper]:
        for (data,) in self._db.execute("SELECT data FROM papers ORDER BY id"):
            yield Paper.from_dict(json.loads(data))

    def filter_ids(
        self,
        *,
        year_min: int | None = None,
        year_max: int | None = None,
        author: str | None = None,
        category: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> set[str]:
        """Ids of the papers that pass every given condition."""
        clauses: list[str] = []
        params: list[object] = []
        if year_min is not None:
            clauses.append("year >= ?")
            params.append(year_min)
        if year_max is not None:
            clauses.append("year <= ?")
            params.append(year_max)
        if author:
            clauses.append("authors LIKE ? ESCAPE '\\'")
            params.append("%" + _like(author.lower()) + "%")
        if category:
            clauses.append("categories LIKE ? ESCAPE '\\'")
            params.append("%|" + _like(category.lower()) + "|%")
        where = " AND ".join(clauses) or "1"
        found = {pid for (pid,) in self._db.execute(f"SELECT id FROM papers WHERE {where}", params)}
        if ids is not None:
            found &= set(ids)
        return found

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM papers").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(n_chunks), 0) FROM papers").fetchone()[0])


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
