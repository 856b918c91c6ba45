"""Reading an ingest's files, and the report of what an ingest did."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_papers.core.papers import Paper
    from rag_papers.ingest.loaders import Rejected

__all__ = ["IngestReport", "load_files"]


@dataclass(slots=True)
class IngestReport:
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    migrated: int = 0  # old copies replaced by the same paper under its own id (legacy.py)
    chunks_written: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: IngestReport) -> None:
        self.read += other.read
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.migrated += other.migrated
        self.chunks_written += other.chunks_written
        self.rejected.extend(other.rejected)
        self.duplicates.extend(other.duplicates)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "migrated": self.migrated,
            "chunks_written": self.chunks_written,
            "rejected": [str(r) for r in self.rejected],
            "duplicates": [str(r) for r in self.duplicates],
            "seconds": round(self.seconds, 3),
        }


def load_files(
    paths: Sequence[Path | str],
    *,
    format: str | None = None,
    fields: dict[str, str] | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> tuple[list[Paper], IngestReport]:
    """Read every file before anything is written: the papers, and a report holding the
    rejected records and duplicates. A bad file raises LoaderError naming it."""
    from rag_papers.ingest.loaders import load_papers

    report = IngestReport()
    papers: list[Paper] = []
    for path in paths:
        if on_file is not None:
            on_file(Path(path))
        result = load_papers(path, format=format, fields=fields)
        report.rejected.extend(result.rejected)
        report.duplicates.extend(result.duplicates)
        papers.extend(result.papers)
    return papers, report
