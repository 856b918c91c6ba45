"""One writer at a time per collection, on one machine or many.

Embedded store: an OS file lock (filelock) on ``sidecar/<collection>.lock`` in the index dir;
the kernel drops it when its process dies. A ``.writing`` marker beside it, made before the
first chunk is written and removed after the publish, tells the next writer that the last one
died mid-write (it then rebuilds the state from the collection, store/index.py).

Chroma server: a lease in the collection ``<collection>.writer`` on that server. Records
``e<epoch>`` are added, never overwritten; Chroma's ``add`` ignores an id that exists, so
exactly one writer wins each epoch, and the holder is the newest epoch. The holder renews its
record (a heartbeat counter) every lease/4 seconds from a thread. A waiter takes over when the
newest record is released, or when its heartbeat has not moved for ``writer_lease_seconds``
by the waiter's own clock (no clock is compared across machines). Before publishing, a
writer checks it still holds the newest epoch (a paused process that lost its lease stops).

The lock is reentrant per thread (a ``--rebuild`` holds it while its staging index ingests).
Waiting says who holds the lock, once; past ``writer_wait_seconds`` it is a WriterBusyError.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.core.errors import RagPapersError

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = ["WriteLease", "WriterBusyError", "writer_lock"]

log = logging.getLogger("rag_papers.store")
_POLL = 0.25


class WriterBusyError(RagPapersError, TimeoutError):
    """Another ingest held the collection for longer than ``writer_wait_seconds``."""


class WriteLease:
    """What a writer holds: ``recover`` is True when the previous writer died mid-write."""

    recover = False

    def mark_writing(self) -> None:
        """Record that chunks are about to be written (undone only by a clean release)."""

    def check(self) -> None:
        """Raise WriterBusyError unless this writer still holds the lock."""


_held: dict[tuple[str, int], tuple[WriteLease, int]] = {}  # (key, thread) -> (lease, depth)
_held_guard = threading.Lock()


def _me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def writer_lock(settings: Settings, client: Any, logical: str, root: Path) -> Iterator[WriteLease]:
    """Hold the writer lock of collection ``logical`` (reentrant within a thread)."""
    key = (f"{settings.chroma_url or root}|{logical}", threading.get_ident())
    with _held_guard:
        if key in _held:
            lease, depth = _held[key]
            _held[key] = (lease, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield lease
        finally:
            with _held_guard:
                lease, depth = _held[key]
                if depth > 1:
                    _held[key] = (lease, depth - 1)
        return
    maker = _ServerLease if settings.chroma_url else _FileLease
    lease = maker(settings, client, logical, root)
    lease.acquire()
    with _held_guard:
        _held[key] = (lease, 1)
    clean = False
    try:
        yield lease
        clean = True
    finally:
        with _held_guard:
            _held.pop(key, None)
        lease.release(clean=clean)


def _waiting(where: str, holder: str, settings: Settings, extra: str = "") -> None:
    log.warning(
        "another ingest is writing %s (%s); waiting for it to finish (up to %.0f s, "
        "writer_wait_seconds)%s",
        where,
        holder,
        settings.writer_wait_seconds,
        extra,
    )


def _busy(where: str, holder: str, settings: Settings) -> WriterBusyError:
    return WriterBusyError(
        f"{where} is still being written by another ingest ({holder}) after "
        f"{settings.writer_wait_seconds:.0f} s (writer_wait_seconds); run again when it has "
        "finished, or raise writer_wait_seconds"
    )


class _FileLease(WriteLease):
    def __init__(self, settings: Settings, client: Any, logical: str, root: Path) -> None:
        from filelock import FileLock

        folder = root / "sidecar"
        folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.where = f"collection {logical!r} in {root}"
        self.path = folder / f"{logical}.lock"
        self.holder_file = folder / f"{logical}.lock.holder"
        self.marker = folder / f"{logical}.writing"
        self.lock = FileLock(self.path, thread_local=True)

    def acquire(self) -> None:
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            try:
                holder = self.holder_file.read_text(encoding="utf-8").strip() or "unknown"
            except OSError:
                holder = "unknown"
            _waiting(self.where, holder, self.settings)
            try:
                self.lock.acquire(timeout=self.settings.writer_wait_seconds)
            except Timeout:
                raise _busy(self.where, holder, self.settings) from None
        with suppress(OSError):
            self.holder_file.write_text(_me(), encoding="utf-8")
        self.recover = self.marker.exists()

    def mark_writing(self) -> None:
        self.marker.write_text(_me(), encoding="utf-8")

    def release(self, *, clean: bool) -> None:
        if clean:
            self.marker.unlink(missing_ok=True)
        self.lock.release()


class _ServerLease(WriteLease):
    def __init__(self, settings: Settings, client: Any, logical: str, root: Path) -> None:
        self.settings = settings
        self.where = f"collection {logical!r} at {settings.chroma_url}"
        self.col = client.get_or_create_collection(
            f"{logical}.writer", metadata={"rag_papers:lock_for": logical}, embedding_function=None
        )
        self.token = uuid.uuid4().hex
        self.epoch = 0
        self.beat = 0
        self.writing = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _newest(self) -> tuple[int, dict[str, Any]] | None:
        got = self.col.get(include=["metadatas"])
        records = [
            (int(i[1:]), dict(m or {}))
            for i, m in zip(got["ids"], got["metadatas"], strict=True)
            if i.startswith("e") and i[1:].isdigit()
        ]
        return max(records, key=lambda r: r[0]) if records else None

    def _record(self, state: str) -> dict[str, Any]:
        return {
            "token": self.token,
            "holder": _me(),
            "state": state,
            "beat": self.beat,
            "writing": self.writing,
        }

    def acquire(self) -> None:
        lease = self.settings.writer_lease_seconds
        deadline = time.monotonic() + self.settings.writer_wait_seconds
        seen: tuple[int, int] | None = None
        seen_at = time.monotonic()
        told = False
        while True:
            newest = self._newest()
            now = time.monotonic()
            epoch, meta = newest if newest else (0, {})
            if newest and (epoch, int(meta.get("beat", 0))) != seen:
                seen, seen_at = (epoch, int(meta.get("beat", 0))), now
            free = newest is None or meta.get("state") == "released"
            dead = not free and now - seen_at >= lease
            if free or dead:
                self.epoch = epoch + 1
                record_id = f"e{self.epoch:012d}"
                self.col.add(ids=[record_id], metadatas=[self._record("held")], embeddings=[[1.0]])
                won = self.col.get(ids=[record_id], include=["metadatas"])["metadatas"]
                if won and (won[0] or {}).get("token") == self.token:
                    self.recover = bool(meta.get("writing"))
                    if dead:
                        log.warning(
                            "took over the writer lock of %s from %s, silent for %.0f s",
                            self.where,
                            meta.get("holder", "unknown"),
                            now - seen_at,
                        )
                    break
                continue  # another waiter won this epoch: look again
            if not told:
                told = True
                _waiting(
                    self.where,
                    str(meta.get("holder", "unknown")),
                    self.settings,
                    f"; a holder silent for {lease:.0f} s is taken over",
                )
            if now >= deadline:
                raise _busy(self.where, str(meta.get("holder", "unknown")), self.settings)
            time.sleep(_POLL)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        for old in range(max(1, self.epoch - 3), self.epoch - 1):  # keep the log short
            with suppress(Exception):
                self.col.delete(ids=[f"e{old:012d}"])

    def _put(self, state: str) -> None:
        self.col.upsert(
            ids=[f"e{self.epoch:012d}"], metadatas=[self._record(state)], embeddings=[[1.0]]
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.writer_lease_seconds / 4):
            try:
                newest = self._newest()
                if newest is None or newest[1].get("token") != self.token:
                    self.lost = True
                    return
                self.beat += 1
                self._put("held")
            except Exception as exc:  # a blip: the next beat tries again
                log.debug("writer lock heartbeat failed: %s", exc)

    def mark_writing(self) -> None:
        self.writing = 1
        self._put("held")

    def check(self) -> None:
        newest = self._newest()
        if self.lost or newest is None or newest[1].get("token") != self.token:
            self.lost = True
            raise WriterBusyError(
                f"this ingest lost the writer lock of {self.where} (it was silent for over "
                f"{self.settings.writer_lease_seconds:.0f} s, writer_lease_seconds, and another "
                "writer took over); nothing was published: run it again"
            )

    def release(self, *, clean: bool) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return
        if clean:
            self.writing = 0  # else left set: the next writer recovers what this one wrote
        with suppress(Exception):  # unreachable server: the lease simply runs out
            self._put("released")
