"""The HTTP server: the engine's ask/search/papers/ingest over JSON and server-sent events,
plus an OpenAI-compatible chat endpoint, so any OpenAI client can talk to the paper index.

Endpoints (see /docs for the schemas):

- ``GET /healthz``                 liveness and version (never needs a key, never waits)
- ``GET /readyz``                  readiness: the index answers (its paper count)
- ``POST /v1/ask``                 the Answer JSON; ``"stream": true`` -> SSE delta/answer/done
- ``POST /v1/search``              ranked papers with their best-matching sentence
- ``GET /v1/papers``               a page of papers (``limit``, ``offset``) and the total
- ``GET /v1/papers/{id}``          one paper record
- ``GET /v1/stats``                the index: papers, chunks, embedding model, size
- ``POST /v1/ingest``              an upload (multipart), or a file inside ingest_roots (JSON);
                                   a queued job: 200 with the report, or 202 + status URL
- ``GET /v1/ingest/{job}``         an ingest job's status and report
- ``POST /v1/chat/completions``    OpenAI chat.completion / chat.completion.chunk
- ``GET /v1/models``               one model, ``rag-papers``

Keys: when a key is configured, every endpoint but /healthz, /readyz and the docs needs it
(``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); ingest needs one always, and a key
shorter than server_min_key_chars is refused at start. Listening off loopback without a key
is refused. Every error is JSON: ``{"error": {"message", "type", "param", "code"}}``; a bad
request is 400.

The ``model`` of a chat request is echoed and otherwise ignored, except ``rag-papers:<llm spec>``
(e.g. ``rag-papers:extractive``), which answers that one request with that llm, if the server
allows it (its llm, ``extractive``, or one of allowed_llms).

Worker processes (``serve(workers=N)``, N > 1): uvicorn starts N processes that share the
socket, each building its app with ``worker_app``. The parent passes them its settings in a
private run folder (a temporary folder only the user can read, removed on exit), and the
secrets (API keys) in an environment variable, never on a command line. Per process: the
engine (each worker opens the index itself and sees another's ingest within
refresh_seconds), the ingest queue (each runs its own jobs; their status is shared through a
job board in the run folder, so any worker answers ``GET /v1/ingest/{job}``) and the rate
limit (each worker takes its share). Every response names its worker in an
``X-Rag-Papers-Worker`` header (the process id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_papers import RagPapersError, SettingsError, __version__
from rag_papers.server import routes_api, routes_ingest, routes_openai
from rag_papers.server.deps import Engine
from rag_papers.server.errors import install_error_handlers
from rag_papers.server.guard import (
    KEY_HINT,
    KeyGuard,
    check_bind,
    check_key,
    is_loopback,
    resolve_key,
)
from rag_papers.server.ingest_jobs import JobBoard
from rag_papers.server.openapi import tune_openapi
from rag_papers.server.ratelimit import RateLimit

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = ["WORKERS_PER_CORE", "WorkerHeader", "check_workers", "create_app", "serve", "worker_app"]

log = logging.getLogger(__name__)

WORKERS_PER_CORE = 4  # more processes than this only queue for the cores and the memory
_RUN_DIR_ENV = "RAG_PAPERS_SERVER_RUN_DIR"  # the parent's run folder, for the workers
_SECRETS_ENV = "RAG_PAPERS_SERVER_SECRETS"  # the keys, kept off the disk and the command line
_SETTINGS_FILE = "settings.json"
_JOBS_FILE = "ingest_jobs.sqlite"
_WORKER_HEADER = b"x-rag-papers-worker"


def create_app(
    settings: Settings,
    *,
    qa: PaperQA | None = None,
    api_key: str | None = None,
    require_key: bool = False,
    workers: int = 1,
    board: JobBoard | None = None,
) -> FastAPI:
    """The FastAPI app over one engine.

    ``api_key`` defaults to settings.server_api_key; when set, every endpoint but /healthz,
    /readyz (and the docs) requires it, and it must have server_min_key_chars characters.
    ``require_key=True`` refuses to build an app without a key (serve() passes it when
    listening off loopback). ``qa`` shares an existing engine (the caller closes it);
    otherwise the app makes its own and closes it on shutdown. ``workers`` and ``board``:
    this app is one of that many worker processes, sharing ingest job status on ``board``.
    """
    key = resolve_key(settings, api_key)
    if require_key and not key:
        raise SettingsError(f"this server must have an API key: {KEY_HINT}")
    check_key(settings, key)
    engine = Engine(settings, qa, board=board)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="rag-papers", version=__version__, description=__doc__, lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(KeyGuard, api_key=key, max_body_bytes=settings.max_body_bytes)
    # Added last, so it runs first: a refused client costs no key check or body read.
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute, workers=workers)
    if workers > 1:  # outermost, so refusals name their worker too
        app.add_middleware(WorkerHeader)
    install_error_handlers(app)
    app.include_router(routes_api.router)
    app.include_router(routes_ingest.router)
    app.include_router(routes_openai.router)
    tune_openapi(app, settings, keyed=bool(key))
    return app


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    workers: int = 1,
) -> None:
    """Run the server with uvicorn until interrupted. Off loopback a key is mandatory.
    ``workers`` > 1 runs that many worker processes (see the module docstring)."""
    import uvicorn

    key = resolve_key(settings, api_key)
    check_bind(host, key)
    check_key(settings, key)
    check_workers(workers)
    require_key = not is_loopback(host)
    if workers == 1:
        app = create_app(settings, api_key=key, require_key=require_key)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    # Until uvicorn's supervisor takes over SIGTERM: stop through the finally blocks, so the
    # run folder is removed and the preparing process stopped.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    spec = {"require_key": require_key, "workers": workers, "parent": os.getpid()}
    try:
        with _run_folder(settings, key, spec):
            config = uvicorn.Config(
                f"{__name__}:worker_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level=log_level,
            )
            sock = config.bind_socket()  # a busy port fails now, before the index is opened
            try:
                _prepare_index()
                _supervise(config, sock)
            finally:
                sock.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_workers(workers: int) -> None:
    """Refuse a worker count outside 1..WORKERS_PER_CORE x the CPU cores (SettingsError)."""
    cores = os.cpu_count() or 1
    most = WORKERS_PER_CORE * cores
    if not 1 <= workers <= most:
        raise SettingsError(
            f"--workers {workers}: must be between 1 and {most} ({WORKERS_PER_CORE} per CPU "
            f"core, {cores} here); each worker holds its own copy of the index and model"
        )


class WorkerHeader:
    """ASGI middleware: every response names the worker process that answered it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                message = {**message, "headers": [*headers, (_WORKER_HEADER, self.pid)]}
            await send(message)

        await self.app(scope, receive, named)


def worker_app() -> FastAPI:
    """The app of one worker process: uvicorn calls this in each worker (factory=True)."""
    run_dir, settings, spec = _worker_spec()
    _exit_with_parent(run_dir, spec["parent"])
    return create_app(
        settings,
        api_key=spec["api_key"],
        require_key=spec["require_key"],
        workers=spec["workers"],
        board=JobBoard(run_dir / _JOBS_FILE),
    )


# --- the parent's side ----------------------------------------------------------------------
@contextlib.contextmanager
def _run_folder(settings: Settings, key: str | None, spec: dict[str, Any]) -> Iterator[Path]:
    """A private folder with the settings and the job board, and the secrets in the
    environment the workers inherit; both gone when the server stops."""
    from pydantic import SecretStr

    run_dir = Path(tempfile.mkdtemp(prefix="rag-papers-serve-"))  # mode 0700
    data = settings.model_dump(mode="json")
    secrets = {"api_key": key}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = None
            secrets[name] = value.get_secret_value()
    saved = {name: os.environ.get(name) for name in (_RUN_DIR_ENV, _SECRETS_ENV)}
    try:
        fd = os.open(run_dir / _SETTINGS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"settings": data, **spec}, out)
        JobBoard(run_dir / _JOBS_FILE)
        os.environ[_RUN_DIR_ENV] = str(run_dir)
        os.environ[_SECRETS_ENV] = json.dumps(secrets)
        yield run_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(run_dir, ignore_errors=True)


def _prepare_index() -> None:
    """Open the index once, in a process of its own, before the workers start: a first run
    ingests the sample corpus once (not once per worker), and a broken index or setting
    stops the server here, with its own error. The parent stays small: it never loads the
    engine."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_open_index, args=(sender,), name="rag-papers-prepare")
    process.start()
    sender.close()
    try:
        error = receiver.recv()
    except EOFError:
        process.join()
        error = RagPapersError(f"opening the index stopped (exit code {process.exitcode})")
    except BaseException:  # Ctrl-C or SIGTERM while it works: it stops too
        process.terminate()
        raise
    finally:
        process.join()
        receiver.close()
    if error is not None:
        raise error


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _supervise(config: Any, sock: socket.socket) -> None:
    """uvicorn's worker supervisor, as ``uvicorn.run`` runs it, but a worker that cannot
    start is an error here (uvicorn.run returns as if all went well)."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess
    from uvicorn.supervisors.multiprocess import SIGNALS

    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}  # the supervisor takes them
    try:
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise RagPapersError("a server worker process could not start: its error is above")


# --- the workers' side ----------------------------------------------------------------------
def _worker_spec() -> tuple[Path, Settings, dict[str, Any]]:
    from rag_papers import Settings

    run_dir = Path(os.environ[_RUN_DIR_ENV])
    spec = json.loads((run_dir / _SETTINGS_FILE).read_text(encoding="utf-8"))
    # Taken out of this process's environment: nothing it starts inherits the keys.
    secrets = json.loads(os.environ.pop(_SECRETS_ENV))
    data = spec.pop("settings")
    data.update({k: v for k, v in secrets.items() if k != "api_key"})
    # model_validate, not Settings(...): exactly the parent's values, no second read of
    # the environment or config file.
    settings = Settings.model_validate(data)
    return run_dir, settings, {**spec, "api_key": secrets["api_key"]}


def _open_index(sender: Connection) -> None:
    """The preparing process: open the index with the parent's settings, report how it went."""
    try:
        from rag_papers import PaperQA

        _, settings, _ = _worker_spec()
        qa = PaperQA(settings, notify=lambda message: print(message, file=sys.stderr))
        try:
            qa.open()
        finally:
            qa.close()
    except Exception as exc:
        try:
            sender.send(exc)
        except Exception:  # an error that does not pickle: its message is enough
            sender.send(RagPapersError(str(exc)))
    else:
        sender.send(None)
    finally:
        sender.close()


def _exit_with_parent(run_dir: Path, parent: int) -> None:
    """Stop this worker when the parent goes without stopping it (killed with SIGKILL): a
    worker left behind would hold the port and the index open for nobody. The parent's run
    folder goes too (its finally never ran). ``parent`` is the pid the parent wrote, not
    getppid() now: the parent may have died while this worker was still starting."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        shutil.rmtree(run_dir, ignore_errors=True)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    threading.Thread(target=watch, name="rag-papers-parent-watch", daemon=True).start()
