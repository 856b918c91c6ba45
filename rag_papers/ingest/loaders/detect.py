"""Which loader a file needs: from its extension, confirmed or refined by its first bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rag_papers.ingest.loaders.common import LoaderError, open_binary

__all__ = ["detect_format"]

_HEAD_BYTES = 64 * 1024
_EXTENSIONS = {
    ".txt": "hf",
    ".csv": "csv",
    ".tsv": "csv",
    ".bib": "bibtex",
    ".bibtex": "bibtex",
    ".xml": "atom",
    ".atom": "atom",
}
_BIBTEX_ENTRY = re.compile(r"^\s*@\s*[A-Za-z]+\s*[{(]", re.MULTILINE)


def _head(path: Path) -> str:
    with open_binary(path) as handle:
        try:
            data = handle.read(_HEAD_BYTES)
        except OSError as exc:
            raise LoaderError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")


def _first_object(head: str) -> dict[str, object] | None:
    """The first line of a JSON Lines head that decodes to an object, if any."""
    for line in head.splitlines()[:20]:
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _json_kind(head: str) -> str:
    """'json' for one document (array or object), 'jsonl'/'beir' for one object per line."""
    stripped = head.lstrip()
    if stripped.startswith("["):
        return "json"
    lines = [line for line in stripped.splitlines() if line.strip()]
    try:
        first = json.loads(lines[0]) if lines else None
    except (ValueError, RecursionError):
        first = None
    if not isinstance(first, dict) or len(lines) < 2:
        return "json"  # a pretty-printed or single-line document
    return "beir" if {"_id", "text"} <= first.keys() else "jsonl"


def _sniff(head: str) -> str | None:
    """A guess from content alone, for unknown extensions."""
    stripped = head.lstrip()
    if stripped.startswith(("[", "{")):
        return _json_kind(head)
    if stripped.startswith("<") and re.search(r"<(?:\w+:)?feed[\s>]", head):
        return "atom"
    if _BIBTEX_ENTRY.search(head):
        return "bibtex"
    first = stripped.split("\n", 1)[0].lower()
    columns = re.split(r"[,\t;]", first)
    if len(columns) > 1 and any(c.strip().strip('"') == "title" for c in columns):
        return "csv"
    from rag_papers.ingest.loaders.hf import blocks, find_start  # light module; only needed here

    if find_start(blocks(head.splitlines(keepends=True))) is not None:
        return "hf"
    return None


def detect_format(path: Path | str) -> str:
    """One of FORMATS for ``path``, or LoaderError naming the file.

    .txt -> hf; .json -> json (one document) or jsonl (one object per line); .jsonl -> jsonl,
    or beir when its records have "_id" and "text"; .csv/.tsv -> csv; .bib -> bibtex;
    .xml/.atom -> atom. Other extensions are sniffed from the content.
    """
    path = Path(path)
    head = _head(path)  # also checks that the file exists and can be read
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_kind(head)
    if suffix in (".jsonl", ".ndjson"):
        first = _first_object(head)
        return "beir" if first is not None and {"_id", "text"} <= first.keys() else "jsonl"
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if found := _sniff(head):
        return found
    raise LoaderError(f"{path}: cannot tell the format from the extension or the content")
