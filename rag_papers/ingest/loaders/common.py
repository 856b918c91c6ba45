"""Types shared by every loader, text cleaning, and tolerant file reading."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rag_papers.core.errors import RagPapersError
from rag_papers.core.papers import Paper
from rag_papers.core.specs import FORMATS

__all__ = [
    "FORMATS",
    "LoadResult",
    "LoaderError",
    "RecordError",
    "Rejected",
    "clean_text",
    "decode_lines",
    "first_bad_line",
    "iter_lines",
    "open_binary",
    "read_bytes",
    "strip_tex_braces",
]


class LoaderError(RagPapersError):
    """A whole file cannot be loaded (missing, unreadable, unknown or undetectable format)."""


class RecordError(ValueError):
    """One record is unusable; loaders turn it into a :class:`Rejected` and go on."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(slots=True)
class Rejected:
    """One skipped record: where it is and why."""

    source: str
    line: int
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}"
        if self.field:
            return f"{where}: field '{self.field}': {self.reason}"
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class LoadResult:
    """The papers of one file, plus what was skipped and why."""

    papers: list[Paper] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[Rejected] = field(default_factory=list)  # reason names the first occurrence


# --- text cleaning -------------------------------------------------------------------------

_SIMPLE_ESCAPE = re.compile(r"\\([%&_#$])")
# C0/C1 control characters other than whitespace: junk in titles, and unsafe in terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A brace directly after a control word (\emph{) or control symbol (\'{) is an argument: keep it.
_COMMAND_BEFORE = re.compile(r"\\(?:[A-Za-z]+|[^A-Za-z\s])\s*$")


def strip_tex_braces(text: str) -> str:
    """Drop TeX grouping braces ({BERT} -> BERT), keeping math ($...$), command arguments
    (\\emph{x}) and escaped braces (\\{), so no LaTeX is broken."""
    out: list[str] = []
    stack: list[bool] = []  # per open brace: was it kept?
    math = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i : i + 2])  # escaped char (\{, \$, \\) passes through as is
            i += 2
            continue
        if ch == "$":
            math = not math
            out.append(ch)
        elif ch == "{":
            keep = math or bool(_COMMAND_BEFORE.search("".join(out[-32:])))
            stack.append(keep)
            if keep:
                out.append(ch)
        elif ch == "}":
            keep = stack.pop() if stack else True  # an unbalanced brace is content
            if keep:
                out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def clean_text(value: str, *, braces: bool = False) -> str:
    """The one text cleaner of all loaders: collapse whitespace, unescape \\% \\& \\_ \\# \\$,
    and with ``braces`` (titles, authors) drop TeX grouping braces. Other LaTeX is kept."""
    text = _CONTROL.sub(" ", value)
    # A lone surrogate (from a JSON \\ud800 escape) cannot be encoded later: replace it.
    text = _SURROGATE.sub("\ufffd", text)
    if braces:
        text = strip_tex_braces(text)  # before unescaping, so \$ is not taken for math
    text = _SIMPLE_ESCAPE.sub(r"\1", text)
    return " ".join(text.split())


# --- reading -------------------------------------------------------------------------------


def open_binary(path: Path) -> BinaryIO:
    """The file opened for reading bytes, or a LoaderError that names it."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise LoaderError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoaderError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise LoaderError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or a LoaderError that names it."""
    with open_binary(path) as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise LoaderError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(1-based number, text) per line, streamed; text is None for a line that is not UTF-8."""
    with open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, 1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield number, None
        except OSError as exc:
            raise LoaderError(f"{path}: cannot read: {exc.strerror or exc}") from None


def decode_lines(data: bytes) -> tuple[list[str], set[int]]:
    """UTF-8 text split on '\\n' (line endings kept) and the 1-based numbers of lines that were
    not valid UTF-8. Bad lines are decoded with U+FFFD so one bad line does not lose the file;
    callers reject the records that touch them."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    last = len(raw_lines) - 1
    lines: list[str] = []
    bad: set[int] = set()
    for number, raw in enumerate(raw_lines):
        end = "" if number == last and not data.endswith(b"\n") else "\n"
        try:
            lines.append(raw.decode("utf-8") + end)
        except UnicodeDecodeError:
            bad.add(number + 1)
            lines.append(raw.decode("utf-8", errors="replace") + end)
    return lines, bad


def first_bad_line(bad: set[int], start: int, end: int) -> int | None:
    """The first undecodable line in [start, end] (1-based, inclusive), if any."""
    if not bad:
        return None
    hits = [n for n in bad if start <= n <= end]
    return min(hits) if hits else None
