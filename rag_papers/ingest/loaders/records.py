"""Field values -> Paper: key mapping for dict-shaped records (JSON, JSONL, CSV), the value
converters every loader shares, and the id rule."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from rag_papers.core.papers import (
    MAX_ID_CHARS,
    Paper,
    arxiv_id,
    canonical_id,
    make_paper_id,
    normalise_doi,
)
from rag_papers.ingest.loaders.common import RecordError, clean_text

__all__ = [
    "DEFAULT_KEYS",
    "FieldKeys",
    "as_authors",
    "as_categories",
    "as_id",
    "as_text",
    "as_year",
    "build_paper",
    "extract_year",
    "paper_from_record",
    "repair_arxiv_number",
    "resolve_fields",
    "split_authors",
    "split_categories",
]

FieldKeys = dict[str, tuple[str, ...]]

# Our field -> source keys tried in order (case-insensitive); the first non-blank value wins.
DEFAULT_KEYS: FieldKeys = {
    "id": ("id", "arxiv_id"),
    "title": ("title",),
    "abstract": ("abstract", "summary", "text"),
    "authors": ("authors", "author"),
    "year": ("year", "date", "published", "update_date"),
    "doi": ("doi",),
    "url": ("url", "link"),
    "categories": ("categories",),
}


def resolve_fields(fields: Mapping[str, str] | None) -> FieldKeys:
    """Defaults, with each field named in ``fields`` read from that one source key instead."""
    keys = dict(DEFAULT_KEYS)
    for ours, theirs in (fields or {}).items():
        if ours not in DEFAULT_KEYS:
            known = ", ".join(DEFAULT_KEYS)
            raise ValueError(f"fields: unknown field {ours!r} (known: {known})")
        if not isinstance(theirs, str) or not theirs:
            raise ValueError(f"fields: the source key for {ours!r} must be a non-empty string")
        keys[ours] = (theirs,)
    return keys


# --- converters: strict about types, lenient about values ----------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def as_text(value: Any, field: str, key: str) -> str:
    if not isinstance(value, str):
        raise RecordError(field, f"expected a string in '{key}', got {_type_name(value)}")
    return value


# Affiliations in arXiv author strings: "A (1), B (2) ((1) MIT, (2) CMU)".
_PARENS = re.compile(r"\([^()]*\)")
_AUTHOR_SEP = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s*&\s*")


def split_authors(value: str) -> list[str]:
    """'A, B and C' / 'A and B' / 'Last, First; Last, First' -> names."""
    text = value
    while _PARENS.search(text):
        text = _PARENS.sub(" ", text)
    parts = text.split(";") if ";" in text else _AUTHOR_SEP.split(text)
    names = (clean_text(part, braces=True) for part in parts)
    return [name for name in names if name]


def as_authors(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_authors(value)
    if isinstance(value, list):
        names: list[str] = []
        for item in value:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                item = item["name"]  # [{"name": ...}] as in Semantic Scholar and arXiv dumps
            if not isinstance(item, str):
                raise RecordError("authors", f"expected names in '{key}', got {_type_name(item)}")
            if name := clean_text(item, braces=True):
                names.append(name)
        return names
    raise RecordError("authors", f"expected a list or a string in '{key}', got {_type_name(value)}")


_YEAR = re.compile(r"(?<!\d)(1[5-9]\d\d|2[0-2]\d\d)(?!\d)")


def extract_year(value: str) -> int | None:
    """The first plausible 4-digit year in a date-like string ('11/26/2008' -> 2008)."""
    match = _YEAR.search(value)
    return int(match.group(1)) if match else None


def as_year(value: Any, key: str) -> int | None:
    # A year we cannot read costs the paper its year, not the paper itself.
    if value is None:
        return None
    if isinstance(value, bool):
        raise RecordError("year", f"expected a year in '{key}', got bool")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int):
        return value if 1500 <= value <= 2299 else None
    if isinstance(value, str):
        return extract_year(value)
    raise RecordError("year", f"expected a year in '{key}', got {_type_name(value)}")


def split_categories(value: str) -> list[str]:
    return [c for c in re.split(r"[\s,;]+", value) if c]


def as_categories(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        items = split_categories(value)
    elif isinstance(value, list) and all(isinstance(c, str) for c in value):
        items = [c.strip() for c in value if c.strip()]
    else:
        raise RecordError(
            "categories",
            f"expected a list of strings or a string in '{key}', got {_type_name(value)}",
        )
    return list(dict.fromkeys(items))  # arXiv lists repeat categories; keep first order


def as_id(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError("id", f"expected a string or number in '{key}', got {_type_name(value)}")
    return str(value).strip() or None


_FLOATY = re.compile(r"\d{3,4}\.\d{1,5}")


def repair_arxiv_number(value: str) -> str:
    """Undo a float conversion of a new-style arXiv id: '704.0001' -> '0704.0001',
    '704.001' -> '0704.0010'. Ids from 2015 (1501) on have five digits after the dot."""
    if not _FLOATY.fullmatch(value):
        return value
    head, tail = value.split(".")
    yymm = int(head)
    if not 1 <= yymm % 100 <= 12:
        return value  # not a year-month: not an arXiv number
    width = 5 if yymm >= 1501 else 4
    if len(head) == 4 and len(tail) == width:
        return value
    return f"{float(value):0{width + 5}.{width}f}"


# --- Paper construction -------------------------------------------------------------------


def build_paper(
    *,
    source: str,
    line: int,
    title: str,
    abstract: str,
    authors: list[str] | None = None,
    year: int | None = None,
    url: str | None = None,
    categories: list[str] | None = None,
    doi: str | None = None,
    arxiv: str | None = None,
    record_id: str | None = None,
    fallback_id: str | None = None,
) -> Paper:
    """Clean the text, check it is there, and give the paper its stable id.

    ``record_id`` is the record's own id (an id column, an Atom <id>): kept as the paper id,
    normalised when it is an arXiv id or a DOI. ``arxiv`` is an arXiv id found elsewhere (a
    BibTeX eprint); ``fallback_id`` (a BibTeX key) is used when there is neither an own id,
    an arXiv id nor a DOI.
    """
    title = clean_text(title, braces=True)
    if not title:
        raise RecordError("title", "empty")
    abstract = clean_text(abstract)
    if not abstract:
        raise RecordError("abstract", "empty")
    own = canonical_id(repair_arxiv_number(record_id.strip())) if record_id else None
    if own and len(own) > MAX_ID_CHARS:
        raise RecordError("id", f"longer than {MAX_ID_CHARS} characters ({len(own)})")
    aid = arxiv_id(arxiv) if arxiv else None
    if own and arxiv_id(own) == own:
        aid = own
    norm_doi = normalise_doi(doi)
    if norm_doi is None and own and own.startswith("doi:"):
        norm_doi = own.removeprefix("doi:")  # an "id" column that holds a DOI
    url = clean_text(url) if url else None
    if not url:
        # A link to show next to a citation; arXiv and doi.org resolve these ids.
        if aid:
            url = f"https://arxiv.org/abs/{aid}"
        elif norm_doi:
            url = f"https://doi.org/{norm_doi}"
    return Paper(
        id=make_paper_id(title=title, own=own, arxiv=aid, doi=norm_doi, fallback=fallback_id),
        title=title,
        abstract=abstract,
        authors=authors or [],
        year=year,
        url=url or None,
        categories=categories or [],
        doi=norm_doi,
        source=source,
        line=line,
    )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _describe(keys: tuple[str, ...]) -> str:
    quoted = [f"'{k}'" for k in keys]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def paper_from_record(
    record: Mapping[str, Any], *, keys: FieldKeys, source: str, line: int
) -> Paper:
    """One dict-shaped record (a JSON object, a CSV row) -> Paper, or RecordError."""
    lower = {k.lower(): v for k, v in record.items() if isinstance(k, str)}

    def get(name: str) -> tuple[str, Any, bool]:
        """(key, value, present): the first non-blank value, else whether a key was there."""
        present = None
        for key in keys[name]:
            value = lower.get(key.lower())
            if isinstance(value, str) and not value.strip():
                value = None
            if not _blank(value):
                return key, value, True
            if key.lower() in lower and present is None:
                present = key
        return present or keys[name][0], None, present is not None

    for required in ("title", "abstract"):
        key, value, present = get(required)
        if value is None:
            reason = f"empty '{key}'" if present else f"missing (no {_describe(keys[required])})"
            raise RecordError(required, reason)
    title_key, title, _ = get("title")
    abstract_key, abstract, _ = get("abstract")
    doi_key, doi, _ = get("doi")
    url_key, url, _ = get("url")
    id_key, raw_id, _ = get("id")
    authors_key, authors, _ = get("authors")
    year_key, year, _ = get("year")
    cat_key, categories, _ = get("categories")
    return build_paper(
        source=source,
        line=line,
        title=as_text(title, "title", title_key),
        abstract=as_text(abstract, "abstract", abstract_key),
        authors=as_authors(authors, authors_key),
        year=as_year(year, year_key),
        url=as_text(url, "url", url_key) if url is not None else None,
        categories=as_categories(categories, cat_key),
        doi=as_text(doi, "doi", doi_key) if doi is not None else None,
        record_id=as_id(raw_id, id_key),
    )
