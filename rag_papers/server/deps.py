"""The engine every request shares: one PaperQA per app (per worker process under
``serve --workers N``), the queue its ingests run on, and the checks that turn a bad request
into a clear 400 before any work starts. Routes get it with ``EngineDep``."""

from __future__ import annotations

import logging
import threading
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from rag_papers import parse_llm_spec
from rag_papers.server.errors import ApiError, Scrubber
from rag_papers.server.ingest_jobs import IngestQueue, JobBoard

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = ["Engine", "EngineDep", "get_engine", "public_llm"]

log = logging.getLogger(__name__)


class Engine:
    """One PaperQA per app, created on first use. Its methods block: call them from a thread
    (``asyncio.to_thread``), never on the event loop."""

    def __init__(
        self, settings: Settings, qa: PaperQA | None = None, *, board: JobBoard | None = None
    ) -> None:
        self.settings = settings
        self._qa = qa
        self._owned = qa is None  # a shared engine is closed by whoever made it
        self._lock = threading.Lock()
        self.scrub = Scrubber(settings)
        self.ingests = IngestQueue(settings.ingest_queue_size, board=board)

    @property
    def qa(self) -> PaperQA:
        with self._lock:
            if self._qa is None:
                from rag_papers import PaperQA

                self._qa = PaperQA(self.settings, notify=log.info)
            return self._qa

    def ready(self) -> PaperQA:
        """The engine with its store open (a first run ingests the sample corpus here)."""
        return self.qa.open()

    def prepare(self, llm: str | None) -> PaperQA:
        """Open the store and build the backend, so config errors come before a stream."""
        qa = self.ready()
        qa.backend(llm)
        return qa

    def close(self) -> None:
        self.ingests.close()  # the running ingest finishes before the index closes
        with self._lock:
            if self._owned and self._qa is not None:
                self._qa.close()

    # Checks that make a request fail with a clear 400 before any work starts.
    def check_k(self, k: int | None) -> None:
        if k is not None and not 1 <= k <= self.settings.max_k:
            raise ApiError(
                400,
                f"k={k}: must be between 1 and {self.settings.max_k} (max_k)",
                param="k",
                code="out_of_range",
            )

    def check_question(self, text: str, what: str = "question") -> str:
        text = text.strip()
        if not text:
            raise ApiError(400, f"{what} is empty", param=what, code="empty")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            raise ApiError(
                400,
                f"{what} is {len(text)} characters; the limit is {limit} (max_question_chars)",
                param=what,
                code="too_long",
            )
        return text

    def allowed_llms(self) -> list[str]:
        """What a client may name: the server's llm, 'extractive' and settings.allowed_llms,
        each in its public form (a model file by its name, not its path)."""
        return list(self._allowed())

    def _allowed(self) -> dict[str, str]:
        specs = [self.settings.llm, "extractive", *self.settings.allowed_llms]
        return {public_llm(spec): spec for spec in specs}

    def check_llm(self, spec: str | None, param: str = "llm") -> str | None:
        """An llm override a client may ask for: only the allowlist (each spec names a
        backend the engine builds and keeps; arbitrary ones would load any model file or
        reach any endpoint the server can). Returns the spec as the engine knows it."""
        if spec is None:
            return None
        allowed = self._allowed()
        if spec in allowed.values():
            return spec
        if spec in allowed:
            return allowed[spec]
        names = ", ".join(repr(s) for s in allowed)
        raise ApiError(
            400,
            f"{param}: {spec!r} is not allowed on this server; it allows {names} "
            "(extend the list with the server's allowed_llms setting)",
            param=param,
            code="model_not_allowed",
        )


def public_llm(spec: str) -> str:
    """An llm spec as clients see it: a gguf model by its file name, never its path."""
    try:
        parsed = parse_llm_spec(spec)
    except ValueError:
        return spec
    if parsed.kind == "gguf":
        return f"gguf:{PurePath(parsed.value).name}"
    return str(parsed)


def get_engine(request: Request) -> Engine:
    """The app's engine (create_app puts it on app.state)."""
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
