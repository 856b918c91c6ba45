"""Read-only index dirs: search, ask, ``papers`` and ``stats`` work; writes are refused.

Chroma's PersistentClient cannot open a store it may not write: its SQLite layer runs
migrations and takes write locks on open ("attempt to write a readonly database"), and it
has no read-only flag. So a read-only index dir is read from a private snapshot: its
``chroma`` and ``sidecar`` folders are copied into a temporary folder (removed when the index
is closed or the process ends) and opened there. The catalog alone (``papers list/show``)
is read in place, opened by SQLite read-only (see Catalog(read_only=True)): no copy.
A copy costs about a second per few hundred MB of index; writes (ingest, rebuild) raise
ReadOnlyIndexError naming the dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from rag_papers.store.errors import ReadOnlyIndexError

__all__ = ["ensure_index_dir", "snapshot"]

log = logging.getLogger("rag_papers.store")


def ensure_index_dir(root: Path) -> bool:
    """Create ``root`` if needed; True when this process may write it, False when it is
    there but read-only. ReadOnlyIndexError when it is absent and cannot be made."""
    if root.is_dir():
        # os.access honours a read-only mount (EROFS) as well as permissions; for root it
        # is True on a chmod-ed folder, and root can indeed write there.
        return os.access(root, os.W_OK | os.X_OK)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReadOnlyIndexError(
            f"cannot create the index dir {root}: {exc.strerror or exc}. Set index_dir "
            "(or --index-dir) to a folder this user can write."
        ) from None
    return True


def snapshot(root: Path) -> Path:
    """A writable private copy of the index in ``root``; the caller removes it."""
    tmp = Path(tempfile.mkdtemp(prefix="rag-papers-readonly-"))
    try:
        for part in ("chroma", "sidecar"):
            if (root / part).is_dir():
                shutil.copytree(root / part, tmp / part, copy_function=shutil.copyfile)
        for folder, dirs, _files in os.walk(tmp):
            for name in dirs:  # copytree copies the source's read-only modes onto folders
                os.chmod(Path(folder) / name, 0o700)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReadOnlyIndexError(
            f"the index dir {root} is read-only and could not be copied for reading "
            f"({exc.strerror or exc}); make it writable or free space in {tempfile.gettempdir()}"
        ) from None
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    log.info("index dir %s is read-only: reading a copy (%.1f MB) in %s", root, size / 1e6, tmp)
    return tmp
