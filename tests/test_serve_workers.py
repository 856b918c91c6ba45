"""`rag-papers serve --workers N` as a real process: uvicorn's worker processes on one real
socket, each with its own engine over one index in tmp, real HTTP clients.

What is checked: every worker answers (each response names its worker, X-Rag-Papers-Worker);
an ingest job's status is found whichever worker a status request lands on; every worker
finds a paper another worker ingested (within refresh_seconds; polled, never timed); the rate
limit is shared among the workers; stopping the parent (SIGTERM, Ctrl-C, or SIGKILL) leaves no
worker behind; the keys never reach a command line or the disk, and the run folder goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, isolate_user_dirs

from rag_papers import Settings, load_settings
from rag_papers.server import create_app
from rag_papers.server.ingest_jobs import IngestJob, JobBoard

KEY = "workers-test-key-0123456789"
WORKERS = 2
DATA = Path(__file__).parent / "data" / "server"
# A paper in no file of the repository, so only the ingest below can have put it there.
FRESH = {
    "id": "fresh-0001",
    "title": "Cryptobiotic Memory: Tardigrade-Inspired Dormancy for Language Agents",
    "abstract": "We propose cryptobiotic memory, a dormancy scheme for language agents "
    "inspired by tardigrades: an agent desiccates its episodic memory into a compact "
    "tun state and rehydrates it on demand. On three long-horizon benchmarks, tun-state "
    "rehydration keeps 97% of task success while storing 12 times less context.",
}
FRESH_QUERY = "tardigrade-inspired cryptobiotic dormancy of agent memory (tun state)"
WORKER_HEADER = "x-rag-papers-worker"
# Generous: a loaded 2-core machine starts N+1 interpreters that each import the engine.
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
ROUND = 8  # concurrent requests per round: a busy worker leaves the next accept to another


@dataclass
class Served:
    settings: Settings
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def _cli(settings: Settings, *args: str) -> list[str]:
    index = str(settings.resolved_index_dir)
    return [sys.executable, "-m", "rag_papers", "--index-dir", index, *args]


def _command(settings: Settings, port: int, workers: int | str) -> list[str]:
    return _cli(settings, "serve", "--workers", str(workers), "--port", str(port))


@contextlib.contextmanager
def served(settings: Settings, workers: int = WORKERS) -> Iterator[Served]:
    """The CLI's server in its own session (a terminal's Ctrl-C reaches the whole group);
    the key comes from the environment, as a deployment passes it."""
    port = free_port()
    fd, name = tempfile.mkstemp(prefix="serve-workers-", suffix=".log")
    env = {
        **os.environ,
        "RAG_PAPERS_DATA_DIR": str(settings.data_dir),
        "RAG_PAPERS_SERVER_API_KEY": KEY,
    }
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(
            _command(settings, port, workers),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Served(settings, f"http://127.0.0.1:{port}", process, Path(name))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{server.url}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{server.tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        Path(name).unlink(missing_ok=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _in_rounds(request: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """ROUND requests at once, each on its own connection (so each is accepted anew)."""
    with ThreadPoolExecutor(ROUND) as pool:
        return list(pool.map(lambda _: request(), range(ROUND)))


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the workers, multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan left running counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _index_copy(master: Path, root: Path, **overrides: Any) -> Settings:
    shutil.copytree(master, root / "index")
    return load_settings(index_dir=root / "index", data_dir=root, **overrides)


# --- one two-worker server for the request tests ------------------------------------------------
@pytest.fixture(scope="module")
def server(
    _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    with pytest.MonkeyPatch.context() as mp:
        isolate_user_dirs(mp, tmp_path_factory.mktemp("workers-home"))
        settings = _index_copy(_sample_index_master, tmp_path_factory.mktemp("workers"))
        with served(settings) as live:
            yield live


@pytest.fixture(scope="module")
def worker_pids(server: Served) -> set[str]:
    """Every worker's pid, as its responses name it (polled until all have answered)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < WORKERS and time.monotonic() < deadline:
        responses = _in_rounds(lambda: httpx.get(f"{server.url}/healthz", timeout=30))
        seen |= {r.headers[WORKER_HEADER] for r in responses}
    assert len(seen) == WORKERS, f"only workers {seen} answered:\n{server.tail()}"
    return seen


def test_every_worker_answers_and_names_itself(server: Served, worker_pids: set[str]) -> None:
    children = {str(pid) for pid in _children(server.process.pid)}
    assert worker_pids <= children  # the parent's worker processes, not the parent itself
    assert str(server.process.pid) not in worker_pids


def test_an_ingest_job_is_found_on_every_worker(server: Served, worker_pids: set[str]) -> None:
    """POST lands on one worker; status requests on any worker find the job (never 404)."""
    with (DATA / "new_papers.jsonl").open("rb") as upload:
        posted = httpx.post(
            f"{server.url}/v1/ingest",
            params={"wait": 0},
            files={"file": ("new_papers.jsonl", upload)},
            headers=_auth(),
            timeout=60,
        )
    assert posted.status_code in (200, 202), posted.text
    job = posted.json()["job"]

    answered: set[str] = set()
    statuses: set[str] = set()
    deadline = time.monotonic() + 300
    while "done" not in statuses or answered != worker_pids:
        assert time.monotonic() < deadline, f"job {job}: {statuses} from {answered}"
        responses = _in_rounds(
            lambda: httpx.get(
                f"{server.url}/v1/ingest/{job}", params={"wait": 1}, headers=_auth(), timeout=60
            )
        )
        for r in responses:
            assert r.status_code == 200, f"worker {r.headers.get(WORKER_HEADER)}: {r.text}"
            assert r.json()["job"] == job and r.json()["error"] is None
            statuses.add(r.json()["status"])
        answered |= {r.headers[WORKER_HEADER] for r in responses}
    done = [r.json() for r in responses if r.json()["status"] == "done"]
    assert done and done[0]["report"]["added"] >= 1


def test_every_worker_sees_another_process_ingest(
    server: Served, worker_pids: set[str], tmp_path: Path
) -> None:
    """A `rag-papers ingest` process adds a paper to the index the workers serve; every worker
    finds it (within refresh_seconds, default 2 s). Polled until a whole round from every
    worker finds it, with a generous deadline: no timing."""
    # Every worker has its index open (a search) first: this is about picking up another
    # process's ingest, not about opening the index late.
    searched: set[str] = set()
    deadline = time.monotonic() + 120
    while searched != worker_pids:
        assert time.monotonic() < deadline, f"only workers {searched} searched"
        for r in _in_rounds(lambda: _search(server)):
            assert FRESH["title"] not in _titles(r)
            searched.add(r.headers[WORKER_HEADER])

    papers = tmp_path / "fresh.jsonl"
    papers.write_text(json.dumps(FRESH) + "\n", encoding="utf-8")
    ingest = subprocess.run(
        _cli(server.settings, "ingest", str(papers)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAG_PAPERS_DATA_DIR": str(server.settings.data_dir)},
    )
    assert ingest.returncode == 0, ingest.stderr

    deadline = time.monotonic() + server.settings.refresh_seconds + 120
    while True:
        responses = _in_rounds(lambda: _search(server))
        found = {r.headers[WORKER_HEADER]: FRESH["title"] in _titles(r) for r in responses}
        if all(found.values()) and set(found) == worker_pids:
            break
        stale = sorted(pid for pid, ok in found.items() if not ok)
        assert time.monotonic() < deadline, f"workers {stale} never found the new paper"
        time.sleep(0.2)


def _search(server: Served) -> httpx.Response:
    body = {"query": FRESH_QUERY, "k": 5}
    return httpx.post(f"{server.url}/v1/search", json=body, headers=_auth(), timeout=60)


def _titles(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [paper["title"] for paper in response.json()["results"]]


def test_the_keys_stay_off_command_lines_and_disk(server: Served, worker_pids: set[str]) -> None:
    for pid in [server.process.pid, *_children(server.process.pid)]:
        assert KEY.encode() not in _cmdline(pid)
    run_dir = _run_dir(server.process.pid)
    assert run_dir.stat().st_mode & 0o077 == 0  # only the user may read it
    for path in run_dir.iterdir():
        assert KEY.encode() not in path.read_bytes(), path.name
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["settings"]["server_api_key"] is None


def _run_dir(parent: int) -> Path:
    """The run folder, from a worker's environment (the parent set it after it started)."""
    pid = next(p for p in _children(parent) if b"spawn_main" in _cmdline(p))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    value = next(v for v in environ if v.startswith(b"RAG_PAPERS_SERVER_RUN_DIR="))
    return Path(value.split(b"=", 1)[1].decode())


# --- stopping ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "how", ["sigterm", "ctrl-c", "sigkill"], ids=["sigterm", "ctrl-c", "parent-killed"]
)
def test_stopping_the_parent_stops_every_worker(sample_settings: Settings, how: str) -> None:
    with served(sample_settings) as live:
        deadline = time.monotonic() + 60
        while len(workers := _children(live.process.pid)) < WORKERS + 1:  # + resource tracker
            assert time.monotonic() < deadline, live.tail()
            time.sleep(0.2)
        run_dir = _run_dir(live.process.pid)
        assert run_dir.is_dir()
        if how == "sigterm":  # a service manager's stop
            live.process.send_signal(signal.SIGTERM)
        elif how == "ctrl-c":  # a terminal's Ctrl-C reaches the whole process group
            os.killpg(live.process.pid, signal.SIGINT)
        else:  # the parent dies without a word: each worker notices and stops itself
            live.process.kill()
        code = live.process.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while left := [pid for pid in workers if _running(pid)]:
            assert time.monotonic() < deadline, f"workers {left} outlived the parent ({how})"
            time.sleep(0.2)
        if how != "sigkill":
            assert code == 0, live.tail()
        while run_dir.exists():  # the settings and job board go (with SIGKILL: the workers)
            assert time.monotonic() < deadline, f"{run_dir} outlived the server ({how})"
            time.sleep(0.2)


# --- without starting processes ---------------------------------------------------------------
def test_the_rate_limit_is_shared_among_workers(sample_settings: Settings) -> None:
    """Each of 2 workers takes half of a limit of 4 a minute: 2, then 429 naming the share."""
    settings = sample_settings.model_copy(update={"rate_limit_per_minute": 4})
    app = create_app(settings, workers=2)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get("/healthz")] + [
                await client.get("/v1/papers?limit=1") for _ in range(3)
            ]

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert all(r.headers[WORKER_HEADER] == str(os.getpid()) for r in responses)
    message = responses[-1].json()["error"]["message"]
    assert "the limit is 4 a minute (2 on each of the server's worker processes)" in message


def test_a_job_of_a_worker_that_died_is_reported_failed(tmp_path: Path) -> None:
    board = JobBoard(tmp_path / "jobs.sqlite")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    job = IngestJob(work=dict, status="running")
    board.put(job)
    db = board._connect()  # as if that process had written it
    db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (int(gone.stdout), job.id))
    db.close()
    seen = board.get(job.id)
    assert seen is not None and seen.status == "failed" and seen.done.done()
    assert seen.error is not None and seen.error.code == "worker_stopped"
    job.status, job.report = "done", {"added": 1}
    board.put(job)  # a finished job keeps its report, whoever ran it
    again = board.get(job.id)
    assert again is not None and again.status == "done" and again.report == {"added": 1}
    assert board.get("no-such-job") is None


@pytest.mark.parametrize("workers", ["0", "999"])
def test_the_worker_count_is_checked(sample_settings: Settings, workers: str) -> None:
    proc = subprocess.run(
        _command(sample_settings, free_port(), workers),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if workers == "0":
        assert proc.returncode == 2 and "--workers" in proc.stderr
    else:
        assert proc.returncode == 3
        assert "--workers 999: must be between 1 and" in proc.stderr
