"""What `pip install rag-papers` brings, what the eval extra adds, and what the eval
libraries may write."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_cli import run_cli

from rag_papers import Settings

ROOT = Path(__file__).resolve().parents[1]
EVAL_LIBRARIES = {"ranx", "matplotlib"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_runtime_install_leaves_the_eval_libraries_to_the_eval_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert not runtime & EVAL_LIBRARIES
    assert _names(extras["eval"]) == EVAL_LIBRARIES
    # llama-index-core (with sqlalchemy, networkx, nltk, pillow: ~117 MiB) only for the
    # adapters; `make test` runs the harness and the adapters.
    assert "llama-index-core" not in runtime
    assert _names(extras["llama-index"]) == {"llama-index-core"}
    assert "rag-papers[eval,llama-index]" in extras["dev"]
    assert "llama-cpp-python" in _names(extras["local"])
    assert "pylatexenc" in runtime
    assert "schemathesis" in _names(extras["dev"])


def test_eval_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    dataset = tmp_path / "q.jsonl"
    dataset.write_text("")
    # A missing package, as Python sees one: the module entry is None.
    probe = (
        "import sys\n"
        "sys.modules['ranx'] = None\n"
        "from rag_papers.cli.app import main\n"
        f"main(['eval', 'run', {str(dataset)!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: `rag-papers eval run` needs the eval extra (ranx not installed): "
        "pip install 'rag-papers[eval]'"
    ]


def test_eval_libraries_write_nothing_into_home(
    sample_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(os.environ["HOME"])  # the test's tmp home (conftest)
    # An in-process eval test may have set these already: the CLI must choose them itself.
    for var in ("IR_DATASETS_HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "data"
    proc = run_cli(
        "--index-dir",
        sample_settings.resolved_index_dir,
        "eval",
        "run",
        ROOT / "eval" / "datasets" / "sample.jsonl",
        "--limit",
        "2",
        "--out",
        tmp_path / "run",
        env={"RAG_PAPERS_DATA_DIR": str(data_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "report.html").is_file()  # plots drawn, metrics computed
    assert not (home / ".ir_datasets").exists()
    assert not (home / ".cache" / "matplotlib").exists()
    assert not (home / ".config" / "matplotlib").exists()
    # ranx's ir_datasets and matplotlib's cache went under the data dir instead.
    assert (data_dir / "cache" / "ir_datasets").is_dir()
    assert (data_dir / "cache" / "matplotlib").is_dir()


def test_without_llama_index_answers_count_tokens_offline_and_name_the_extra(
    sample_settings: Settings,
) -> None:
    """The runtime install has no llama-index: search and ask work, tiktoken reads the
    encodings this package ships (no network), and the adapters name the extra."""
    probe = f"""
import socket, sys
sys.modules["llama_index"] = None  # as if not installed
def no_network(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = no_network
from rag_papers import MissingExtraError, PaperQA, load_settings
from rag_papers.core.text import encoding
qa = PaperQA(load_settings(index_dir={str(sample_settings.index_dir)!r},
                           data_dir={str(sample_settings.data_dir)!r}))
assert qa.search("reflection tokens", k=2)
assert qa.ask("What does Self-RAG add to retrieval-augmented generation?").citations
assert len(encoding("cl100k_base").encode("hello world")) == 2
assert len(encoding("o200k_base").encode("hello world")) == 2
try:
    qa.as_query_engine()
except MissingExtraError as exc:
    print(exc)
assert not any(m.startswith("llama_index.") for m in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (
        "the llama-index adapters need llama-index-core: pip install 'rag-papers[llama-index]'"
    )
