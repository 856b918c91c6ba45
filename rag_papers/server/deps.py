"""The engine every request shares: one PaperQA per app, and the checks that turn a bad
request into a clear 4xx before any work starts. Routes get it with ``EngineDep``."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from rag_papers.server.errors import ApiError

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = ["Engine", "EngineDep", "get_engine"]

log = logging.getLogger(__name__)


class Engine:
    """One PaperQA per app, created on first use. Its methods block: call them from a thread
    (``asyncio.to_thread``), never on the event loop."""

    def __init__(self, settings: Settings, qa: PaperQA | None = None) -> None:
        self.settings = settings
        self._qa = qa
        self._owned = qa is None  # a shared engine is closed by whoever made it
        self._lock = threading.Lock()
        self.ingest_lock = threading.Lock()  # one ingest at a time; reads go on meanwhile

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
        with self._lock:
            if self._owned and self._qa is not None:
                self._qa.close()

    # Checks that make a request fail with a clear 4xx before any work starts.
    def check_k(self, k: int | None) -> None:
        if k is not None and not 1 <= k <= self.settings.max_k:
            raise ApiError(422, f"k={k}: must be between 1 and {self.settings.max_k} (max_k)")

    def check_question(self, text: str, what: str = "question") -> str:
        text = text.strip()
        if not text:
            raise ApiError(422, f"{what} is empty")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            raise ApiError(
                422, f"{what} is {len(text)} characters; the limit is {limit} (max_question_chars)"
            )
        return text

    def check_llm(self, spec: str | None) -> str | None:
        """An llm override a client may ask for: no arbitrary local model files."""
        if spec is None or spec in ("extractive", self.settings.llm):
            return spec
        if spec.startswith("openai:") and len(spec) > len("openai:"):
            return spec
        raise ApiError(
            400,
            f"llm={spec!r}: a request may ask for 'extractive', the server's llm "
            f"({self.settings.llm!r}) or 'openai:MODEL'",
        )


def get_engine(request: Request) -> Engine:
    """The app's engine (create_app puts it on app.state)."""
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
