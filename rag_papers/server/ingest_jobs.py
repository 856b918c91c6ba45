"""Ingest jobs: a bounded queue and one worker thread of their own, off the request threads.

An ingest embeds every new abstract (minutes for thousands), and two ingests into one index
must not interleave, so jobs run one at a time on a dedicated thread; at most
``settings.ingest_queue_size`` wait behind it and one more is refused (429, Retry-After).
Request handlers only enqueue and await a future: they never hold a thread of the shared
pool while an ingest runs, so /healthz and reads go on.

With several worker processes (``serve --workers N``) each worker has its own queue, and a
``JobBoard`` (one small SQLite file in the server's private run folder) holds every job's
status, so ``GET /v1/ingest/{job}`` answers on whichever worker the request lands.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag_papers.server.errors import ApiError, classify

__all__ = ["IngestJob", "IngestQueue", "JobBoard", "QueueFull"]

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "done", "failed"]


class QueueFull(Exception):
    """Every waiting place is taken."""


@dataclass(eq=False)
class IngestJob:
    """One ingest: ``work`` returns the report; ``cleanup`` runs however it ends."""

    work: Callable[[], dict[str, Any]]
    cleanup: Callable[[], None] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: Status = "queued"
    report: dict[str, Any] | None = None
    error: ApiError | None = None
    done: Future[None] = field(default_factory=Future)

    def _finish(self) -> None:
        if self.cleanup is not None:
            try:
                self.cleanup()
            except Exception:  # a leftover temp file must not turn a report into an error
                log.exception("ingest job %s: cleanup failed", self.id)
        self.done.set_result(None)


class IngestQueue:
    """Runs ingest jobs one at a time on its own thread (started on first use)."""

    def __init__(self, size: int, *, keep: int = 100, board: JobBoard | None = None) -> None:
        self._board = board
        self._queue: queue.Queue[IngestJob | None] = queue.Queue(maxsize=size)
        self._jobs: OrderedDict[str, IngestJob] = OrderedDict()
        self._keep = keep  # finished jobs remembered for GET /v1/ingest/{job}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job: IngestJob) -> IngestJob:
        """Queue ``job``; raises QueueFull when every place is taken (the caller cleans up)."""
        with self._lock:
            if self._closed:
                raise QueueFull
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rag-papers-ingest", daemon=True
                )
                self._thread.start()
            if self._queue.full():
                raise QueueFull
            # Recorded before the worker thread can see it, so "queued" never lands after
            # "running" or "done" on the board. Only this method puts, under the lock: the
            # queue cannot fill up in between.
            self._post(job)
            self._queue.put_nowait(job)
            self._jobs[job.id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> IngestJob | None:
        """A job of this process's queue."""
        with self._lock:
            return self._jobs.get(job_id)

    def shared(self, job_id: str) -> IngestJob | None:
        """A job of any worker of this server, as the job board last saw it (blocks: call it
        from a thread); None without a board or when no worker knows it."""
        if self._board is None:
            return None
        try:
            return self._board.get(job_id)
        except sqlite3.Error:  # e.g. the server is stopping and its run folder is gone
            log.exception("ingest job %s: could not read its status", job_id)
            return None

    def _post(self, job: IngestJob) -> None:
        if self._board is None:
            return
        try:
            self._board.put(job, keep=self._keep)
        except sqlite3.Error:  # status is lost to the other workers; the ingest itself goes on
            log.exception("ingest job %s: could not record its status", job.id)

    def full(self) -> bool:
        return self._queue.full()

    def close(self, timeout: float = 60.0) -> None:
        """Refuse new jobs, drop the waiting ones, let the running one finish."""
        with self._lock:
            self._closed = True
            thread = self._thread
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.status = "failed"
                job.error = ApiError(503, "the server shut down before this ingest ran")
                self._post(job)
                job._finish()
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job.status = "running"
            self._post(job)
            try:
                job.report = job.work()
                job.status = "done"
            except Exception as exc:
                job.error = classify(exc)
                job.status = "failed"
                if job.error.status >= 500:
                    log.error("ingest job %s failed", job.id, exc_info=exc)
            finally:
                self._post(job)  # before the waiters wake: another worker may be asked next
                job._finish()

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[key]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, status TEXT NOT NULL,
    report TEXT, error TEXT, updated REAL NOT NULL
)
"""
_FINISHED = "('done', 'failed')"


class JobBoard:
    """Ingest job status shared by the worker processes of one server: a SQLite file.

    Each worker writes its own jobs' status as it changes and reads the others' on a miss.
    A job still queued or running whose worker process is gone is reported failed, so a
    client polling it is not left waiting for a result that will never come.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.execute(_SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        # A connection per call: calls are rare (one per job state change or status miss)
        # and come from several threads.
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def put(self, job: IngestJob, *, keep: int = 100) -> None:
        error = None
        if job.error is not None:
            e = job.error
            error = json.dumps(
                {"status": e.status, "message": e.message, "type": e.type}
                | {"param": e.param, "code": e.code}
            )
        report = json.dumps(job.report, default=str) if job.report is not None else None
        db = self._connect()
        try:
            db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, os.getpid(), job.status, report, error, time.time()),
            )
            if job.status in ("done", "failed"):  # remember the newest finished ones only
                db.execute(
                    f"DELETE FROM jobs WHERE status IN {_FINISHED} AND id NOT IN (SELECT id "
                    f"FROM jobs WHERE status IN {_FINISHED} ORDER BY updated DESC LIMIT ?)",
                    (keep,),
                )
        finally:
            db.close()

    def get(self, job_id: str) -> IngestJob | None:
        db = self._connect()
        try:
            row = db.execute(
                "SELECT pid, status, report, error FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        finally:
            db.close()
        if row is None:
            return None
        pid, status, report, error = row
        job = IngestJob(work=_elsewhere, id=job_id, status=status)
        job.report = json.loads(report) if report else None
        if error:
            e = json.loads(error)
            job.error = ApiError(
                e["status"], e["message"], e["type"], param=e["param"], code=e["code"]
            )
        elif status not in ("done", "failed") and not _alive(pid):
            job.status = "failed"
            job.error = ApiError(
                503,
                "the worker process running this ingest stopped before it finished; "
                "check the index (GET /v1/stats) and send the ingest again",
                code="worker_stopped",
            )
        if job.status in ("done", "failed"):
            job.done.set_result(None)
        return job


def _elsewhere() -> dict[str, Any]:
    raise RuntimeError("a job read from the board runs in another worker")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the number: ours is gone
        return False
    return True
