"""A persistent, content-addressed store of embeddings, shared by every index and process.

One SQLite file under ``<data_dir>/cache`` maps a 32-byte digest (of the model key and the
text: store/cached_embedder.py) to a float32 vector.

- Safe with concurrent processes: WAL, short transactions, ``INSERT OR REPLACE``; a write
  that cannot get the lock in time is skipped (a cache is best effort: answers never wait).
- Bounded: over ``max_entries`` the least recently used rows go (a hit refreshes its row at
  most once an hour, so a read-mostly workload writes next to nothing).
- A damaged or foreign file is discarded with one warning and rebuilt; a data dir that
  cannot be written means working without a cache (logged, not raised).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag_papers.store.catalog import is_damage

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = ["DEFAULT_MAX_ENTRIES", "EmbeddingCache", "cache_path", "max_entries", "open_cache"]

log = logging.getLogger("rag_papers.store")

DEFAULT_MAX_ENTRIES = 50_000
SCHEMA_VERSION = 1
# A hit refreshes its row's last use at most this often (seconds): eviction needs only a
# rough order, and an ask whose texts are all cached then writes nothing.
TOUCH_EVERY = 3600
# How long a writer waits for another process's transaction before skipping its write.
BUSY_TIMEOUT_S = 2.0
_VARS_PER_QUERY = 500  # below SQLite's host-parameter limit


def cache_path(settings: Settings) -> Path:
    return settings.data_dir / "cache" / "embeddings.sqlite"


class EmbeddingCache:
    """sha256(model key, text) -> float32 vector, in one SQLite file. Thread-safe."""

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._broken = False  # could not be opened even after discarding it: do without

    # --- the file ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last rows is fine
            if found not in (0, SCHEMA_VERSION):
                raise _SchemaError(f"schema version {found}, expected {SCHEMA_VERSION}")
            if found == 0:
                conn.executescript(
                    f"""
                    BEGIN IMMEDIATE;
                    CREATE TABLE IF NOT EXISTS vectors (
                        key BLOB PRIMARY KEY, vector BLOB NOT NULL, used INTEGER NOT NULL
                    ) WITHOUT ROWID;
                    CREATE INDEX IF NOT EXISTS vectors_used ON vectors (used);
                    PRAGMA user_version = {SCHEMA_VERSION};
                    COMMIT;
                    """
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection | None:
        if self._pid != os.getpid():  # forked (server workers): never use the parent's handle
            self._pid, self._conn = os.getpid(), None
        if self._conn is None and not self._broken:
            try:
                self._conn = self._connect()
            except sqlite3.DatabaseError as exc:
                self._failed(exc)
            except OSError as exc:  # a read-only or missing data dir: work without a cache
                self._disable(exc)
        return self._conn

    def _failed(self, exc: sqlite3.DatabaseError) -> None:
        """Damage: discard the file. Busy: skip this time. Else (read-only, no room): off."""
        if _damaged(exc):
            self._discard(exc)
        elif not _locked(exc):
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        log.info("embedding cache %s unavailable, working without it: %s", self.path, exc)
        self._broken = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _discard(self, exc: Exception) -> None:
        """The file is damaged (or not ours): warn once, delete it, start a new one."""
        log.warning(
            "embedding cache %s is damaged (%s): discarding it; it is rebuilt as questions "
            "are answered",
            self.path,
            exc,
        )
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._conn = self._connect()
        except (sqlite3.Error, OSError) as again:
            self._disable(again)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- reads and writes -------------------------------------------------------------------
    def get(self, digests: Sequence[bytes], dimension: int | None) -> dict[bytes, np.ndarray]:
        """The cached vectors among ``digests`` (refreshing their last use now and then)."""
        if not digests:
            return {}
        with self._lock:
            conn = self._connection()
            if conn is None:
                return {}
            now = int(time.time())
            found: dict[bytes, np.ndarray] = {}
            stale: list[bytes] = []
            try:
                for part in _chunks(list(dict.fromkeys(digests))):
                    rows = conn.execute(
                        "SELECT key, vector, used FROM vectors WHERE key IN "
                        f"({','.join('?' * len(part))})",
                        part,
                    ).fetchall()
                    for key, blob, used in rows:
                        vec = np.frombuffer(blob, dtype=np.float32)
                        if dimension is not None and vec.shape[0] != dimension:
                            continue  # not what this model makes: recomputed and replaced
                        found[key] = vec
                        if used < now - TOUCH_EVERY:
                            stale.append(key)
                if stale:
                    self._write(
                        conn, "UPDATE vectors SET used = ? WHERE key = ?", [(now, k) for k in stale]
                    )
            except sqlite3.DatabaseError as exc:
                self._failed(exc)
                return found if _locked(exc) else {}
            return found

    def put(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        """Store vectors (float32); evicts the least recently used rows when over the cap."""
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        if not rows or self.max_entries <= 0:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            now = int(time.time())
            try:
                self._write(
                    conn,
                    "INSERT OR REPLACE INTO vectors (key, vector, used) VALUES (?, ?, ?)",
                    [(k, blob, now) for k, blob in rows],
                    evict=True,
                )
            except sqlite3.DatabaseError as exc:
                self._failed(exc)

    def _write(
        self,
        conn: sqlite3.Connection,
        sql: str,
        params: list[tuple[object, ...]],
        *,
        evict: bool = False,
    ) -> None:
        """One short transaction; a lock held past the busy timeout skips it."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _locked(exc):
                return
            raise
        try:
            conn.executemany(sql, params)
            if evict:
                (count,) = conn.execute("SELECT count(*) FROM vectors").fetchone()
                if count > self.max_entries:
                    # Down to 90% of the cap, so eviction runs once per many inserts.
                    excess = count - int(self.max_entries * 0.9)
                    conn.execute(
                        "DELETE FROM vectors WHERE key IN "
                        "(SELECT key FROM vectors ORDER BY used LIMIT ?)",
                        (excess,),
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT count(*) FROM vectors").fetchone()[0])
            except sqlite3.DatabaseError:
                return 0


def _locked(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _damaged(exc: sqlite3.Error) -> bool:
    # Not an SQLite file, a torn one (the catalog's test), or another schema: ours to replace.
    text = str(exc)
    return (
        isinstance(exc, _SchemaError)
        or is_damage(exc)
        or any(m in text for m in ("no such table", "no such column"))
    )


class _SchemaError(sqlite3.DatabaseError):
    """The file holds another version of the cache."""


def _chunks(items: list[bytes]) -> Iterable[list[bytes]]:
    for start in range(0, len(items), _VARS_PER_QUERY):
        yield items[start : start + _VARS_PER_QUERY]


# One cache object (one connection) per data dir, reused by every ask of the process; a
# few at most, so a process that visits many data dirs (a test session) keeps few files open.
_caches: OrderedDict[Path, EmbeddingCache] = OrderedDict()
_caches_lock = threading.Lock()
_MAX_OPEN = 4


def open_cache(settings: Settings) -> EmbeddingCache:
    """The process's cache object for ``settings.data_dir``."""
    path = cache_path(settings)
    with _caches_lock:
        cache = _caches.get(path)
        if cache is None:
            cache = _caches[path] = EmbeddingCache(path, max_entries=max_entries(settings))
            while len(_caches) > _MAX_OPEN:
                _caches.popitem(last=False)[1].close()  # reopens if still used
        _caches.move_to_end(path)
        return cache


def max_entries(settings: Settings) -> int:
    return settings.embed_cache_entries
