"""The public API: __all__ complete and importable; the README's examples run."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rag_papers

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_all_resolves() -> None:
    for name in rag_papers.__all__:
        assert getattr(rag_papers, name) is not None, name


def test_every_module_declares_a_complete_all() -> None:
    for info in pkgutil.walk_packages(rag_papers.__path__, "rag_papers."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI on import
        # The CLI's command modules are checked too: their command functions are public
        # (and listed), their helpers private.
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{info.name} has no __all__"
        for name in exported:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and getattr(v, "__module__", None) == info.name
            and (isinstance(v, type) or callable(v))
        }
        missing = public - set(exported)
        assert not missing, f"{info.name}: public names not in __all__: {sorted(missing)}"


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run(example: str, sample_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = tmp_path / "example-index"
    shutil.copytree(sample_settings.resolved_index_dir, index)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), str(index)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Self-RAG" in proc.stdout or "HippoRAG" in proc.stdout or "drag" in proc.stdout.lower()
