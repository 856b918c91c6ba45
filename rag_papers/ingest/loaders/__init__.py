"""Paper loaders: one module per input format, format detection, and ``load_papers``.

Every loader yields Papers and Rejected records; ``load_papers`` keeps the first paper of each
id and reports later ones as duplicates. A file that cannot be read at all raises LoaderError;
a bad record never does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from rag_papers.core.papers import Paper
from rag_papers.ingest.loaders.common import FORMATS, LoaderError, LoadResult, Rejected
from rag_papers.ingest.loaders.detect import detect_format
from rag_papers.ingest.loaders.records import FieldKeys, resolve_fields

__all__ = ["FORMATS", "LoadResult", "LoaderError", "Rejected", "detect_format", "load_papers"]

Parser = Callable[[Path, FieldKeys], Iterator[Paper | Rejected]]

# format -> (module, function). Imported on use: bibtexparser and feedparser are not free.
_PARSERS: dict[str, tuple[str, str]] = {
    "hf": ("hf", "parse_hf"),
    "json": ("jsonfmt", "parse_json"),
    "jsonl": ("jsonfmt", "parse_jsonl"),
    "csv": ("csvfmt", "parse_csv"),
    "bibtex": ("bibtex", "parse_bibtex"),
    "atom": ("atom", "parse_atom"),
    "beir": ("beir", "parse_beir"),
}
# Formats whose records are dicts with arbitrary keys, where a field mapping means something.
_MAPPABLE = ("json", "jsonl", "csv")


def _parser(fmt: str) -> Parser:
    module, name = _PARSERS[fmt]
    parser: Parser = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return parser


def load_papers(
    path: str | Path,
    *,
    format: str | None = None,  # shadows the builtin: it is the public keyword (--format)
    fields: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load the papers of one file.

    ``format`` is one of FORMATS (detected when None). ``fields`` maps our field name to the
    source key for json/jsonl/csv, e.g. ``{"abstract": "summary", "id": "paper_id"}``; fields
    not named keep their default keys. Raises LoaderError when the file cannot be loaded at all,
    ValueError for a ``fields`` mapping that cannot apply.
    """
    path = Path(path)
    fmt = format if format is not None else detect_format(path)
    if fmt not in FORMATS:
        raise LoaderError(f"{path}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fields and fmt not in _MAPPABLE:
        raise ValueError(f"fields: a field mapping applies to {', '.join(_MAPPABLE)}, not {fmt}")
    keys = resolve_fields(fields)
    result = LoadResult()
    first_seen: dict[str, Paper] = {}
    for item in _parser(fmt)(path, keys):
        if isinstance(item, Rejected):
            result.rejected.append(item)
        elif (first := first_seen.get(item.id)) is not None:
            reason = f"duplicate of {first.source}:{first.line} (id {item.id})"
            result.duplicates.append(Rejected(item.source, item.line, reason, "id"))
        else:
            first_seen[item.id] = item
            result.papers.append(item)
    return result
