"""BEIR corpus.jsonl: {"_id", "title", "text", "metadata"} per line.

The paper id is the corpus ``_id`` as is, because the qrels refer to documents by it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rag_papers.core.papers import Paper, normalise_doi
from rag_papers.core.text import split_sentences
from rag_papers.ingest.loaders.common import RecordError, Rejected, clean_text, iter_lines
from rag_papers.ingest.loaders.records import FieldKeys, as_authors, as_year

__all__ = ["TITLE_WORDS", "parse_beir", "title_from_text"]

# Longest title made from a text when the record has none.
TITLE_WORDS = 20


def title_from_text(text: str) -> str:
    """A stand-in title: the first sentence, cut at TITLE_WORDS words.

    Several BEIR corpora (unlike SciFact, where every title is set) have documents with an
    empty title. They are still relevant documents in the qrels, so dropping them would
    distort evaluation; and an empty title would leave nothing to show in a citation.
    """
    sentences = split_sentences(text)
    words = (sentences[0] if sentences else text).split()
    return " ".join(words[:TITLE_WORDS]) + (" …" if len(words) > TITLE_WORDS else "")


def _paper(record: Mapping[str, Any], *, source: str, line: int) -> Paper:
    raw_id = record.get("_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        got = "nothing" if raw_id is None else type(raw_id).__name__
        raise RecordError("id", f"expected a string '_id', got {got}")
    doc_id = str(raw_id).strip()
    if not doc_id:
        raise RecordError("id", "empty '_id'")
    text = record.get("text")
    if text is None:
        raise RecordError("abstract", "missing ('text')")
    if not isinstance(text, str):
        raise RecordError("abstract", f"expected a string in 'text', got {type(text).__name__}")
    abstract = clean_text(text)
    if not abstract:
        raise RecordError("abstract", "empty 'text'")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise RecordError("title", f"expected a string in 'title', got {type(title).__name__}")
    title = clean_text(title or "", braces=True) or title_from_text(abstract)
    # metadata is free-form across BEIR corpora: take what fits, ignore the rest.
    meta = record.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    url = meta.get("url") if isinstance(meta.get("url"), str) else None
    doi = meta.get("doi") if isinstance(meta.get("doi"), str) else None
    try:
        authors = as_authors(meta.get("authors"), "metadata.authors")
        year = as_year(meta.get("year"), "metadata.year")
    except RecordError:
        authors, year = [], None
    return Paper(
        id=doc_id,
        title=title,
        abstract=abstract,
        authors=authors,
        year=year,
        url=clean_text(url) or None if url else None,
        doi=normalise_doi(doi),
        source=source,
        line=line,
    )


def parse_beir(path: Path, keys: FieldKeys | None = None) -> Iterator[Paper | Rejected]:
    source = str(path)
    for number, raw in iter_lines(path):
        if raw is None:
            yield Rejected(source, number, "undecodable bytes (not UTF-8)")
            continue
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            yield Rejected(source, number, f"invalid JSON: {reason}")
            continue
        if not isinstance(record, dict):
            yield Rejected(source, number, f"expected a JSON object, got {type(record).__name__}")
            continue
        try:
            yield _paper(record, source=source, line=number)
        except RecordError as exc:
            yield Rejected(source, number, exc.reason, exc.field)
