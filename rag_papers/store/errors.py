"""Errors of the store, each naming what is wrong, where (the index dir or server), and the fix;
and the translation of Chroma's and SQLite's raw exceptions into them."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag_papers.core.errors import RagPapersError

__all__ = [
    "DiskFullError",
    "IndexMismatchError",
    "ReadOnlyIndexError",
    "RebuildError",
    "StoreDamagedError",
    "StoreUnavailableError",
    "store_errors",
]


class IndexMismatchError(RagPapersError, RuntimeError):
    """The stored index was built with other embedding/chunking settings."""


class StoreUnavailableError(RagPapersError, RuntimeError):
    """The Chroma server cannot be reached."""


class ReadOnlyIndexError(RagPapersError, PermissionError):
    """A write (ingest, rebuild) was asked of an index dir this process may only read."""


class StoreDamagedError(RagPapersError, RuntimeError):
    """The Chroma store itself (the vectors: not a cache) cannot be read."""


class DiskFullError(RagPapersError, OSError):
    """The disk filled up while the index was being written."""


class RebuildError(RagPapersError, RuntimeError):
    """``--rebuild`` stopped before it replaced anything: the old index is unchanged."""


_DISK_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")
_READ_ONLY = ("readonly database", "read-only file system", "permission denied")
_DAMAGED = ("file is not a database", "database disk image is malformed")


def _kind(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "full"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "read-only"
    text = str(exc).lower()
    for kind, needles in (("full", _DISK_FULL), ("read-only", _READ_ONLY), ("damaged", _DAMAGED)):
        if any(n in text for n in needles):
            return kind
    return None


LOW_DISK_BYTES = 64 * 2**20


def _disk_low(disk: Path | None) -> bool:
    try:
        return disk is not None and shutil.disk_usage(disk).free < LOW_DISK_BYTES
    except OSError:
        return False


@contextmanager
def store_errors(where: str, *, writing: bool = False, disk: Path | None = None) -> Iterator[None]:
    """Raise Chroma/SQLite/OS errors that mean a full disk, a read-only dir or a damaged store
    as RagPapersErrors naming ``where`` and the fix; anything else passes through. While
    ``writing``, an error Chroma does not explain (its compactor reports a full disk as
    "Failed to apply logs") counts as a full disk when ``disk`` has under 64 MB free."""
    try:
        yield
    except RagPapersError:
        raise
    except Exception as exc:  # Chroma's Rust layer raises its own types; sorted by message
        kind = _kind(exc)
        if kind is None and writing and _disk_low(disk):
            kind = "full"
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        if kind == "full":
            raise DiskFullError(
                f"disk full while writing the index at {where} ({detail}). What was written "
                "before stays; free space on that disk and run the same ingest again: it "
                "resumes where it stopped."
            ) from exc
        if kind == "read-only":
            raise ReadOnlyIndexError(
                f"the index at {where} is read-only for this process ({detail}). Reading "
                "works; to write, give this user write access to that folder, or set "
                "index_dir to a writable copy."
            ) from exc
        if kind == "damaged" and not writing:
            raise StoreDamagedError(
                f"the Chroma store at {where} is damaged ({detail}). It holds the vectors, "
                "so it is not rebuilt by itself: restore it from a backup, or move that folder "
                "away and ingest your files again (`rag-papers ingest FILES`)."
            ) from exc
        if kind == "damaged":
            raise StoreDamagedError(
                f"the Chroma store at {where} became unreadable while writing ({detail}); "
                "restore it from a backup, or move that folder away and ingest again."
            ) from exc
        raise
