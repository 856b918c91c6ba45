"""HTTP throughput of `rag-papers serve` with 1 and with N worker processes.

For each worker count the server runs as a real process (`python -m rag_papers ... serve
--workers N`) on one index; after a warm-up (every worker has opened the index and answered),
C concurrent clients (threads, one keep-alive httpx client each) send R requests each to
POST /v1/search, then fewer to POST /v1/ask (extractive; warm: each question was asked once
in the warm-up, so its embeddings are in the persistent cache). Reported per endpoint: requests/s
over the whole burst, p50/p95 latency in ms, errors; and the server's RSS after the load
(VmRSS from /proc: the workers summed, and the total with the parent and multiprocessing's
resource tracker). The clients run on the same machine and take CPU from the server: compare
the worker counts within one run, not across machines.

Usage: python benchmarks/serve.py [--index DIR] [--collection C] [--queries FILE]
       [--workers 1 2] [--clients 20] [--search-requests 3] [--ask-requests 2] [--k K]
       [--out results.json]
(--index: an existing index, used read-only; default: the bundled sample corpus ingested
 into a temporary index first. --queries: JSONL with "question" or "text" per line; default:
 the questions of eval/datasets/sample.jsonl.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = ["main", "measure", "rss_kb", "served"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_QUERIES = ROOT / "eval" / "datasets" / "sample.jsonl"
WORKER_HEADER = "x-rag-papers-worker"


def _cli(index: Path, collection: str | None, *args: str) -> list[str]:
    command = [sys.executable, "-m", "rag_papers", "--index-dir", str(index)]
    if collection:
        command += ["--collection", collection]
    return [*command, *args]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(
    index: Path, collection: str | None, workers: int, env: dict[str, str]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server as a process on a free loopback port; stopped (SIGTERM) on exit."""
    port = _free_port()
    command = _cli(index, collection, "serve", "--workers", str(workers), "--port", str(port))
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"the server did not start:\n{log.read().decode()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(120)
        log.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _server_rss(parent: int) -> dict[str, float]:
    children = _children(parent)
    workers = [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    tracker = [p for p in children if p not in workers]
    if not workers:  # --workers 1: the parent is the server
        return {"workers_mb": rss_kb(parent) / 1024, "total_mb": rss_kb(parent) / 1024}
    worker_kb = sum(rss_kb(p) for p in workers)
    total_kb = worker_kb + rss_kb(parent) + sum(rss_kb(p) for p in tracker)
    return {"workers_mb": worker_kb / 1024, "total_mb": total_kb / 1024}


def _percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


def measure(
    url: str, path: str, bodies: list[dict[str, Any]], clients: int, per_client: int
) -> dict[str, Any]:
    """``clients`` threads, each sending ``per_client`` requests to ``path`` (bodies in turn)."""
    times: list[float] = []
    errors: list[str] = []
    pids: set[str] = set()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            start.wait()
            for i in range(per_client):
                body = bodies[(n * per_client + i) % len(bodies)]
                t = time.perf_counter()
                try:
                    response = http.post(path, json=body)
                    ok = response.status_code == 200
                    problem = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, problem, response = False, repr(exc), None
                elapsed = (time.perf_counter() - t) * 1000
                with lock:
                    if ok:
                        times.append(elapsed)
                    else:
                        errors.append(problem)
                    if response is not None and WORKER_HEADER in response.headers:
                        pids.add(response.headers[WORKER_HEADER])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    times.sort()
    return {
        "requests": len(times) + len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "requests_per_s": round((len(times) + len(errors)) / wall, 2),
        "p50_ms": round(statistics.median(times), 1) if times else None,
        "p95_ms": round(_percentile(times, 0.95), 1) if times else None,
        "workers_answering": len(pids) or 1,
    }


def _queries(path: Path) -> list[str]:
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts.append(row.get("question") or row.get("text"))
    return [t for t in texts if t]


def _sample_index(work: Path, env: dict[str, str]) -> Path:
    from rag_papers import sample_corpus_path

    index = work / "index"
    subprocess.run(_cli(index, None, "ingest", str(sample_corpus_path())), env=env, check=True)
    return index


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path)
    parser.add_argument("--collection")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--search-requests", type=int, default=3, help="per client")
    parser.add_argument("--ask-requests", type=int, default=2, help="per client")
    parser.add_argument("--k", type=int, help="papers per search (default: the server's top_k)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    queries = _queries(args.queries)
    searches = [{"query": q, **({"k": args.k} if args.k else {})} for q in queries]
    asks = [{"question": q, "llm": "extractive"} for q in queries]
    results: dict[str, Any] = {"clients": args.clients, "queries": len(queries), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "RAG_PAPERS_DATA_DIR": str(work / "data"),  # never the user's own
            "RAG_PAPERS_RATE_LIMIT_PER_MINUTE": "0",
            "ORT_DISABLE_TELEMETRY": "1",
        }
        env.pop("RAG_PAPERS_SERVER_API_KEY", None)
        index = args.index or _sample_index(work, env)
        results["index"] = str(index)
        for workers in args.workers:
            # Each run its own data dir, so its embedding cache starts empty (not filled by
            # the run before), then filled by the warm-up.
            run_env = {**env, "RAG_PAPERS_DATA_DIR": str(work / f"data-{workers}")}
            with served(index, args.collection, workers, run_env) as (url, process):
                # Warm-up, off the clock: every worker opens the index and answers; every
                # ask once (ask embeds through the persistent cache; search does not).
                measure(url, "/v1/search", searches, max(args.clients, 4 * workers), 1)
                used = asks[: args.clients * args.ask_requests]
                measure(url, "/v1/ask", used, args.clients, -(-len(used) // args.clients))
                load_before = _load()
                search = measure(url, "/v1/search", searches, args.clients, args.search_requests)
                ask = measure(url, "/v1/ask", asks, args.clients, args.ask_requests)
                run = {
                    "workers": workers,
                    "search": search,
                    "ask_extractive": ask,
                    "rss": _server_rss(process.pid),
                    "load_average_before": load_before,
                    "load_average_after": _load(),
                }
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
