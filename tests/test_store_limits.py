"""Limits and first-run rules of the store (issue 12 items 6-7, issue 10 numba).

An over-long abstract is reported and skipped; out-of-range numbers are one clear error
naming the parameter; the sample corpus goes only into a default index that never held
papers; BM25 search does not import numba.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag_papers.core.settings import load_settings
from rag_papers.engine.qa import SAMPLE_PAPERS, PaperQA
from rag_papers.retrieval.retriever import Filters
from rag_papers.store.bounds import BoundsError
from rag_papers.store.index import PaperIndex


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"r{i}",
            "title": f"Record {i} on graph retrieval",
            "abstract": f"Graph retrieval method g{i}x finds papers by citations. Topic {i}.",
            "year": 2000 + i,
        }
        for i in range(n)
    ]


def test_over_long_abstract_is_reported_and_skipped(tmp_path: Path) -> None:
    """Issue 12: a 2 MB abstract was accepted and made every search that returned it slow."""
    rows = _rows(3)
    rows.insert(1, {"id": "huge", "title": "Huge", "abstract": "word " * 400_000})  # 2 MB
    corpus = _jsonl(tmp_path / "papers.jsonl", rows)
    settings = load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path)
    with PaperQA(settings) as qa:
        report = qa.ingest([corpus])
        assert (report.read, report.added) == (4, 3)
        [rejected] = report.rejected
        assert (rejected.source, rejected.line, rejected.field) == (str(corpus), 2, "abstract")
        text = str(rejected)
        assert f"{corpus}:2: field 'abstract'" in text
        assert "1,999,999 characters" in text and "max_abstract_chars=20,000" in text
        assert qa.paper("huge") is None and qa.count() == 3
    small = load_settings(index_dir=tmp_path / "idx2", data_dir=tmp_path, max_abstract_chars=100)
    index = PaperIndex(small)
    report = index.ingest_files([corpus])
    assert report.added == 3 and len(report.rejected) == 1  # the 74-character ones fit
    index.close()


def test_out_of_range_numbers_name_the_parameter(tmp_path: Path) -> None:
    """Issue 12: huge --year/--limit values gave tracebacks (OverflowError from SQLite, a
    500 from Chroma)."""
    corpus = _jsonl(tmp_path / "papers.jsonl", _rows(4))
    with PaperQA(load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path)) as qa:
        qa.ingest([corpus])
        cases = [
            ("limit", lambda: qa.list_papers(limit=10**30)),
            ("limit", lambda: qa.list_papers(limit=0)),
            ("offset", lambda: qa.list_papers(offset=2**63)),
            ("offset", lambda: qa.list_papers(offset=-1)),
            ("k", lambda: qa.search("graph", k=10**30)),
            ("k", lambda: qa.search("graph", k=-3)),
            ("year_min", lambda: qa.search("graph", filters=Filters(year_min=2**63))),
            ("year_max", lambda: qa.search("graph", filters=Filters(year_max=-1))),
            ("year_max", lambda: qa.ask("graph?", filters=Filters(year_max=10**20))),
        ]
        for name, call in cases:
            with pytest.raises(BoundsError, match=rf"^{name}: ") as err:
                call()
            assert isinstance(err.value, ValueError)
        # In range, including the edges, still works.
        assert qa.list_papers(limit=100_000, offset=3).papers[0].id == "r3"
        hits = qa.search("graph", k=1000, filters=Filters(year_min=0, year_max=2001))
        assert {h.paper.id for h in hits} == {"r0", "r1"}


def test_bm25_search_does_not_import_numba(tmp_path: Path) -> None:
    """Issue 10: with numba installed, `import bm25s` pulled it in on every ask and search."""
    pytest.importorskip("numba", reason="numba is not installed: nothing to keep out")
    script = """
import sys
from pathlib import Path
from rag_papers.store.lexical import BM25Sidecar
side = BM25Sidecar(Path(sys.argv[1]))
side.build([("a", "quokka island ecology"), ("b", "zebra stripes")], "g1")
again = BM25Sidecar(Path(sys.argv[1]))
assert again.search("quokka", 2)[0][0] == "a"
print(sorted(m for m in sys.modules if m == "numba" or m.startswith("numba.")))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.bm25")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- the sample corpus: only into a default index that never held papers ------------------


def test_sample_goes_into_a_new_default_index(tmp_path: Path) -> None:
    with PaperQA(load_settings(data_dir=tmp_path / "data")) as qa:
        assert qa.count() == SAMPLE_PAPERS


def test_sample_never_goes_into_an_own_empty_index(tmp_path: Path) -> None:
    """Issue 12: an empty index of the user's own got the 84 sample papers on first read."""
    own = load_settings(index_dir=tmp_path / "mine", data_dir=tmp_path / "data")
    with PaperQA(own) as qa:
        assert qa.count() == 0 and qa.search("retrieval augmented generation") == []
    other = load_settings(data_dir=tmp_path / "data", collection="mine")
    with PaperQA(other) as qa:
        assert qa.count() == 0


_KILLED_INGEST = """
import sys
from rag_papers.core.settings import load_settings
from rag_papers.engine.qa import PaperQA
settings = load_settings(data_dir=sys.argv[1], ingest_batch_papers=1000, auto_ingest_sample=False)
with PaperQA(settings) as qa:
    qa.ingest([sys.argv[2]], progress=lambda stage, done, total: print(stage, done, flush=True))
"""


def test_sample_never_goes_into_an_index_an_ingest_was_writing(tmp_path: Path) -> None:
    """Issue 12: an interrupted first ingest left an empty index, and the next read command
    filled it with the sample (300 papers expected, 384 after the re-run)."""
    corpus = _jsonl(tmp_path / "papers.jsonl", _rows(60))
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_INGEST, str(data), str(corpus)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("embed 0"):  # marked, now embedding its one batch: kill it
            os.kill(proc.pid, signal.SIGKILL)
            break
    assert proc.wait() == -signal.SIGKILL
    with PaperQA(load_settings(data_dir=data)) as qa:
        assert qa.count() == 0  # not the sample: the user's ingest was here
        assert qa.ingest([corpus]).added == 60
        assert qa.count() == 60
