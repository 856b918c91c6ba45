"""Damaged, foreign, read-only and full stores (issue 12 items 5, issue 10 foreign records).

Caches (the catalog, the BM25 sidecar) are rebuilt with a warning naming the file; the
Chroma store itself is not a cache, so its damage, a full disk and a read-only dir are
errors that say what, where and the fix. Records another tool wrote are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag_papers.core.papers import Paper
from rag_papers.core.settings import Settings, load_settings
from rag_papers.engine.qa import PaperQA
from rag_papers.store.errors import StoreDamagedError
from rag_papers.store.index import PaperIndex


def _papers(n: int) -> list[Paper]:
    return [
        Paper(
            id=f"p{i}",
            title=f"Paper {i} on sparse attention topic {i}",
            abstract=f"We study topic number {i}. Method m{i}x improves recall by {i + 2}% "
            f"on benchmark {i}. It relies on sparse attention and careful tuning.",
            year=2015 + i,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def _master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repair-master") / "idx"
    index = PaperIndex(load_settings(index_dir=root))
    index.ingest(_papers(10))
    index.close()
    return root


@pytest.fixture
def settings(_master: Path, tmp_path: Path) -> Settings:
    """A private copy of a 10-paper index (a new path: Chroma caches stores per path)."""
    shutil.copytree(_master, tmp_path / "idx")
    return load_settings(index_dir=tmp_path / "idx", data_dir=tmp_path / "data")


def _generation(settings: Settings) -> Path:
    """The folder of the generation in use (store/state.py)."""
    base = settings.resolved_index_dir / "sidecar" / "papers"
    return base / f"gen-{(base / 'current').read_text().strip()}"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_corrupt_catalog_is_rebuilt_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = _generation(settings) / "catalog.sqlite"
    catalog.write_bytes(b"this is not a database " * 300)
    with caplog.at_level(logging.WARNING, logger="rag_papers"), PaperQA(settings) as qa:
        assert qa.list_papers().total == 10  # papers list: the fast path falls back
        assert qa.search("sparse attention topic 4", k=3, mode="dense")
        assert qa.stats()["papers"] == 10
    [warning] = [w for w in _warnings(caplog) if "catalog" in w]
    assert str(catalog) in warning and "rebuilding" in warning


def test_catalog_damaged_inside_is_found_on_open(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = _generation(settings) / "catalog.sqlite"
    data = bytearray(catalog.read_bytes())
    data[4096 + 100 : 4096 + 900] = os.urandom(800)  # a page after the header
    catalog.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="rag_papers"):
        index = PaperIndex(settings)
        assert index.stats()["papers"] == 10
        assert index.paper("p3") is not None
        index.close()
    assert any(str(catalog) in w for w in _warnings(caplog))


@pytest.mark.parametrize(
    "victim", ["ids.json", "model/data.csc.index.npy", "model/params.index.json"]
)
def test_corrupt_bm25_sidecar_is_rebuilt_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture, victim: str
) -> None:
    sidecar = _generation(settings) / "bm25"
    (sidecar / victim).write_bytes(b"\x93NUMPY garbage " + os.urandom(200))
    with caplog.at_level(logging.WARNING, logger="rag_papers"), PaperQA(settings) as qa:
        hits = qa.search("m4x", k=2, mode="bm25")
        assert [h.paper.id for h in hits][:1] == ["p4"]
        assert qa.search("sparse attention", k=2, mode="dense")
        assert qa.stats()["bm25_documents"] == 10
    [warning] = [w for w in _warnings(caplog) if "BM25" in w]
    assert str(sidecar) in warning and "rebuilding" in warning


def test_corrupt_chroma_store_names_the_dir_and_the_fix(settings: Settings) -> None:
    store = settings.resolved_index_dir / "chroma"
    (store / "chroma.sqlite3").write_bytes(b"garbage " * 1000)
    with PaperQA(settings) as qa, pytest.raises(StoreDamagedError) as err:
        qa.search("sparse attention")
    message = str(err.value)
    assert str(store) in message and "backup" in message and "ingest" in message


def test_records_written_by_other_tools_are_skipped(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: one node from llama-index's ChromaVectorStore broke `rag-papers search`."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from llama_index.core.schema import TextNode
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from rag_papers.store.embeddings import MiniLMEmbedder

    question = "sparse attention topic 4"
    vector = MiniLMEmbedder().embed_query(question).tolist()
    client = chromadb.PersistentClient(
        path=str(settings.resolved_index_dir / "chroma"),
        settings=ChromaSettings(anonymized_telemetry=False),
    )
    collection = client.get_collection("papers", embedding_function=None)
    ChromaVectorStore(chroma_collection=collection).add(
        [TextNode(text="A node of someone else's.", embedding=vector, id_="foreign-1")]
    )
    # A bare record, and one that looks like a first chunk but has no paper_id.
    collection.add(ids=["bare"], embeddings=[vector])
    collection.add(ids=["odd"], embeddings=[vector], metadatas=[{"chunk_index": 0}])
    shutil.rmtree(settings.resolved_index_dir / "sidecar")  # forces a catalog rebuild too

    with caplog.at_level(logging.WARNING, logger="rag_papers"), PaperQA(settings) as qa:
        hits = qa.search(question, k=3, mode="dense")
        assert hits and hits[0].paper.id == "p4"
        assert qa.search(question, k=3)[0].paper.id == "p4"
        stats = qa.stats()
        assert (stats["papers"], stats["chunks"], stats["foreign_records"]) == (10, 10, 3)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "did not write" in warnings[0]


# --- read-only dirs and full disks: real mounts, in a private mount namespace --------------


def _namespace_or_skip() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a read-only or tiny folder")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")


_READ_ONLY_SCRIPT = """
import json, sys
from rag_papers import PaperQA, load_settings
from rag_papers.store.errors import ReadOnlyIndexError
settings = load_settings(index_dir=sys.argv[1], data_dir=sys.argv[2])
out = {}
with PaperQA(settings) as qa:
    out["list"] = qa.list_papers().total
with PaperQA(settings) as qa:
    out["search"] = [r.paper.id for r in qa.search("m3x sparse attention", k=2)]
    out["stats"] = qa.stats()["papers"]
    out["ask"] = qa.ask("What does method m3x improve?").text
    for name, rebuild in (("ingest", False), ("rebuild", True)):
        try:
            qa.ingest([sys.argv[3]], rebuild=rebuild)
            out[name] = "written"
        except ReadOnlyIndexError as exc:
            out[name] = str(exc)
print(json.dumps(out))
"""


def test_read_only_index_dir_reads_and_refuses_writes(settings: Settings, tmp_path: Path) -> None:
    """Issue 12: every command died with `sqlite3.OperationalError: unable to open database
    file`. As root, chmod does not stop writes, so the dir is bind-mounted read-only (a
    real read-only mount: even root gets EROFS); as another user, chmod -R a-w does it."""
    index_dir = settings.resolved_index_dir
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"title": "More", "abstract": "More text here."}) + "\n")
    args = [str(index_dir), str(tmp_path / "data"), str(extra)]
    before = sorted(str(p.relative_to(index_dir)) for p in index_dir.rglob("*"))
    if os.geteuid() == 0:
        _namespace_or_skip()
        mount = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", mount, "sh", str(index_dir)]
        proc = subprocess.run(
            [*command, sys.executable, "-c", _READ_ONLY_SCRIPT, *args],
            capture_output=True,
            text=True,
        )
    else:
        subprocess.run(["chmod", "-R", "a-w", str(index_dir)], check=True)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _READ_ONLY_SCRIPT, *args], capture_output=True, text=True
            )
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(index_dir)], check=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["list"] == 10 and out["stats"] == 10
    assert out["search"][0] == "p3" and out["ask"]
    for name in ("ingest", "rebuild"):
        assert str(index_dir) in out[name] and "read-only" in out[name], out[name]
    assert sorted(str(p.relative_to(index_dir)) for p in index_dir.rglob("*")) == before


_PAPERS = """
from rag_papers.core.papers import Paper
papers = [
    Paper(id=f"p{i}", title=f"Paper {i}", abstract=f"Sentence {i} about retrieval. " * 12)
    for i in range(80)
]
"""

_FULL_SCRIPT = (
    _PAPERS
    + """
import sys
from rag_papers.core.settings import load_settings
from rag_papers.store.errors import DiskFullError
from rag_papers.store.index import PaperIndex
index = PaperIndex(load_settings(index_dir=sys.argv[1], ingest_batch_papers=10))
try:
    index.ingest(papers)
    print("FULL: no error")
except DiskFullError as exc:
    print("FULL:", exc)
"""
)

_RESUME_SCRIPT = (
    _PAPERS
    + """
import sys
from rag_papers.core.settings import load_settings
from rag_papers.store.index import PaperIndex
index = PaperIndex(load_settings(index_dir=sys.argv[1]))
index.ingest(papers)
ids = index.collection.get(include=[])["ids"]
print("RESUMED:", index.catalog.count(), len(index.bm25), index.catalog.count_chunks(), len(ids))
print("UNIQUE:", len(set(ids)) == len(ids))
"""
)


def test_disk_full_mid_ingest_says_what_and_where_then_resumes(tmp_path: Path) -> None:
    """Issue 12: disk full mid-ingest gave an unexplained Chroma traceback. A 1 MB tmpfs
    fills up after a few batches; once it grows, the same ingest resumes to the clean result."""
    _namespace_or_skip()
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        'mount -t tmpfs -o size=1m tmpfs "$1" && "$2" -c "$3" "$1/idx" && '
        'mount -o remount,size=200m "$1" && "$2" -c "$4" "$1/idx"'
    )
    command = ["unshare", "--mount", "sh", "-c", script, "sh", str(disk), sys.executable]
    proc = subprocess.run([*command, _FULL_SCRIPT, _RESUME_SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    full = next(line for line in lines if line.startswith("FULL:"))
    assert "disk full" in full and str(disk / "idx") in full and "run the same ingest" in full
    resumed = next(line for line in lines if line.startswith("RESUMED:"))
    papers, bm25, chunks, stored = (int(x) for x in resumed.split()[1:])
    assert (papers, bm25) == (80, 80) and chunks == stored == 80
    assert "UNIQUE: True" in lines
