"""Issue 13: shared state on a Chroma server, concurrent writers, readers that stay fresh.

Every test runs real processes against a real `chroma run` server (or one embedded store):
writers are separate Python processes, as on separate machines, each with its own local dir.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import chroma_server

from rag_papers import PaperQA, Settings, load_settings
from rag_papers.store.index import PaperIndex
from rag_papers.store.writelock import writer_lock

_WRITER = r"""
import sys
from rag_papers.core.papers import Paper
from rag_papers.core.settings import load_settings
from rag_papers.store.index import PaperIndex

index_dir, url, prefix, count, hold = sys.argv[1:6]
n = int(count)
if hold == "after-upload":  # freeze between the upload and the switch, to be killed there
    import time
    import rag_papers.store.publish as publish
    real = publish.upload
    def upload(*args, **kwargs):
        real(*args, **kwargs)
        print("uploaded", flush=True)
        time.sleep(600)
    publish.upload = upload
papers = [
    Paper(id=f"{prefix}{i}", title=f"Paper {prefix} {i} on topic {i}",
          abstract=f"We study {prefix}word{i} in depth. It improves recall on benchmark {i}.")
    for i in range(n)
]
settings = load_settings(index_dir=index_dir, chroma_url=url or None, ingest_batch_papers=3)
if hold == "rebuild":
    from rag_papers.store.rebuild import rebuild_index
    index, report = rebuild_index(settings, papers)
else:
    index = PaperIndex(settings)
    def progress(stage, done, total):
        print(stage, done, total, flush=True)
    report = index.ingest(papers, progress=progress)
print("finished", report.added, report.unchanged, flush=True)
"""


def _writer(
    local: Path, url: str, prefix: str, n: int, *, hold: str = "", **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(local), url, prefix, str(n), hold],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return out, err


def _read_until(proc: subprocess.Popen[str], marker: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(marker):
            return
    raise AssertionError(f"the writer ended before {marker!r}: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]


def _check_whole(index: PaperIndex, expected: set[str]) -> None:
    """Every paper exactly once, dense and BM25 in step with the catalog."""
    ids = index.collection.get(include=[])["ids"]
    assert len(ids) == len(set(ids)) == index.catalog.count_chunks()
    assert {i.split("#")[0] for i in ids} == expected
    assert {p.id for p in index.catalog.iter_all()} == expected
    assert len(index.bm25) == len(expected)
    for pid in sorted(expected)[:: max(1, len(expected) // 4)]:
        prefix, number = pid.rstrip("0123456789"), pid[len(pid.rstrip("0123456789")) :]
        assert index.bm25.search(f"{prefix}word{number}", 1)[0][0] == pid


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with chroma_server(tmp_path / "server-data") as url:
        yield url


def test_a_new_client_downloads_the_state_instead_of_rebuilding_it(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _finish(_writer(tmp_path / "machine-a", server, "a", 9))

    def no_rebuild(*_: object) -> None:
        raise AssertionError("a new client rebuilt the state from every record")

    monkeypatch.setattr("rag_papers.store.shared.rows_from_collection", no_rebuild)
    settings = load_settings(index_dir=tmp_path / "machine-b", chroma_url=server)
    with PaperQA(settings) as qa:
        hits = qa.search("aword4", k=3, mode="bm25")
        assert [h.paper.id for h in hits][:1] == ["a4"]
        assert qa.search("Paper a 7 on topic 7", k=3, mode="dense")[0].paper.id == "a7"
        assert qa.stats()["papers"] == 9
        # The download is slim (no abstracts): a listed or shown paper is fetched whole.
        page = qa.list_papers(limit=20)
        assert page.total == 9 and {p.id for p in page.papers} == {f"a{i}" for i in range(9)}
        assert all(p.abstract.startswith("We study aword") for p in page.papers)


def test_two_writer_processes_into_one_server_collection(tmp_path: Path, server: str) -> None:
    # Two machines, each with its own local dir, ingest at the same time; 3 papers overlap.
    first = _writer(tmp_path / "machine-a", server, "a", 12)
    second = _writer(tmp_path / "machine-b", server, "b", 12)
    shared = _writer(tmp_path / "machine-c", server, "a", 3)
    for proc in (first, second, shared):
        _finish(proc)
    index = PaperIndex(load_settings(index_dir=tmp_path / "reader", chroma_url=server))
    _check_whole(index, {f"a{i}" for i in range(12)} | {f"b{i}" for i in range(12)})
    with PaperQA(index.settings) as qa:  # both writers' vectors are in the dense index
        found = {h.paper.id for h in qa.search("Paper b 5 on topic 5", k=4, mode="dense")}
        assert {"a5", "b5"} <= found


def test_two_writer_processes_into_one_embedded_index(tmp_path: Path) -> None:
    # One index dir, two processes at once: the file lock serialises them, and the second
    # reopens its Chroma client (an embedded client never sees another process's vectors).
    procs = [_writer(tmp_path / "idx", "", prefix, 10) for prefix in ("a", "b")]
    for proc in procs:
        _finish(proc)
    index = PaperIndex(load_settings(index_dir=tmp_path / "idx"))
    _check_whole(index, {f"{p}{i}" for p in "ab" for i in range(10)})
    with PaperQA(index.settings) as qa:  # both writers' vectors are in the dense index
        found = {h.paper.id for h in qa.search("Paper a 3 on topic 3", k=4, mode="dense")}
        assert {"a3", "b3"} <= found


def test_a_second_writer_waits_and_says_for_whom(tmp_path: Path, server: str) -> None:
    settings = load_settings(index_dir=tmp_path / "holder", chroma_url=server)
    holder = PaperIndex(settings)
    with writer_lock(settings, holder.client, "papers", holder.files_root):
        impatient = _writer(
            tmp_path / "machine-b", server, "b", 3, RAG_PAPERS_WRITER_WAIT_SECONDS="1"
        )
        _, err = impatient.communicate(timeout=120)
        assert impatient.returncode != 0
        assert "WriterBusyError" in err and f"pid {os.getpid()}" in err
        patient = _writer(tmp_path / "machine-c", server, "c", 3)
        assert patient.stderr is not None
        while "waiting" not in (line := patient.stderr.readline()):
            assert line, "the writer ended without waiting"
        assert f"pid {os.getpid()}" in line
    out, _ = _finish(patient)
    assert "finished 3 0" in out
    _check_whole(
        PaperIndex(load_settings(index_dir=tmp_path / "r", chroma_url=server)), {"c0", "c1", "c2"}
    )


def test_writer_killed_mid_publish_leaves_the_last_state_then_recovers(
    tmp_path: Path, server: str
) -> None:
    base = {f"a{i}" for i in range(6)}
    _finish(_writer(tmp_path / "machine-a", server, "a", 6))
    reader = PaperQA(load_settings(index_dir=tmp_path / "reader", chroma_url=server))
    assert reader.stats()["papers"] == 6

    env = {"RAG_PAPERS_WRITER_LEASE_SECONDS": "5"}
    doomed = _writer(tmp_path / "machine-b", server, "b", 8, hold="after-upload", **env)
    _read_until(doomed, "uploaded")  # chunks stored, the new state uploaded, not switched
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert doomed.returncode == -signal.SIGKILL

    # The running reader and a brand-new client both answer from the last complete state.
    for qa in (reader, PaperQA(load_settings(index_dir=tmp_path / "new", chroma_url=server))):
        assert qa.stats()["papers"] == 6
        assert [h.paper.id for h in qa.search("aword3", k=2, mode="bm25")][:1] == ["a3"]
        assert qa.search("bword2", k=3, mode="bm25") == []
        dense = qa.search("Paper b 2 on topic 2", k=14, mode="dense")
        assert {h.paper.id for h in dense} <= base  # stored, never published: unseen
        assert qa.search("Paper a 2 on topic 2", k=1, mode="dense")[0].paper.id == "a2"
    reader.close()

    # The next writer takes the silent writer's lock over, rebuilds from the collection,
    # and ends with every paper exactly once.
    _, err = _finish(_writer(tmp_path / "machine-c", server, "b", 8, **env))
    assert "took over" in err
    index = PaperIndex(load_settings(index_dir=tmp_path / "after", chroma_url=server))
    _check_whole(index, base | {f"b{i}" for i in range(8)})


def _reader_setup(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> tuple[str, Path, Settings]:
    """A first writer's 4 papers, and a reader's settings that look every 0.2 s: a server
    reader has its own local dir, an embedded one shares the writer's index dir."""
    url = request.getfixturevalue("server") if where == "server" else ""
    local = tmp_path / ("reader" if url else "shared-index")
    writer_dir = tmp_path / "writer" if url else local
    _finish(_writer(writer_dir, url, "a", 4))
    return (
        url,
        writer_dir,
        load_settings(index_dir=local, chroma_url=url or None, refresh_seconds=0.2),
    )


def _wait_until_found(qa: PaperQA, word: str) -> None:
    deadline = time.monotonic() + 60  # generous: no timing is asserted, only that it comes
    while not qa.search(word, k=1, mode="bm25"):
        assert time.monotonic() < deadline, f"the running reader never found {word!r}"
        time.sleep(0.1)


@pytest.mark.parametrize("where", ["server", "embedded"])
def test_a_running_reader_sees_another_process_ingest(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url, writer_dir, settings = _reader_setup(tmp_path, where, request)
    with PaperQA(settings) as qa:
        assert qa.search("bword1", k=1, mode="bm25") == []
        _finish(_writer(writer_dir, url, "b", 3))
        _wait_until_found(qa, "bword1")
        assert qa.search("bword1", k=1, mode="bm25")[0].paper.id == "b1"
        assert qa.search("Paper b 2 on topic 2", k=1, mode="dense")[0].paper.id == "b2"
        assert qa.stats()["papers"] == 7


def test_an_embedded_writer_waits_for_another(tmp_path: Path) -> None:
    settings = load_settings(index_dir=tmp_path / "idx")
    holder = PaperIndex(settings)
    with writer_lock(settings, None, "papers", holder.files_root):
        proc = _writer(tmp_path / "idx", "", "e", 2, RAG_PAPERS_WRITER_WAIT_SECONDS="1")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "WriterBusyError" in err and "waiting" in err
    out, _ = _finish(_writer(tmp_path / "idx", "", "e", 2))
    assert "finished 2 0" in out


@pytest.mark.parametrize("where", ["server", "embedded"])
def test_a_running_reader_follows_another_process_rebuild(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """The old collection is deleted by the rebuild: a reader holding it used to fail."""
    url, writer_dir, settings = _reader_setup(tmp_path, where, request)
    with PaperQA(settings) as qa:
        assert qa.search("aword1", k=1, mode="bm25")[0].paper.id == "a1"
        _finish(_writer(writer_dir, url, "r", 5, hold="rebuild"))
        _wait_until_found(qa, "rword3")
        assert qa.search("aword1", k=1, mode="bm25") == []
        assert qa.search("Paper r 2 on topic 2", k=1, mode="dense")[0].paper.id == "r2"
        assert qa.stats()["papers"] == 5


def test_an_index_without_an_upload_is_rebuilt_once_then_uploaded_by_the_next_ingest(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection written before generations has no `<collection>.state`: the first client
    rebuilds from the records, and an ingest of nothing new uploads the state."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    _finish(_writer(tmp_path / "machine-a", server, "a", 5))
    host, port = server.rsplit("//", 1)[1].split(":")
    client = chromadb.HttpClient(
        host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False)
    )
    client.delete_collection("papers.state")  # as an older version left it
    old = PaperIndex(load_settings(index_dir=tmp_path / "machine-b", chroma_url=server))
    assert old.stats()["papers"] == 5  # rebuilt from the collection
    assert not old.is_published()
    report = old.ingest(
        [p for p in old.catalog.iter_all() if p.id == "a2"]  # already stored: nothing new
    )
    assert (report.added, report.unchanged) == (0, 1) and old.is_published()

    def no_rebuild(*_: object) -> None:
        raise AssertionError("a new client rebuilt the state from every record")

    monkeypatch.setattr("rag_papers.store.shared.rows_from_collection", no_rebuild)
    with PaperQA(load_settings(index_dir=tmp_path / "machine-c", chroma_url=server)) as qa:
        assert [h.paper.id for h in qa.search("aword2", k=1, mode="bm25")] == ["a2"]
