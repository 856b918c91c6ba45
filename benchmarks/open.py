"""A new client's open time, warm search latency and peak RSS, embedded or against a server.

Each figure comes from a fresh subprocess that uses only the public API
(``from rag_papers import PaperQA, load_settings``), so it is what a new process pays:

- open: wall seconds from the moment the subprocess is started (interpreter start-up
  included) to the first ``PaperQA.search(q, k=10, mode="hybrid")`` result, also split into
  import / PaperQA() / first search as the subprocess saw them. Repeated ``--runs`` times;
  the median is the figure.
- warm: p50/p95 milliseconds of hybrid search over ``--queries`` SciFact test queries, after
  5 warm-up queries, in the last run only (the same process as its open).
- rss: peak RSS (ru_maxrss) of the subprocess after its first result, and after the warm
  queries.

Embedded (no --chroma-url, no --serve): each subprocess opens the existing --index-dir, as a
second process on the same machine would (the OS page cache is warm after the first run).
Server (--chroma-url URL, or --serve to serve a copy of --index-dir/chroma on a free port for
the duration of the run): each subprocess gets a new, EMPTY index dir (and data dir), which is
what a new machine or container sees: nothing cached locally.

Usage:
  python benchmarks/open.py --index-dir DIR [--collection scifact]
         [--chroma-url URL | --serve] [--runs 5] [--queries 100] [--label TEXT] [--out FILE]
Prints one JSON object, then a markdown table row:
  | label | papers | open s (median) | runs | import / init / first | p50 ms | p95 ms | RSS MB |
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["child", "main", "measure", "serve_copy", "test_queries"]

BEIR = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/beir"
TABLE_HEADER = (
    "| case | papers | open s (median) | open s (runs) | import / PaperQA() / first search s "
    "| warm p50 ms | warm p95 ms | peak RSS MB (open / +warm) |\n"
    "|---|---|---|---|---|---|---|---|"
)


def test_queries(beir: Path, n: int) -> list[str]:
    """The first ``n`` SciFact test queries (qrels/test.tsv), in file order."""
    ids: list[str] = []
    for line in (beir / "qrels/test.tsv").read_text().splitlines()[1:]:
        qid = line.split("\t")[0]
        if qid and qid not in ids:
            ids.append(qid)
    texts = {}
    for line in (beir / "queries.jsonl").open():
        row = json.loads(line)
        texts[str(row["_id"])] = row["text"]
    return [texts[q] for q in ids if q in texts][:n]


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(args: argparse.Namespace) -> None:
    """One new client: open, first search, then (``--warm``) warm latency. JSON on stdout."""
    t0 = time.perf_counter()
    from rag_papers import PaperQA, load_settings

    t_import = time.perf_counter()
    queries = json.loads(Path(args.queries_file).read_text())
    settings = load_settings(
        index_dir=Path(args.index_dir),
        data_dir=Path(args.data_dir),
        collection=args.collection,
        chroma_url=args.chroma_url,
        auto_ingest_sample=False,
    )
    qa = PaperQA(settings)
    t_init = time.perf_counter()
    first = qa.search(queries[0], k=10, mode="hybrid")
    t_first = time.perf_counter()
    wall_first = time.time()  # the parent subtracts its own start time
    out: dict[str, Any] = {
        "wall_first": wall_first,
        "import_s": round(t_import - t0, 3),
        "init_s": round(t_init - t_import, 3),
        "first_search_s": round(t_first - t_init, 3),
        "hits": len(first),
        "rss_open_mb": _peak_rss_mb(),
    }
    if args.warm:
        for q in queries[:5]:  # warm-up: caches, HNSW pages, BM25 arrays
            qa.search(q, k=10, mode="hybrid")
        times = []
        for q in queries:
            t = time.perf_counter()
            qa.search(q, k=10, mode="hybrid")
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out["warm"] = {
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "n": len(times),
        }
        out["rss_warm_mb"] = _peak_rss_mb()
    out["papers"] = qa.count()
    out["rag_papers"] = str(Path(sys.modules["rag_papers"].__file__ or "").parent)
    qa.close()
    print(json.dumps(out), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm_mb(pid: int) -> float | None:
    """Peak RSS of another process (Linux), None where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def serve_copy(chroma_dir: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Copy ``chroma_dir`` under ``work`` and serve the copy with ``chroma run``."""
    copy = work / "served-chroma"
    shutil.copytree(chroma_dir, copy)
    port = _free_port()
    chroma = Path(sys.executable).parent / "chroma"
    log = (work / "chroma-run.log").open("wb")
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(copy), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"chroma run on {copy} did not come up; see {work / 'chroma-run.log'}")


def _run_child(
    args: argparse.Namespace, work: Path, queries_file: Path, i: int, warm: bool
) -> dict[str, Any]:
    # Server: a new machine, nothing cached locally. Embedded: the index dir itself.
    index_dir = work / f"client-{i}/index" if args.chroma_url else args.index_dir
    data_dir = work / f"client-{i}/data"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--index-dir",
        str(index_dir),
        "--data-dir",
        str(data_dir),
        "--collection",
        args.collection,
        "--queries-file",
        str(queries_file),
    ]
    if args.chroma_url:
        cmd += ["--chroma-url", args.chroma_url]
    if warm:
        cmd.append("--warm")
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"client {i} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    got["open_s"] = round(got.pop("wall_first") - start, 3)
    got["process_s"] = round(time.time() - start, 3)
    return got


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """All runs of one case; the median open time and the last run's warm figures."""
    work = Path(tempfile.mkdtemp(prefix="rag-bench-open-"))
    server: subprocess.Popen[bytes] | None = None
    server_rss: float | None = None
    try:
        if args.serve:
            server, args.chroma_url = serve_copy(args.index_dir / "chroma", work)
        queries_file = work / "queries.json"
        queries_file.write_text(json.dumps(test_queries(args.beir, args.queries)))
        runs = [
            _run_child(args, work, queries_file, i, warm=i == args.runs - 1)
            for i in range(args.runs)
        ]
        server_rss = _hwm_mb(server.pid) if server is not None else None
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    last = runs[-1]
    opens = [r["open_s"] for r in runs]
    return {
        "label": args.label
        or ("server (served copy)" if args.serve else "server" if args.chroma_url else "embedded"),
        "index_dir": str(args.index_dir),
        "chroma_url": None if args.serve else args.chroma_url,
        "served_copy": bool(args.serve),
        "papers": last["papers"],
        "rag_papers": last["rag_papers"],
        "open_s_median": round(statistics.median(opens), 3),
        "open_s_runs": opens,
        "import_s_median": round(statistics.median(r["import_s"] for r in runs), 3),
        "init_s_median": round(statistics.median(r["init_s"] for r in runs), 3),
        "first_search_s_median": round(statistics.median(r["first_search_s"] for r in runs), 3),
        "warm_hybrid": last["warm"],
        "rss_open_mb_median": round(statistics.median(r["rss_open_mb"] for r in runs), 1),
        "rss_peak_mb": last["rss_warm_mb"],
        "server_rss_peak_mb": server_rss,  # --serve only: the chroma run process
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "runs": runs,
    }


def table_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['label']} | {r['papers']} | {r['open_s_median']} | "
        f"{', '.join(str(x) for x in r['open_s_runs'])} | "
        f"{r['import_s_median']} / {r['init_s_median']} / {r['first_search_s_median']} | "
        f"{r['warm_hybrid']['p50_ms']} | {r['warm_hybrid']['p95_ms']} | "
        f"{r['rss_open_mb_median']} / {r['rss_peak_mb']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--chroma-url", default=None, help="an existing Chroma server")
    parser.add_argument(
        "--serve", action="store_true", help="serve a copy of INDEX_DIR/chroma for this run"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--beir", type=Path, default=BEIR, help="the SciFact BEIR folder")
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON result here")
    # The subprocess's own options.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.serve and args.chroma_url:
        parser.error("--serve serves a copy of --index-dir: give it or --chroma-url, not both")
    result = measure(args)
    print(json.dumps(result, indent=2))
    print(TABLE_HEADER)
    print(table_row(result))
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
