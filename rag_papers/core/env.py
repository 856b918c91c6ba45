"""Process environment that must be in place before third-party imports, set once.

Each line stops a library from reaching the network: onnxruntime's telemetry look-ups,
tiktoken's encoding download (llama-index-core ships the files) and Chroma's telemetry.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["prepare_environment", "tiktoken_cache_dir"]


def tiktoken_cache_dir() -> Path | None:
    """llama-index-core's bundled tiktoken cache, found without importing llama_index.core."""
    spec = importlib.util.find_spec("llama_index.core")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "_static" / "tiktoken_cache"
    return path if path.is_dir() else None


def prepare_environment() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "TIKTOKEN_CACHE_DIR" not in os.environ and (cache := tiktoken_cache_dir()):
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
