"""``--rebuild`` builds beside the old index and switches atomically (issue 12, item 2).

The old index survives broken settings, a kill at any point of the build, and keeps
answering meanwhile; a finished rebuild leaves exactly the new papers and no leftovers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag_papers.core.papers import Paper
from rag_papers.core.settings import load_settings
from rag_papers.engine.qa import PaperQA
from rag_papers.store.errors import RebuildError
from rag_papers.store.index import PaperIndex


def _papers(n: int, prefix: str) -> list[Paper]:
    return [
        Paper(
            id=f"{prefix}{i}",
            title=f"{prefix.capitalize()} paper {i} on topic {i}",
            abstract=f"We study {prefix} topic number {i}. The {prefix} method {i} improves "
            f"recall by {i + 2}% on benchmark {i}. It uses sparse attention. Code {prefix}x{i}.",
            year=2010 + i % 10,
        )
        for i in range(n)
    ]


def _write_jsonl(path: Path, papers: list[Paper]) -> Path:
    rows = [{"id": p.id, "title": p.title, "abstract": p.abstract, "year": p.year} for p in papers]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _collections(index_dir: Path) -> set[str]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(index_dir / "chroma"), settings=ChromaSettings(anonymized_telemetry=False)
    )
    return {c.name for c in client.list_collections()}


def _old_index(index_dir: Path) -> None:
    index = PaperIndex(load_settings(index_dir=index_dir))
    assert index.ingest(_papers(10, "old")).added == 10
    index.close()


def test_rebuild_with_broken_settings_leaves_the_old_index(tmp_path: Path) -> None:
    index_dir = tmp_path / "idx"
    _old_index(index_dir)
    corpus = _write_jsonl(tmp_path / "new.jsonl", _papers(5, "new"))
    # The probe's case: the OpenAI embedder with no key. It used to drop 10 papers to 0 and
    # stamp the empty index with the OpenAI manifest.
    broken = load_settings(index_dir=index_dir, data_dir=tmp_path, embed_backend="openai")
    with PaperQA(broken) as qa, pytest.raises(RebuildError) as err:
        qa.ingest([corpus], rebuild=True)
    message = str(err.value)
    assert "unchanged" in message and str(index_dir / "chroma") in message
    assert "starting the embedder" in message

    with PaperQA(load_settings(index_dir=index_dir, data_dir=tmp_path)) as qa:
        assert qa.count() == 10
        stats = qa.stats()  # the default settings still accept the index: no new manifest
        assert stats["papers"] == 10 and stats["embed_model"] == "all-MiniLM-L6-v2-onnx-int8"
        hits = qa.search("old topic number 3 sparse attention", k=3)
        assert hits and all(h.paper.id.startswith("old") for h in hits)
    assert _collections(index_dir) == {"papers"}  # nothing was left behind


_REBUILD_SCRIPT = """
import sys
from rag_papers.core.settings import load_settings
from rag_papers.engine.qa import PaperQA
settings = load_settings(index_dir=sys.argv[1], data_dir=sys.argv[3], ingest_batch_papers=4)
def progress(stage, done, total):
    print(stage, done, total, flush=True)
with PaperQA(settings) as qa:
    report = qa.ingest([sys.argv[2]], rebuild=True, progress=progress)
print("finished", report.added, flush=True)
"""


def _rebuild(index_dir: Path, corpus: Path, *, kill_after: int | None) -> str:
    """Run a rebuild in a subprocess; SIGKILL it after ``kill_after`` written batches."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _REBUILD_SCRIPT, str(index_dir), str(corpus), str(corpus.parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        batches = sum(1 for seen in lines if seen.startswith("embed ") and " 0 " not in seen)
        if kill_after is not None and batches >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    if kill_after is not None:
        assert proc.returncode == -signal.SIGKILL, "".join(lines)
    else:
        assert proc.returncode == 0, "".join(lines)
    return "".join(lines)


def test_rebuild_killed_midway_keeps_the_old_index_then_completes(tmp_path: Path) -> None:
    index_dir = tmp_path / "idx"
    _old_index(index_dir)
    new = _papers(24, "new")
    corpus = _write_jsonl(tmp_path / "new.jsonl", new)

    _rebuild(index_dir, corpus, kill_after=2)  # 8 of 24 new papers written, then killed
    settings = load_settings(index_dir=index_dir, data_dir=tmp_path)
    with PaperQA(settings) as qa:
        assert qa.list_papers().total == 10  # the catalog alone (no Chroma)
        assert qa.stats()["papers"] == 10
        hits = qa.search("method improves recall sparse attention", k=5)
        assert hits and all(h.paper.id.startswith("old") for h in hits)
    assert len(_collections(index_dir)) == 2  # the unfinished build, until the next rebuild

    out = _rebuild(index_dir, corpus, kill_after=None)
    assert "finished 24" in out
    index = PaperIndex(settings)
    try:
        ids = sorted(index.collection.get(include=[])["ids"])
        assert len(ids) == len(set(ids)) == index.catalog.count_chunks()
        assert {i.split("#")[0] for i in ids} == {p.id for p in new}
        assert index.catalog.count() == 24 and len(index.bm25) == 24
        assert index.bm25.search("newx7", 1)[0][0] == "new7"
        assert index.ingest(new).unchanged == 24
    finally:
        index.close()
    # The old collection's papers and the dead build are gone: the logical collection
    # (now only a pointer) and the new one remain.
    names = _collections(index_dir)
    assert len(names) == 2 and "papers" in names
    leftovers = sorted(p.name for p in (index_dir / "sidecar").iterdir())
    assert leftovers == sorted(
        [n for n in names if n != "papers"]  # its catalog and BM25 generations
        + ["papers.current", "papers.lock", "papers.lock.holder"]  # pointer, writer lock
    )


def test_rebuild_on_a_chroma_server_switches_every_client(tmp_path: Path) -> None:
    from servers import chroma_server

    with chroma_server(tmp_path / "server-data") as url:
        first = load_settings(index_dir=tmp_path / "a", data_dir=tmp_path, chroma_url=url)
        with PaperQA(first) as qa:
            qa.ingest([_write_jsonl(tmp_path / "old.jsonl", _papers(6, "old"))])
        # Another machine (its own local dir) reads the same collection.
        other = PaperIndex(load_settings(index_dir=tmp_path / "b", chroma_url=url))
        assert other.stats()["papers"] == 6
        other.close()
        with PaperQA(first) as qa:
            report = qa.ingest(
                [_write_jsonl(tmp_path / "new.jsonl", _papers(3, "new"))], rebuild=True
            )
            assert report.added == 3 and qa.count() == 3
        again = PaperIndex(load_settings(index_dir=tmp_path / "b", chroma_url=url))
        try:
            assert again.stats()["papers"] == 3  # followed the switch, rebuilt its caches
            assert again.bm25.search("newx2", 1)[0][0] == "new2"
        finally:
            again.close()
