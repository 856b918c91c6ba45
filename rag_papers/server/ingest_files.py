"""Which files an ingest may read, and what a client may learn about them.

A path ingest reads only regular files whose real path (symlinks resolved) lies inside one
of ``settings.ingest_roots``; none are configured by default, so the server ingests uploads
only. A refused path and a missing one get the same answer, so a client cannot probe the
server's disk. Reports and errors name a file by its path inside its root (an upload by its
own name), never by where it lies on the server; and a path ingest's loader errors keep
only their first clause, since loaders may quote the file (a CSV header row, a parser's
excerpt).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.server.errors import ApiError

if TYPE_CHECKING:
    from starlette.datastructures import UploadFile

    from rag_papers import Settings

__all__ = [
    "IngestFile",
    "public_source",
    "resolve_ingest_path",
    "safe_loader_message",
    "save_upload",
    "scrub_report",
]

ROOTS_HINT = (
    "set ingest_roots (RAG_PAPERS_INGEST_ROOTS='[\"/srv/papers\"]' or ingest_roots in the "
    "config file) to the folders the server may read; uploads (multipart 'file') work without it"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


class IngestFile:
    """A file to ingest: where it is, the name a client sees, and its temp dir (uploads)."""

    def __init__(self, path: Path, display: str, temp_dir: Path | None = None) -> None:
        self.path = path
        self.display = display
        self.temp_dir = temp_dir

    @property
    def is_upload(self) -> bool:
        return self.temp_dir is not None

    def cleanup(self) -> None:
        """Uploads are deleted once ingested: the index keeps the papers, not the file."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _roots(settings: Settings) -> list[Path]:
    out = []
    for root in settings.ingest_roots:
        try:
            out.append(Path(root).expanduser().resolve(strict=True))
        except (OSError, RuntimeError):
            continue  # a root that does not exist holds nothing
    return out


def _inside(path: Path, roots: list[Path]) -> Path | None:
    return next((root for root in roots if path.is_relative_to(root)), None)


def resolve_ingest_path(raw: str, settings: Settings) -> IngestFile:
    """The file a path ingest may read, or an ApiError (403 no roots, 404, 413)."""
    if not settings.ingest_roots:
        raise ApiError(
            403,
            f"this server ingests no paths from its disk: {ROOTS_HINT}",
            "permission_error",
            param="path",
            code="ingest_roots_unset",
        )
    denied = ApiError(
        404,
        # The same words for every refusal, without even the path: nothing to compare.
        "path: no regular file by that name inside the server's ingest roots",
        "not_found_error",
        param="path",
        code="path_not_found",
    )
    roots = _roots(settings)
    given = Path(raw)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    for candidate in candidates:
        try:
            real = candidate.resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError, ValueError):  # missing, a loop, a NUL byte...
            continue
        root = _inside(real, roots)
        if root is None or not stat.S_ISREG(info.st_mode) or not os.access(real, os.R_OK):
            continue
        if info.st_size > settings.max_ingest_file_bytes:
            raise _too_large(settings, param="path")
        return IngestFile(real, real.relative_to(root).as_posix())
    raise denied


def _too_large(settings: Settings, param: str) -> ApiError:
    return ApiError(
        413,
        f"the file is larger than the server's limit of {settings.max_ingest_file_bytes} "
        "bytes (max_ingest_file_bytes)",
        "request_too_large",
        param=param,
        code="file_too_large",
    )


def save_upload(upload: UploadFile, settings: Settings) -> IngestFile:
    """Copy an upload into a private temp dir under <data_dir>/uploads, keeping the client's
    file name (sanitised: its extension drives format detection). Blocking: run in a thread."""
    name = _UNSAFE.sub("_", Path(upload.filename or "upload").name).strip("._")[:100]
    name = name or "upload"
    base = settings.data_dir / "uploads"
    base.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=base))
    dest = temp_dir / name
    limit = settings.max_ingest_file_bytes
    written = 0
    try:
        upload.file.seek(0)
        with dest.open("wb") as fh:
            while chunk := upload.file.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise _too_large(settings, param="file")
                fh.write(chunk)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return IngestFile(dest, name, temp_dir)


def safe_loader_message(message: str, file: IngestFile) -> str:
    """A loader error as a client may see it: the file by its public name and, for a path
    ingest, only the first clause (what went wrong, not what the file says)."""
    text = message.replace(str(file.path), file.display)
    if file.is_upload:
        return text  # the client sent the content itself
    prefix = f"{file.display}: "
    rest = text.removeprefix(prefix)
    first = re.split(r" \(|: |; ", rest, maxsplit=1)[0]
    return f"{prefix}{first}"


def scrub_report(report: dict[str, Any], file: IngestFile) -> dict[str, Any]:
    """The report's rejected/duplicate lines, naming the file by its public name."""
    real = str(file.path)
    for key in ("rejected", "duplicates"):
        report[key] = [line.replace(real, file.display) for line in report.get(key, [])]
    return report


def public_source(source: str, settings: Settings) -> str:
    """A paper's source file as clients see it: relative to its ingest root, else its name."""
    if not source:
        return ""
    path = Path(source)
    for root in _roots(settings):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name
