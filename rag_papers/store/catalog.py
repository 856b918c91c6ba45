"""The local paper catalog (SQLite): what is in the index, by paper id and content hash.

A cache of the Chroma collection: it answers `papers list/show` without importing Chroma,
decides what an ingest must (re)write, and is rebuilt from Chroma when they disagree.

A damaged file (not a database, or failing SQLite's quick check) is found on open: a writable
catalog is then discarded with a one-line warning naming it, and the index rebuilds it from
the collection. Damage found later, in use, is a CatalogDamagedError naming the file; a
writable file is removed then, so the next open rebuilds it. ``read_only`` opens the file
without writing anything (a read-only index dir).
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from rag_papers.core.errors import RagPapersError
from rag_papers.core.papers import Paper
from rag_papers.store.bounds import MAX_LIMIT, MAX_OFFSET, check_int, check_year

__all__ = ["Catalog", "CatalogDamagedError", "is_damage"]

log = logging.getLogger("rag_papers.store")
_DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class CatalogDamagedError(RagPapersError, RuntimeError):
    """The catalog file cannot be read; it is a cache, so deleting it is always safe."""


class _QuickCheckFailed(sqlite3.DatabaseError):
    pass


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is not a sound database (not: locked, read-only...)."""
    if isinstance(exc, _QuickCheckFailed):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGE_CODES


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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[Catalog, _P], _R],
) -> Callable[Concatenate[Catalog, _P], _R]:
    """SQLite's 'malformed'/'not a database' in use -> CatalogDamagedError naming the file."""

    @functools.wraps(method)
    def wrapper(self: Catalog, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            raise self._damaged(exc) from None

    return wrapper


class Catalog:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        # Where a slim catalog gets missing paper data (set by the index; store/shared.py).
        self.fetch_missing: Callable[[list[str]], dict[str, Paper]] | None = None
        if read_only:
            self._db = self._connect_read_only()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            log.warning("catalog %s is damaged (%s): rebuilding it from the collection", path, exc)
            self._discard()
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            _check(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        # mode=ro needs the -shm file of a WAL database, or a writable folder to make one;
        # immutable=1 reads without either (nobody can write a read-only folder meanwhile).
        uri = self.path.resolve().as_uri()
        last: sqlite3.Error | None = None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            db = sqlite3.connect(f"{uri}?{flags}", uri=True, check_same_thread=False)
            try:
                _check(db)
                db.execute("SELECT 1 FROM papers LIMIT 1").fetchall()
                return db
            except sqlite3.Error as exc:
                db.close()
                last = exc
                if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
                    break
        raise CatalogDamagedError(f"catalog {self.path} cannot be read: {last}")

    def _damaged(self, exc: sqlite3.Error) -> CatalogDamagedError:
        if self.read_only:
            fix = "it is a cache of the collection; a user who may write the index dir rebuilds it"
        else:
            self._discard()  # a cache: the next open rebuilds it from the collection
            fix = "it was removed and is rebuilt from the collection on the next open: run again"
        log.warning("catalog %s is damaged (%s)", self.path, exc)
        return CatalogDamagedError(f"catalog {self.path} is damaged ({exc}); {fix}")

    def _discard(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).unlink()

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
    @_guarded
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @_guarded
    def backup_to(self, dest: sqlite3.Connection) -> None:
        """Copy this catalog into ``dest``, consistent even while others write (SQLite backup)."""
        self._db.backup(dest)

    # --- papers -------------------------------------------------------------------------
    @_guarded
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

    @_guarded
    def upsert(self, rows: Iterable[tuple[Paper, int]]) -> None:
        with self.transaction() as db:
            db.executemany(_INSERT, [_row(p, n) for p, n in rows])

    @_guarded
    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        with self.transaction() as db:
            for start in range(0, len(ids), 900):
                part = ids[start : start + 900]
                db.execute(f"DELETE FROM papers WHERE id IN ({','.join('?' * len(part))})", part)

    @_guarded
    def replace_all(self, rows: Iterable[tuple[Paper, int]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM papers")
            db.executemany(_INSERT, [_row(p, n) for p, n in rows])

    def _papers(self, rows: Iterable[tuple[str, str | None]]) -> list[Paper]:
        """Papers of (id, data) rows, in order. A slim catalog (a reader's download, see
        store/publish.py) has no data yet: it is fetched once and kept."""
        rows = list(rows)
        missing = [pid for pid, data in rows if data is None]
        fetched: dict[str, Paper] = {}
        if missing and self.fetch_missing is not None:
            fetched = self.fetch_missing(missing)
            if fetched and not self.read_only:
                with self.transaction() as db:
                    db.executemany(
                        "UPDATE papers SET data = ? WHERE id = ?",
                        [(json.dumps(p.to_dict()), pid) for pid, p in fetched.items()],
                    )
        out = []
        for pid, data in rows:
            paper = Paper.from_dict(json.loads(data)) if data is not None else fetched.get(pid)
            if paper is not None:
                out.append(paper)
        return out

    @_guarded
    def get(self, paper_id: str) -> Paper | None:
        found = self.get_many([paper_id])
        return found.get(paper_id)

    @_guarded
    def get_many(self, ids: Iterable[str]) -> dict[str, Paper]:
        out: dict[str, Paper] = {}
        ids = list(ids)
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, data FROM papers WHERE id IN ({marks})"
            out.update((p.id, p) for p in self._papers(self._db.execute(query, part)))
        return out

    @_guarded
    def list(self, limit: int | None = None, offset: int = 0) -> list[Paper]:
        if limit is not None:
            check_int("limit", limit, 1, MAX_LIMIT)
        check_int("offset", offset, 0, MAX_OFFSET)
        query = "SELECT id, data FROM papers ORDER BY rowid LIMIT ? OFFSET ?"
        return self._papers(self._db.execute(query, (-1 if limit is None else limit, offset)))

    @_guarded
    def iter_all(self) -> Iterator[Paper]:
        rows = self._db.execute("SELECT id, data FROM papers ORDER BY id").fetchall()  # guarded
        return self._iter(rows)

    def _iter(self, rows: Sequence[tuple[str, str | None]]) -> Iterator[Paper]:
        for start in range(0, len(rows), 2000):
            yield from self._papers(rows[start : start + 2000])

    @_guarded
    def is_slim(self) -> bool:
        """Whether some rows still lack their paper data (a reader's download)."""
        return (
            self._db.execute("SELECT 1 FROM papers WHERE data IS NULL LIMIT 1").fetchone()
            is not None
        )

    @_guarded
    def write_slim(self, path: Path) -> None:
        """A copy without the paper data (ids, hashes, filter columns, meta) at ``path``: what
        a reader downloads; the data comes from Chroma's chunk-0 records when first needed."""
        path.unlink(missing_ok=True)
        self._db.execute("ATTACH DATABASE ? AS slim", (str(path),))
        try:
            self._db.executescript(
                _SCHEMA.replace("data TEXT NOT NULL", "data TEXT")
                .replace("EXISTS papers", "EXISTS slim.papers")
                .replace("EXISTS meta", "EXISTS slim.meta")
            )
            self._db.execute(
                "INSERT INTO slim.papers SELECT id, hash, n_chunks, year, authors, categories,"
                " NULL FROM main.papers ORDER BY rowid"
            )
            self._db.execute("INSERT INTO slim.meta SELECT * FROM main.meta")
        finally:
            self._db.execute("DETACH DATABASE slim")

    @_guarded
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
        check_year("year_min", year_min)
        check_year("year_max", year_max)
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

    @_guarded
    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM papers").fetchone()[0])

    @_guarded
    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(n_chunks), 0) FROM papers").fetchone()[0])


def _check(db: sqlite3.Connection) -> None:
    """DatabaseError when the file is not a sound SQLite database."""
    row = db.execute("PRAGMA quick_check(1)").fetchone()
    if row is None or row[0] != "ok":
        raise _QuickCheckFailed(f"quick_check: {row[0] if row else 'no answer'}")


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
