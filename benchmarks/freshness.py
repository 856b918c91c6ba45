"""What staying fresh costs a reader, and how soon it sees another process's ingest.

For an embedded index and a `chroma run` server (started here on a copy-free temp dir):
- the per-query check: PaperIndex.state when no look is due (a clock read), in microseconds;
- a due look that finds nothing new (refresh(force=True)): one metadata read, in ms;
- the delay from another process's ingest returning to a running reader finding the new
  paper by BM25 and by dense search, polled every 50 ms, with refresh_seconds as set.

Usage: python benchmarks/freshness.py [--refresh-seconds 2] [--rounds 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag_papers import PaperQA, load_settings

__all__ = ["main"]

_WRITER = r"""
import sys
from rag_papers.core.papers import Paper
from rag_papers.core.settings import load_settings
from rag_papers.store.index import PaperIndex
index_dir, url, tag = sys.argv[1], sys.argv[2], sys.argv[3]
paper = Paper(id=f"fresh-{tag}", title=f"Freshness probe {tag}",
              abstract=f"The probe word zq{tag}x marks this abstract for the benchmark.")
PaperIndex(load_settings(index_dir=index_dir, chroma_url=url or None)).ingest([paper])
"""


def _ingest(index_dir: Path, url: str, tag: str) -> None:
    cmd = [sys.executable, "-c", _WRITER, str(index_dir), url, tag]
    subprocess.run(cmd, check=True, capture_output=True)


def _measure(index_dir: Path, url: str, refresh: float, rounds: int) -> dict[str, Any]:
    _ingest(index_dir if not url else index_dir.with_name("writer"), url, "seed")
    settings = load_settings(index_dir=index_dir, chroma_url=url or None, refresh_seconds=refresh)
    writer_dir = index_dir if not url else index_dir.with_name("writer")
    with PaperQA(settings) as qa:
        qa.search("seed", k=1)
        index = qa.pipeline("extractive").index
        t = time.perf_counter()
        for _ in range(100_000):
            index.state  # noqa: B018 - the per-query check
        per_query_us = (time.perf_counter() - t) / 100_000 * 1e6
        looks = []
        for _ in range(50):
            t = time.perf_counter()
            index.refresh(force=True)
            looks.append((time.perf_counter() - t) * 1000)
        delays = []
        for r in range(rounds):
            _ingest(writer_dir, url, str(r))
            t = time.perf_counter()
            while not qa.search(f"zq{r}x", k=1, mode="bm25"):
                time.sleep(0.05)
            dense = qa.search(f"Freshness probe {r}", k=rounds + 1, mode="dense")
            assert f"fresh-{r}" in {h.paper.id for h in dense}  # the probes look alike
            delays.append(time.perf_counter() - t)
    return {
        "per_query_check_us": round(per_query_us, 3),
        "due_look_ms_p50": round(statistics.median(looks), 2),
        "visible_after_s": [round(d, 2) for d in delays],
        "visible_after_s_max": round(max(delays), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import chroma_server  # the test helper: `chroma run` on a free port

    results: dict[str, Any] = {"refresh_seconds": args.refresh_seconds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["embedded"] = _measure(root / "embedded", "", args.refresh_seconds, args.rounds)
        with chroma_server(root / "server-data") as url:
            results["server"] = _measure(root / "reader", url, args.refresh_seconds, args.rounds)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
