"""Ingest jobs: a bounded queue and one worker thread of their own, off the request threads.

An ingest embeds every new abstract (minutes for thousands), and two ingests into one index
must not interleave, so jobs run one at a time on a dedicated thread; at most
``settings.ingest_queue_size`` wait behind it and one more is refused (429, Retry-After).
Request handlers only enqueue and await a future: they never hold a thread of the shared
pool while an ingest runs, so /healthz and reads go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from rag_papers.server.errors import ApiError, classify

__all__ = ["IngestJob", "IngestQueue", "QueueFull"]

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

    def __init__(self, size: int, *, keep: int = 100) -> None:
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
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull from None
            self._jobs[job.id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> IngestJob | None:
        with self._lock:
            return self._jobs.get(job_id)

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
                job._finish()
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job.status = "running"
            try:
                job.report = job.work()
                job.status = "done"
            except Exception as exc:
                job.error = classify(exc)
                job.status = "failed"
                if job.error.status >= 500:
                    log.error("ingest job %s failed", job.id, exc_info=exc)
            finally:
                job._finish()

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[key]
