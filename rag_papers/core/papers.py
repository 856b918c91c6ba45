"""The Paper record and its stable ids."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "MAX_ID_CHARS",
    "Paper",
    "arxiv_id",
    "canonical_id",
    "format_authors",
    "format_reference",
    "make_paper_id",
    "normalise_doi",
    "normalise_title",
    "title_slug",
]

# New-style (2301.01234v2) and old-style (hep-th/9901001v1) arXiv identifiers.
_ARXIV_NEW = re.compile(r"(?<![\d.])(\d{4}\.\d{4,5})(?:v\d+)?(?![\d])")
_ARXIV_OLD = re.compile(r"\b([a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?\b")
_DOI = re.compile(r"\b(10\.\d{4,9}/\S+)", re.IGNORECASE)
# A record's own id is taken for an arXiv id or a DOI only when it is one as a whole (an id,
# an arXiv/doi.org URL, an "arXiv:"/"doi:" prefix), never because it holds one somewhere.
_ARXIV_WHOLE = re.compile(
    r"(?:arxiv:\s*|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)?"
    r"(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[a-z]{2})?/\d{7})(?:v\d+)?(?:\.pdf)?/?",
    re.IGNORECASE,
)
_DOI_WHOLE = re.compile(r"(?:doi:\s*|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)", re.IGNORECASE)
_ARXIV_DOI = re.compile(r"10\.48550/arxiv\.(.+)", re.IGNORECASE)  # arXiv's own DOIs
MAX_ID_CHARS = 200


def arxiv_id(value: str | None) -> str | None:
    """The version-less arXiv id found in ``value`` (an id, an abs/pdf URL), else None."""
    if not value:
        return None
    text = str(value).strip()
    match = _ARXIV_NEW.search(text) or _ARXIV_OLD.search(text)
    return match.group(1) if match else None


def normalise_doi(value: str | None) -> str | None:
    """Lower-cased DOI without a resolver prefix, else None."""
    if not value:
        return None
    match = _DOI.search(str(value).strip())
    return match.group(1).rstrip(".,;").lower() if match else None


def normalise_title(title: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a title, for matching."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def title_slug(title: str, max_words: int = 8) -> str:
    """A readable slug plus a short hash of the full normalised title (collision-safe)."""
    norm = normalise_title(title)
    digest = hashlib.sha1(norm.encode()).hexdigest()[:8]
    words = norm.split()[:max_words]
    return "-".join([*words, digest]) if words else digest


def canonical_id(value: str | None) -> str | None:
    """A record's own id as the index keeps it: an arXiv id without version when the value
    is one (id, abs/pdf URL, arXiv DOI), 'doi:<doi>' when it is a DOI, else the value itself
    with its whitespace collapsed. None when blank."""
    text = " ".join(str(value or "").split())
    if not text:
        return None
    if match := _ARXIV_WHOLE.fullmatch(text):
        return arxiv_id(match.group(1))
    if match := _DOI_WHOLE.fullmatch(text):
        doi = normalise_doi(match.group(1))
        if doi and (inner := _ARXIV_DOI.fullmatch(doi)) and (aid := arxiv_id(inner.group(1))):
            return aid
        return f"doi:{doi}" if doi else text
    return text


def make_paper_id(
    *,
    title: str,
    arxiv: str | None = None,
    doi: str | None = None,
    own: str | None = None,
    fallback: str | None = None,
) -> str:
    """Stable id: the record's ``own`` id (normalised by canonical_id) > arXiv id without
    version > DOI > ``fallback`` (e.g. a BibTeX key) > slug of the normalised title."""
    if own_id := canonical_id(own):
        return own_id
    if aid := arxiv_id(arxiv):
        return aid
    if d := normalise_doi(doi):
        return f"doi:{d}"
    if fallback_id := canonical_id(fallback):
        return fallback_id
    return title_slug(title)


@dataclass(slots=True)
class Paper:
    """One paper: what every loader produces and every later stage consumes."""

    id: str
    title: str
    abstract: str
    authors: list[str] = field(default_factory=list)
    year: int | None = None
    url: str | None = None
    categories: list[str] = field(default_factory=list)
    doi: str | None = None
    source: str = ""  # file the record came from
    line: int = 0  # 1-based line of the record in that file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def content_hash(self) -> str:
        """Hash of everything that ends up in the index; a change means re-embedding."""
        parts = [
            self.title,
            self.abstract,
            "|".join(self.authors),
            str(self.year),
            self.url or "",
            "|".join(self.categories),
        ]
        return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def format_authors(authors: Sequence[str], limit: int = 3) -> str:
    """'A, B, C' or 'A, B, C et al.' past ``limit`` authors."""
    if len(authors) <= limit:
        return ", ".join(authors)
    return ", ".join(authors[:limit]) + " et al."


def format_reference(
    title: str,
    *,
    authors: Sequence[str] = (),
    year: int | None = None,
    url: str | None = None,
    paper_id: str | None = None,
) -> str:
    """One plain-text reference: 'Title. A, B et al. 2024. <url> (id `x`)'; every front end
    that lists references in text uses this one form."""
    parts = [title.rstrip(".")]
    if authors:
        parts.append(format_authors(authors))
    if year:
        parts.append(str(year))
    text = ". ".join(parts) + "."
    if url:
        text += f" <{url}>"
    if paper_id:
        text += f" (id `{paper_id}`)"
    return text
