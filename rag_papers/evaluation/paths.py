"""Where evaluation output and evaluation indexes go by default (never the user's index)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = ["beir_name", "dedicated_index_dir", "default_out_dir", "slug"]


def slug(text: str) -> str:
    """A file-name-safe form of text (at most 60 characters; 'run' when nothing is left)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def default_out_dir(
    dataset_path: Path | str, llm: str, *, root: Path | str = "eval/reports"
) -> Path:
    """eval/reports/<dataset-stem>-<mode>-<date>; mode is 'extractive' or the model name."""
    mode = "extractive" if llm == "extractive" else llm.split(":", 1)[-1].rsplit("/", 1)[-1]
    return Path(root) / f"{Path(dataset_path).stem}-{slug(mode)}-{dt.date.today().isoformat()}"


def beir_name(folder: Path) -> str:
    """A BEIR folder's dataset name: /…/scifact/beir is SciFact's, so it is 'scifact'."""
    return folder.parent.name if folder.name.lower() == "beir" else folder.name


def dedicated_index_dir(settings: Settings, corpus: Path | str) -> Path:
    """Where an evaluation corpus gets an index of its own (never the user's index).

    A BEIR folder (or its corpus.jsonl) -> <data_dir>/beir/<dataset name>, shared by
    `eval beir` and `eval run --corpus`; any other file -> <data_dir>/eval-index/<stem>-<hash>.
    """
    path = Path(corpus).expanduser().resolve()
    if path.is_dir():
        return settings.data_dir / "beir" / beir_name(path)
    if path.name == "corpus.jsonl" and (path.parent / "queries.jsonl").is_file():
        return settings.data_dir / "beir" / beir_name(path.parent)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return settings.data_dir / "eval-index" / f"{slug(path.stem)}-{digest}"
