"""Process environment that must be in place before third-party imports, set once.

Each line stops a library from reaching the network or writing into the user's home:
onnxruntime's telemetry look-ups, tiktoken's encoding download (this package ships the
files), Chroma's telemetry; and, for the eval extra, ir_datasets (imported by ranx: it makes
~/.ir_datasets), matplotlib (~/.cache/matplotlib) and numba's cache. Also the reading side:
which RAG_PAPERS_* variable set a setting, a bad value as one line naming it, and which config
file is read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "config_file_in_use",
    "describe_validation_error",
    "offline_encodings",
    "prepare_environment",
    "prepare_eval_environment",
    "setting_env_var",
    "tiktoken_cache_dir",
    "tiktoken_cache_in_use",
    "user_config_file",
]

_BLOB = "https://openaipublic.blob.core.windows.net"
# tiktoken encoding -> the files it reads (tiktoken_ext/openai_public.py); tiktoken caches
# each under sha1(url) and downloads any that is missing.
_ENCODING_FILES: dict[str, tuple[str, ...]] = {
    "gpt2": (
        f"{_BLOB}/gpt-2/encodings/main/vocab.bpe",
        f"{_BLOB}/gpt-2/encodings/main/encoder.json",
    ),
    "r50k_base": (f"{_BLOB}/encodings/r50k_base.tiktoken",),
    "p50k_base": (f"{_BLOB}/encodings/p50k_base.tiktoken",),
    "p50k_edit": (f"{_BLOB}/encodings/p50k_base.tiktoken",),
    "cl100k_base": (f"{_BLOB}/encodings/cl100k_base.tiktoken",),
    "o200k_base": (f"{_BLOB}/encodings/o200k_base.tiktoken",),
    "o200k_harmony": (f"{_BLOB}/encodings/o200k_base.tiktoken",),
}


def tiktoken_cache_dir() -> Path | None:
    """The tiktoken encodings this package ships (cl100k_base, o200k_base), so counting
    tokens never downloads (rag_papers/data/tiktoken_cache/README.md)."""
    path = Path(__file__).resolve().parents[1] / "data" / "tiktoken_cache"
    return path if path.is_dir() else None


def tiktoken_cache_in_use() -> Path | None:
    """The folder tiktoken reads encodings from once ``prepare_environment`` has run
    (None: caching switched off, every encoding would be downloaded)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        chosen = os.environ["TIKTOKEN_CACHE_DIR"]
    elif bundled := tiktoken_cache_dir():
        return bundled
    else:
        chosen = os.environ.get(
            "DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")
        )
    return Path(chosen) if chosen else None


def offline_encodings() -> list[str]:
    """The tiktoken encodings whose files are cached, so they load without the network."""
    cache = tiktoken_cache_in_use()
    if cache is None or not cache.is_dir():
        return []
    return [
        name
        for name, urls in _ENCODING_FILES.items()
        if all((cache / hashlib.sha1(u.encode()).hexdigest()).is_file() for u in urls)
    ]


def prepare_environment() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "TIKTOKEN_CACHE_DIR" not in os.environ and (cache := tiktoken_cache_dir()):
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


def prepare_eval_environment(cache_dir: Path | None = None) -> None:
    """Point the eval libraries' own folders at ``cache_dir`` (default: a folder of this
    user's in the temp dir) before they are imported. A variable already set is kept."""
    if cache_dir is None:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        cache_dir = Path(tempfile.gettempdir()) / f"rag-papers-{uid}"
    # ir_datasets creates ~60 empty dataset folders under its home when ranx imports it;
    # ranx never uses them.
    os.environ.setdefault("IR_DATASETS_HOME", str(cache_dir / "ir_datasets"))
    # matplotlib's font cache: kept, so plots do not rescan the fonts each run.
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))
    # numba caches ranx's compiled metrics beside ranx when it can write there, else in
    # ~/.cache: only then send it to cache_dir (a fresh cache costs seconds of compiling).
    spec = importlib.util.find_spec("ranx")
    origin = Path(spec.origin).parent if spec and spec.origin else None
    if origin is not None and not os.access(origin, os.W_OK):
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir / "numba"))


def setting_env_var(name: str, field: Any = None) -> str:
    """The environment variable that sets setting ``name``: the one of its names that is
    present (RAG_PAPERS_NAME or an alias such as OPENAI_API_KEY), else RAG_PAPERS_NAME."""
    names = [f"RAG_PAPERS_{name.upper()}"]
    alias = getattr(field, "validation_alias", None)
    names += [c.upper() for c in getattr(alias, "choices", []) if isinstance(c, str)]
    present = {k.upper(): k for k in os.environ}
    return next((present[n] for n in names if n in present), names[0])


def describe_validation_error(
    exc: Exception, *, env_fields: Mapping[str, Any] | None = None
) -> str:
    """A pydantic error as one line, 'field: problem; ...'. With ``env_fields`` (the
    settings read from the environment) each part names its variable and value:
    "RAG_PAPERS_TOP_K='abc': top_k: Input should be a valid integer". Any other error
    (pydantic-settings: a list or dict variable that is not JSON) as its message."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        problem = f"{name}: {error['msg']}" if name else error["msg"]
        problem = problem.replace("Value error, ", "")
        if env_fields is not None and name in env_fields:
            var = setting_env_var(name, env_fields[name])
            # Keys and passwords are never echoed.
            shown = "" if "key" in name else f"={os.environ.get(var, '')!r}"
            problem = f"{var}{shown}: {problem}"
        parts.append(problem)
    return "; ".join(parts)


def user_config_file() -> Path:
    """The user's own config file, read when present and no other file is named:
    ``<user config dir>/config.toml`` (e.g. ~/.config/rag-papers/config.toml)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("rag-papers", appauthor=False)) / "config.toml"


def config_file_in_use(config: Path | str | None = None) -> Path | None:
    """The TOML file settings are read from: ``config``, else $RAG_PAPERS_CONFIG, else the
    user's config file when it exists; None when there is none."""
    if config is not None:
        return Path(config)
    if env_config := os.environ.get("RAG_PAPERS_CONFIG"):
        return Path(env_config)
    user = user_config_file()
    return user if user.is_file() else None
