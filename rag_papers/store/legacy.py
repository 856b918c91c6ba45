"""Index formats: the manifest check, and format 1 -> 2 (papers with an own id used to get
another one).

Format 1 kept a record's own id only when it was an arXiv id or a DOI; any other id (say
``pmid-21645374``) was dropped for the DOI or a title slug. Format 2 keeps it. Re-ingesting
the same file into a format-1 index would then add every such paper a second time, under its
own id. Instead, the ingest finds the old copy (the id the old rule gave: slug, DOI, an arXiv
id found inside the own id) with the same title, and removes it once the paper is written
under its new id: the index migrates paper by paper, and nothing is duplicated. Papers
never re-ingested keep their old ids; ``--rebuild`` gives every paper its new id at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rag_papers.core.papers import Paper, arxiv_id, normalise_doi, normalise_title, title_slug
from rag_papers.store.errors import IndexMismatchError

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "OWN_IDS_SINCE",
    "STARTED_KEY",
    "check_manifest",
    "legacy_ids",
    "old_copies",
]

FORMAT_KEY = "rag_papers:format"
STARTED_KEY = "rag_papers:ingest_started"  # set before an ingest's first write
FORMAT_VERSION = 2  # written into every new collection's manifest
OWN_IDS_SINCE = 2  # first format that keeps records' own ids


def check_manifest(
    stored: Mapping[str, Any], wanted: Mapping[str, Any], *, where: str, readable: int
) -> None:
    """IndexMismatchError unless an index with manifest ``stored`` can be used with settings
    that want ``wanted``: same model and chunker; any format up to ``readable``."""
    if int(stored.get(FORMAT_KEY, 1)) > readable:
        raise IndexMismatchError(
            f"{where} was written by a newer rag_papers (index format "
            f"{stored[FORMAT_KEY]}; this one reads up to {readable}): upgrade rag_papers."
        )
    diffs = [
        f"{key.split(':', 1)[1]}: index has {stored.get(key)!r}, settings ask for {value!r}"
        for key, value in wanted.items()
        if key != FORMAT_KEY and key in stored and stored.get(key) != value
    ]
    if diffs:
        raise IndexMismatchError(
            f"{where} was built with other settings — " + "; ".join(diffs) + ". Vectors of "
            "two models are never mixed: re-run with --rebuild to re-embed everything, or "
            "change the settings back."
        )


def legacy_ids(paper: Paper) -> set[str]:
    """Every id the format-1 rule could have given this paper."""
    ids = {title_slug(paper.title)}
    if paper.doi:
        ids.add(f"doi:{paper.doi}")
    if aid := arxiv_id(paper.id):
        ids.add(aid)
    if doi := normalise_doi(paper.id):
        ids.add(f"doi:{doi}")
    ids.discard(paper.id)
    return ids


def old_copies(papers: Mapping[str, Paper], stored: Mapping[str, Paper]) -> dict[str, str]:
    """old id -> new id, for the stored papers that are an incoming paper under its old id.

    ``stored`` holds the stored papers looked up by the candidates; a candidate counts only
    when its title matches, so another paper that happens to have that id is never touched.
    """
    found: dict[str, str] = {}
    for pid, paper in papers.items():
        title = normalise_title(paper.title)
        for old in legacy_ids(paper):
            copy = stored.get(old)
            if old not in papers and copy is not None and normalise_title(copy.title) == title:
                found[old] = pid
    return found
