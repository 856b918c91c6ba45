"""The index: idempotent upserts, replacement, manifest checks, BM25 in step, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_papers.core.papers import Paper
from rag_papers.core.settings import load_settings
from rag_papers.store.index import IndexMismatchError, PaperIndex
from rag_papers.store.rebuild import rebuild_index


def _papers(n: int, *, prefix: str = "p", long_every: int = 0) -> list[Paper]:
    out = []
    for i in range(n):
        abstract = (
            f"We study topic number {i} in depth. The method {prefix}{i} improves accuracy by "
            f"{i + 3}% on benchmark {i}. It relies on sparse attention and careful tuning."
        )
        if long_every and i % long_every == 0:
            abstract += " " + " ".join(
                f"Sentence {j} adds detail about component {j} of system {i}." for j in range(40)
            )
        out.append(
            Paper(
                id=f"{prefix}{i}",
                title=f"Paper {prefix} {i} on topic {i}",
                abstract=abstract,
                year=2000 + i % 25,
                authors=[f"Author {i}"],
            )
        )
    return out


def _chunk_ids(index: PaperIndex) -> list[str]:
    return sorted(index.collection.get(include=[])["ids"])


def test_ingest_is_idempotent_and_replaces_changed(tmp_path: Path) -> None:
    settings = load_settings(index_dir=tmp_path / "idx")
    index = PaperIndex(settings)
    papers = _papers(12, long_every=5)
    first = index.ingest(papers)
    assert (first.added, first.updated, first.unchanged) == (12, 0, 0)
    ids_before = _chunk_ids(index)
    assert len(ids_before) == first.chunks_written > 12  # long abstracts were split

    again = index.ingest(papers)
    assert (again.added, again.updated, again.unchanged, again.chunks_written) == (0, 0, 12, 0)
    assert _chunk_ids(index) == ids_before

    # p0 was long (several chunks); make it short: its stale tail chunks must go.
    changed = [Paper(id="p0", title=papers[0].title, abstract="A short new abstract on X.")]
    rep = index.ingest(changed)
    assert (rep.added, rep.updated) == (0, 1)
    assert [c for c in _chunk_ids(index) if c.startswith("p0#")] == ["p0#0"]
    assert index.paper("p0").abstract == "A short new abstract on X."
    assert index.catalog.count() == 12
    assert index.stats()["chunks"] == len(_chunk_ids(index))


def test_bm25_sidecar_follows_upsert_replace_and_rebuild(tmp_path: Path) -> None:
    settings = load_settings(index_dir=tmp_path / "idx")
    index = PaperIndex(settings)
    index.ingest(_papers(5))
    assert len(index.bm25) == 5
    assert index.bm25.search("zanzibar", 5) == []
    index.ingest([Paper(id="p3", title="Zanzibar spice trade", abstract="Zanzibar clove exports.")])
    hits = index.bm25.search("zanzibar clove", 5)
    assert [pid for pid, _ in hits] == ["p3"]
    assert len(index.bm25) == 5
    index.ingest([Paper(id="new", title="Quokka ecology", abstract="Quokkas on Rottnest.")])
    assert index.bm25.search("quokka", 3)[0][0] == "new"
    index.close()

    # A reopened index loads the same sidecar; a rebuild starts clean.
    reopened = PaperIndex(settings)
    assert reopened.bm25.search("quokka", 3)[0][0] == "new"
    reopened.close()
    rebuilt, _ = rebuild_index(settings, [])
    assert rebuilt.is_empty()
    assert len(rebuilt.bm25) == 0
    assert rebuilt.bm25.search("quokka", 3) == []
    assert rebuilt.stats()["chunks"] == 0


def test_bm25_rebuilt_when_sidecar_lost(tmp_path: Path) -> None:
    settings = load_settings(index_dir=tmp_path / "idx")
    index = PaperIndex(settings)
    index.ingest(_papers(4))
    index.close()
    import shutil

    shutil.rmtree(tmp_path / "idx" / "sidecar")
    reopened = PaperIndex(settings)
    assert reopened.stats()["papers"] == 4  # catalog rebuilt from Chroma
    assert len(reopened.bm25) == 4
    assert reopened.paper("p2").abstract.startswith("We study topic number 2")


def test_manifest_mismatch_is_refused(tmp_path: Path) -> None:
    index = PaperIndex(load_settings(index_dir=tmp_path / "idx"))
    index.ingest(_papers(2))
    index.close()
    other = PaperIndex(load_settings(index_dir=tmp_path / "idx", chunk_tokens=120))
    with pytest.raises(IndexMismatchError) as err:
        other.collection  # noqa: B018
    message = str(err.value)
    assert "sentences/cl100k_base/220/40" in message and "sentences/cl100k_base/120/40" in message
    assert "--rebuild" in message
    fresh, _ = rebuild_index(
        load_settings(index_dir=tmp_path / "idx", chunk_tokens=120), _papers(2)
    )
    assert fresh.stats()["chunker"] == "sentences/cl100k_base/120/40"


_KILL_SCRIPT = """
import sys, time
from rag_papers.store.index import PaperIndex
from rag_papers.ingest.loaders import load_papers
from rag_papers.core.settings import load_settings
idx = PaperIndex(load_settings(index_dir=sys.argv[1], ingest_batch_papers=6))
papers = load_papers(sys.argv[2]).papers
def progress(stage, done, total):
    print(stage, done, total, flush=True)
idx.ingest(papers, progress=progress)
print("finished", flush=True)
"""


def _run_and_kill(
    index_dir: Path, corpus: Path, *, after_lines: int | None, after_seconds: float | None
) -> bool:
    """Start an ingest, SIGKILL it at the given point. True if it was killed mid-way."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(index_dir), str(corpus)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if after_seconds is not None:
        time.sleep(after_seconds)
    else:
        seen = 0
        for line in proc.stdout:
            if line.startswith("embed") and not line.startswith("embed 0 "):
                seen += 1
            if seen >= (after_lines or 1) or line.startswith("finished"):
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def test_sigkill_at_any_point_then_rerun_keeps_one_copy(tmp_path: Path) -> None:
    corpus = tmp_path / "papers.jsonl"
    papers = _papers(80, long_every=7)
    corpus.write_text(
        "\n".join(
            json.dumps({"id": p.id, "title": p.title, "abstract": p.abstract, "year": p.year})
            for p in papers
        )
        + "\n"
    )
    index_dir = tmp_path / "idx"
    # Kill during start-up, then after 1, 2 and 2 more committed batches (each run resumes
    # where the last stopped), then at a timed point that may fall anywhere, even after the end.
    killed = [
        _run_and_kill(index_dir, corpus, after_lines=None, after_seconds=0.5),
        _run_and_kill(index_dir, corpus, after_lines=1, after_seconds=None),
        _run_and_kill(index_dir, corpus, after_lines=2, after_seconds=None),
        _run_and_kill(index_dir, corpus, after_lines=2, after_seconds=None),
        _run_and_kill(index_dir, corpus, after_lines=None, after_seconds=3.5),
    ]
    assert all(killed[:4])
    done = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(index_dir), str(corpus)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "finished" in done.stdout

    from rag_papers.ingest.loaders import load_papers

    papers = load_papers(corpus).papers  # the ids the loader gives them
    index = PaperIndex(load_settings(index_dir=index_dir))
    assert index.catalog.count() == 80
    ids = _chunk_ids(index)
    assert len(ids) == len(set(ids))
    expected = sum(n for _, n in index.catalog.hashes(p.id for p in papers).values())
    assert len(ids) == expected
    for p in papers:
        n = index.catalog.hashes([p.id])[p.id][1]
        assert [i for i in ids if i.split("#")[0] == p.id] == sorted(
            f"{p.id}#{k}" for k in range(n)
        )
    assert len(index.bm25) == 80
    again = index.ingest(papers)
    assert again.unchanged == 80 and again.chunks_written == 0


def test_chroma_server_mode(tmp_path: Path) -> None:
    from servers import chroma_server

    with chroma_server(tmp_path / "server-data") as url:
        settings = load_settings(index_dir=tmp_path / "local", chroma_url=url)
        index = PaperIndex(settings)
        rep = index.ingest(_papers(6))
        assert rep.added == 6
        stats = index.stats()
        assert stats["store"] == url and stats["papers"] == 6
        assert not (tmp_path / "local" / "chroma").exists()  # vectors live on the server
        index.close()
        # A second machine (another local dir) sees the same papers: catalog rebuilt from Chroma.
        other = PaperIndex(load_settings(index_dir=tmp_path / "other", chroma_url=url))
        assert other.stats()["papers"] == 6
        assert other.bm25.search("topic 4 sparse", 3)
        again = other.ingest(_papers(6))
        assert again.unchanged == 6
