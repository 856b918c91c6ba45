"""Split papers into embedding-sized chunks on sentence boundaries (tiktoken counts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from rag_papers.core.papers import Paper
from rag_papers.core.text import encoding, split_sentences

__all__ = ["Chunk", "chunk_paper", "chunker_id", "metadata_to_paper", "paper_metadata"]


@dataclass(slots=True)
class Chunk:
    id: str  # "<paper id>#<index>": deterministic, so re-ingesting upserts in place
    paper_id: str
    index: int
    text: str  # what is embedded: the title, then the chunk's sentences
    metadata: dict[str, str | int | float | bool]


def chunker_id(tokenizer: str, chunk_tokens: int, overlap: int) -> str:
    """Identifies the chunker settings in the index manifest."""
    return f"sentences/{tokenizer}/{chunk_tokens}/{overlap}"


def paper_metadata(paper: Paper) -> dict[str, str | int | float | bool]:
    """Flat metadata (Chroma accepts only scalars); lists are joined with '; '."""
    return {
        "paper_id": paper.id,
        "title": paper.title,
        "authors": "; ".join(paper.authors),
        "year": paper.year if paper.year is not None else -1,
        "url": paper.url or "",
        "categories": "; ".join(paper.categories),
        "doi": paper.doi or "",
        "source": paper.source,
        "line": paper.line,
        "content_hash": paper.content_hash,
    }


def metadata_to_paper(meta: dict[str, Any], abstract: str) -> Paper:
    """Inverse of paper_metadata, used to rebuild the local catalog from a shared store."""
    year = int(meta.get("year", -1))
    return Paper(
        id=str(meta["paper_id"]),
        title=str(meta.get("title", "")),
        abstract=abstract,
        authors=[a for a in str(meta.get("authors", "")).split("; ") if a],
        year=None if year < 0 else year,
        url=str(meta.get("url") or "") or None,
        categories=[c for c in str(meta.get("categories", "")).split("; ") if c],
        doi=str(meta.get("doi") or "") or None,
        source=str(meta.get("source", "")),
        line=int(meta.get("line", 0)),
    )


def chunk_paper(
    paper: Paper, *, chunk_tokens: int = 220, overlap: int = 40, tokenizer: str = "cl100k_base"
) -> list[Chunk]:
    """One chunk when title + abstract fit ``chunk_tokens``; else sentence windows with overlap."""
    enc = encoding(tokenizer)
    title_tokens = len(enc.encode(paper.title, disallowed_special=()))
    budget = max(chunk_tokens - title_tokens, 16)
    sentences = split_sentences(paper.abstract) or [paper.abstract]
    sizes = [len(enc.encode(s, disallowed_special=())) for s in sentences]

    windows: list[list[str]] = []
    if sum(sizes) <= budget:
        windows.append(sentences)
    else:
        start = 0
        while start < len(sentences):
            end, used = start, 0
            while end < len(sentences) and (used + sizes[end] <= budget or end == start):
                used += sizes[end]
                end += 1
            windows.append(sentences[start:end])
            if end >= len(sentences):
                break
            # Step back over whole sentences that fit in the overlap, but always advance.
            back, kept = end, 0
            while back - 1 > start and kept + sizes[back - 1] <= overlap:
                back -= 1
                kept += sizes[back]
            start = back

    base = paper_metadata(paper)
    chunks = []
    for index, window in enumerate(windows):
        body = " ".join(window)
        meta = dict(base)
        meta.update(
            chunk_index=index,
            n_chunks=len(windows),
            chunk_hash=hashlib.sha1(body.encode()).hexdigest()[:12],
        )
        chunks.append(
            Chunk(
                id=f"{paper.id}#{index}",
                paper_id=paper.id,
                index=index,
                text=f"{paper.title}\n{body}",
                metadata=meta,
            )
        )
    return chunks
