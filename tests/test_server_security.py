"""What the server lets a client do and learn: path ingest only inside ingest_roots (no
traversal, symlink escape or probing), size limits, errors that quote no file and name no
server path, uploads deleted once ingested, a minimum key length, and ingest jobs on their own
bounded queue so /healthz never waits behind them. A real uvicorn over sample-index copies."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from servers import isolate_user_dirs
from test_server import (
    KEY,
    NEW_IDS,
    NEW_PAPERS,
    SELF_RAG,
    LiveServer,
    auth,
    error_of,
    index_copy,
)

from rag_papers import IngestReport, PaperQA, Settings, SettingsError, load_settings
from rag_papers.server import create_app, serve

LIMIT = 10_000  # max_ingest_file_bytes here: NEW_PAPERS (2.6 kB) fits, BIG does not
BIG = b'{"title": "t", "abstract": "' + b"a" * (LIMIT + 100) + b'"}\n'


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("security-home")
    with pytest.MonkeyPatch.context() as mp:
        isolate_user_dirs(mp, path)
        yield path


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/ (the ingest root) and outside/ (not), with the traps a client might try."""
    base = tmp_path_factory.mktemp("disk")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(NEW_PAPERS, root / "good.jsonl")
    shutil.copy(NEW_PAPERS, outside / "secret.jsonl")
    (root / "escape.jsonl").symlink_to(outside / "secret.jsonl")  # points out of the root
    (root / "sub" / "alias.jsonl").symlink_to(root / "good.jsonl")  # stays inside
    (root / "big.jsonl").write_bytes(BIG)
    # A CSV whose header row is all the loader can complain about.
    (root / "leak.csv").write_text("secret_token_abc,other_col\nx,y\n")
    return base


def _settings(master: Path, tmp: pytest.TempPathFactory, **overrides: Any) -> Settings:
    return index_copy(master, tmp.mktemp("index"), server_api_key=KEY, **overrides)


@pytest.fixture(scope="module")
def rooted(
    home: Path, disk: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings]]:
    settings = _settings(
        _sample_index_master,
        tmp_path_factory,
        ingest_roots=[disk / "root"],
        max_ingest_file_bytes=LIMIT,
    )
    with LiveServer(create_app(settings)) as live:
        yield live.url, settings


def _ingest(url: str, **kwargs: Any) -> httpx.Response:
    params = {"wait": 120, **kwargs.pop("params", {})}
    return httpx.post(f"{url}/v1/ingest", params=params, headers=auth(), timeout=180, **kwargs)


def _leftovers(settings: Settings) -> list[Path]:
    uploads = settings.data_dir / "uploads"
    return [p for p in uploads.rglob("*")] if uploads.exists() else []


# --- path ingest -----------------------------------------------------------------------------
def test_path_ingest_is_refused_without_ingest_roots(
    home: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """By default the server reads no path from its disk; uploads still work."""
    settings = _settings(_sample_index_master, tmp_path_factory)
    with LiveServer(create_app(settings)) as live:
        error = error_of(_ingest(live.url, json={"path": str(NEW_PAPERS)}), 403)
        assert error["code"] == "ingest_roots_unset" and error["param"] == "path"
        assert "ingest_roots" in error["message"] and "upload" in error["message"]
        files = {"file": ("new_papers.jsonl", NEW_PAPERS.read_bytes())}
        r = _ingest(live.url, files=files)
        assert r.status_code == 200, r.text
        assert r.json()["report"]["added"] == 2
        assert _leftovers(settings) == []  # the upload was deleted once ingested


@pytest.mark.parametrize(
    "raw",
    [
        "../outside/secret.jsonl",  # traversal
        "sub/../../outside/secret.jsonl",
        "{outside}/secret.jsonl",  # absolute, outside
        "escape.jsonl",  # a symlink inside pointing outside
        "/proc/self/environ",
        "/etc/passwd",
        "~/.bashrc",
        "sub",  # a directory
        "missing.jsonl",  # inside, missing
        "{root}/missing.jsonl",
        "{outside}/missing.jsonl",  # outside, missing: the same answer as outside, existing
    ],
)
def test_path_ingest_reads_only_regular_files_inside_the_roots(
    rooted: tuple[str, Settings], disk: Path, raw: str
) -> None:
    url, _ = rooted
    raw = raw.format(root=disk / "root", outside=disk / "outside")
    error = error_of(_ingest(url, json={"path": raw}), 404)
    assert error["param"] == "path" and error["code"] == "path_not_found"
    # One message for missing and forbidden: it tells nothing about the server's disk.
    assert error["message"] == "path: no regular file by that name inside the server's ingest roots"


def test_path_ingest_inside_the_roots_works(rooted: tuple[str, Settings], disk: Path) -> None:
    url, _ = rooted
    for raw in ("good.jsonl", str(disk / "root" / "good.jsonl"), "sub/alias.jsonl"):
        r = _ingest(url, json={"path": raw})
        assert r.status_code == 200, (raw, r.text)
    paper = httpx.get(f"{url}/v1/papers/{sorted(NEW_IDS)[0]}", headers=auth()).json()
    assert paper["source"] == "good.jsonl"  # relative to its root: no server path


def test_files_over_the_size_limit_are_413(rooted: tuple[str, Settings]) -> None:
    url, settings = rooted
    error = error_of(_ingest(url, json={"path": "big.jsonl"}), 413)
    assert error["code"] == "file_too_large" and error["param"] == "path"
    assert "max_ingest_file_bytes" in error["message"]
    error = error_of(_ingest(url, files={"file": ("big.jsonl", BIG)}), 413)
    assert error["code"] == "file_too_large" and error["param"] == "file"
    assert _leftovers(settings) == []


def test_loader_errors_of_a_path_ingest_quote_nothing_from_the_file(
    rooted: tuple[str, Settings], disk: Path
) -> None:
    url, _ = rooted
    error = error_of(_ingest(url, json={"path": "leak.csv"}), 400)
    assert error["type"] == "loader_error"
    assert error["message"].startswith("leak.csv: no column for title")
    assert "secret_token_abc" not in error["message"] and str(disk) not in error["message"]


# --- what responses reveal -------------------------------------------------------------------
def test_responses_name_no_server_paths(rooted: tuple[str, Settings], disk: Path) -> None:
    url, settings = rooted
    bad = NEW_PAPERS.read_bytes() + b'{"id": "x1", "title": "", "abstract": "no title"}\n'
    r = _ingest(url, files={"file": ("with bad.jsonl", bad)})
    assert r.status_code == 200, r.text
    rejected = r.json()["report"]["rejected"]
    assert rejected and all(line.startswith("with_bad.jsonl:3") for line in rejected), rejected
    stats = httpx.get(f"{url}/v1/stats", headers=auth(), timeout=60).json()
    assert stats["store"] == "embedded"
    for text in (r.text, httpx.get(f"{url}/v1/papers", headers=auth()).text, str(stats)):
        for path in (settings.data_dir, settings.resolved_index_dir, disk, Path.home()):
            assert str(path) not in text
    assert _leftovers(settings) == []  # the upload is gone; its papers stay
    for pid in NEW_IDS:
        assert httpx.get(f"{url}/v1/papers/{pid}", headers=auth()).status_code == 200


def test_errors_name_no_server_paths_and_healthz_needs_no_index(
    home: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An index built with other settings: a 409 naming '<index>', not where it lies; and
    /healthz (no key) still answers, since liveness does not open the index."""
    settings = _settings(_sample_index_master, tmp_path_factory, chunk_tokens=100)
    with LiveServer(create_app(settings)) as live:
        r = httpx.get(f"{live.url}/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        for response in (
            httpx.get(f"{live.url}/readyz", timeout=60),
            httpx.post(
                f"{live.url}/v1/ask", json={"question": SELF_RAG}, headers=auth(), timeout=60
            ),
        ):
            error = error_of(response, 409)
            assert error["code"] == "index_mismatch" and "<index>" in error["message"]
            assert str(settings.resolved_index_dir) not in error["message"]
            assert str(settings.data_dir) not in error["message"]


def test_model_files_are_named_never_located(home: Path, tmp_path: Path) -> None:
    """A gguf llm is shown (and may be asked for) by its file name, not its path."""
    settings = load_settings(
        index_dir=tmp_path / "index",
        data_dir=tmp_path,
        llm="gguf:/srv/models/private-dir/tiny.gguf",
        allowed_llms=["gguf:/srv/other-dir/small.gguf"],
        server_api_key=KEY,
        auto_ingest_sample=False,
    )
    with LiveServer(create_app(settings)) as live:
        assert httpx.get(f"{live.url}/healthz").json()["llm"] == "gguf:tiny.gguf"
        models = httpx.get(f"{live.url}/v1/models", headers=auth())
        assert "gguf:small.gguf" in models.text and "/srv/" not in models.text
        refused = httpx.post(
            f"{live.url}/v1/ask", json={"question": SELF_RAG, "llm": "gguf:x.gguf"}, headers=auth()
        )
        assert error_of(refused, 400)["param"] == "llm" and "/srv/" not in refused.text
        # Named by its file name it is allowed; the file is missing, and the error says so
        # without saying where the server looked.
        r = httpx.post(
            f"{live.url}/v1/ask",
            json={"question": SELF_RAG, "llm": "gguf:small.gguf"},
            headers=auth(),
            timeout=60,
        )
        assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
        assert "/srv/" not in r.text and "small.gguf" in r.text


# --- keys ------------------------------------------------------------------------------------
def test_a_key_shorter_than_server_min_key_chars_is_refused(tmp_path: Path) -> None:
    settings = load_settings(index_dir=tmp_path / "index", data_dir=tmp_path)
    for short in ("k", "fifteen-chars-x"):
        with pytest.raises(SettingsError, match="server_min_key_chars"):
            create_app(settings, api_key=short)
        with pytest.raises(SettingsError, match="server_min_key_chars"):
            serve(settings, host="127.0.0.1", port=1, api_key=short)  # before binding
        from_settings = settings.model_copy(update={"server_api_key": SecretStr(short)})
        with pytest.raises(SettingsError, match="server_min_key_chars"):
            create_app(from_settings)
    create_app(settings, api_key="sixteen-chars-xy")
    strict = settings.model_copy(update={"server_min_key_chars": 40})
    with pytest.raises(SettingsError, match="40"):
        create_app(strict, api_key=KEY)


# --- ingest jobs off the request threads ----------------------------------------------------
class _BlockingQA(PaperQA):
    """Ingests wait until ``release`` is set: a long ingest, on demand."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.started = threading.Event()
        self.release = threading.Event()

    def ingest(self, paths: Sequence[Path | str], **kwargs: Any) -> IngestReport:
        self.started.set()
        self.release.wait(300)
        return super().ingest(paths, **kwargs)


def test_healthz_answers_while_ingests_run_and_a_full_queue_is_429(
    home: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """More concurrent ingests than the shared thread pool has threads (each used to hold one
    while it waited): /healthz still answers; the queue holds one job, the rest get 429."""
    settings = _settings(_sample_index_master, tmp_path_factory, ingest_queue_size=1)
    qa = _BlockingQA(settings)
    files = {"file": ("new_papers.jsonl", NEW_PAPERS.read_bytes())}
    clients = (os.cpu_count() or 1) + 6  # asyncio's default pool: min(32, cpus + 4) threads
    with qa, LiveServer(create_app(settings, qa=qa)) as live:
        try:
            first = _ingest(live.url, files=files, params={"wait": 0.2})
            assert first.status_code == 202, first.text  # still running: its status URL
            assert first.headers["location"] == first.json()["status_url"]
            assert qa.started.wait(120)
            with ThreadPoolExecutor(clients) as pool:
                rest = list(
                    pool.map(
                        lambda _: _ingest(live.url, files=files, params={"wait": 0}),
                        range(clients),
                    )
                )
            health = httpx.get(f"{live.url}/healthz", timeout=30)
            assert health.status_code == 200
        finally:
            qa.release.set()
        statuses = [r.status_code for r in rest]
        assert set(statuses) <= {202, 429} and statuses.count(202) <= 1, statuses
        busy = next(r for r in rest if r.status_code == 429)
        assert error_of(busy, 429)["code"] == "ingest_queue_full"
        assert int(busy.headers["retry-after"]) > 0
        accepted = [first, *(r for r in rest if r.status_code == 202)]
        for r in accepted:
            status = httpx.get(
                f"{live.url}{r.json()['status_url']}",
                params={"wait": 120},
                headers=auth(),
                timeout=180,
            ).json()
            assert status["status"] == "done", status
        assert accepted[0].json()["job"] != accepted[-1].json()["job"] or len(accepted) == 1
        assert _leftovers(settings) == []


def test_clients_off_loopback_are_rate_limited(sample_settings: Settings) -> None:
    """A bucket per client address off loopback; the probes and other clients are not held up."""
    import asyncio

    app = create_app(sample_settings.model_copy(update={"rate_limit_per_minute": 3}))

    def client(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://rag-papers.test")

    async def run() -> None:
        remote, other, local = client("203.0.113.7"), client("198.51.100.2"), client("127.0.0.1")
        codes = [(await remote.get("/v1/papers?limit=1")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = await remote.get("/v1/papers?limit=1")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert (await remote.get("/healthz")).status_code == 200  # probes are never limited
        assert (await other.get("/v1/papers?limit=1")).status_code == 200
        for _ in range(5):  # this machine's own users (or a proxy on it) are not limited
            assert (await local.get("/v1/papers?limit=1")).status_code == 200

    asyncio.run(run())
