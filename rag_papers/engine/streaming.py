"""One bridge from a blocking answer (text pushed to a callback) to an iterator of text
pieces and then the result, sync or async, with cancellation: when the consumer stops
(an HTTP client disconnects, the REPL's Ctrl-C, a generator closed early), the worker's
next piece raises AnswerCancelled and generation stops there."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["AnswerCancelled", "CancelToken", "aiter_stream", "iter_stream"]

T = TypeVar("T")
Writer = Callable[[str], None]


class AnswerCancelled(Exception):
    """The answer was stopped before it was finished; nothing of it is recorded."""


class CancelToken:
    """Stops an answer being written in another thread. ``cancel`` and ``commit`` are
    decided under one lock, so a cancelled answer is never recorded and a recorded one was
    not cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "running"

    def cancel(self) -> bool:
        """True when the answer is (now) cancelled; False when it was already committed."""
        with self._lock:
            if self._state == "running":
                self._state = "cancelled"
            return self._state == "cancelled"

    @property
    def cancelled(self) -> bool:
        return self._state == "cancelled"

    def check(self) -> None:
        if self._state == "cancelled":
            raise AnswerCancelled

    def commit(self) -> bool:
        """Mark the answer done; False when it was cancelled first."""
        with self._lock:
            if self._state == "running":
                self._state = "done"
                return True
            return False


def _checked(write: Writer, token: CancelToken) -> Writer:
    def on_delta(delta: str) -> None:
        token.check()
        write(delta)

    return on_delta


def iter_stream(
    run: Callable[[Writer], T], *, cancel: CancelToken | None = None
) -> Iterator[str | T]:
    """Run ``run(on_delta)`` in a thread; yield each piece, then its result. Closing the
    iterator early cancels the run."""
    token = cancel or CancelToken()
    q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            q.put(("result", run(_checked(lambda d: q.put(("delta", d)), token))))
        except BaseException as exc:  # re-raised in the consumer's thread
            q.put(("error", exc))

    threading.Thread(target=work, name="rag-papers-answer", daemon=True).start()
    try:
        while True:
            kind, value = q.get()
            if kind == "delta":
                yield value
            elif kind == "result":
                yield value
                return
            else:
                raise value
    finally:
        token.cancel()  # a no-op once the run has finished


async def aiter_stream(
    run: Callable[[Writer], T], *, cancel: CancelToken | None = None
) -> AsyncIterator[str | T]:
    """Async form of iter_stream: the run goes to the default executor; an async consumer
    that stops (or is cancelled) cancels it."""
    token = cancel or CancelToken()
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(q.put_nowait, (kind, value))

    def work() -> None:
        try:
            put("result", run(_checked(lambda d: put("delta", d), token)))
        except BaseException as exc:
            put("error", exc)

    task = loop.run_in_executor(None, work)
    try:
        while True:
            kind, value = await q.get()
            if kind == "error":
                raise value
            yield value
            if kind == "result":
                return
    finally:
        token.cancel()
        if task.done():
            task.result()
