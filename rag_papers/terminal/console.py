"""The rich consoles every terminal front end writes to.

On a terminal, a plain rich Console. Anywhere else (a pipe, a file) rich would still pad
table cells to the column width and wrap long lines at 80 columns: there the console does
not wrap (``soft_wrap``) and its stream drops the spaces at the end of each line, so
``rag-papers search q > out.txt`` holds the text and nothing else.
"""

from __future__ import annotations

import io
import sys
from typing import TextIO, cast

from rich.console import Console

__all__ = ["TrimmedLines", "make_console"]


class TrimmedLines(io.TextIOBase):
    """A text stream that drops the spaces at the end of every line it passes on.

    Only a trailing run of spaces is held back (until the next write shows whether a line
    end follows), so streamed answer text still appears as it is written.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._pending = ""  # spaces written last, not yet known to end a line

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        last = lines[-1].rstrip(" ")
        self._pending = lines[-1][len(last) :]
        self._stream.write("\n".join([line.rstrip(" ") for line in lines[:-1]] + [last]))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    def fileno(self) -> int:
        return self._stream.fileno()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


def make_console(*, stderr: bool = False, markup: bool = False) -> Console:
    """A console on stdout (or stderr): plain on a terminal; elsewhere unwrapped and
    without trailing spaces. ``markup``: only for our own fixed messages, never for text
    from papers or models (titles hold brackets such as "[1]")."""
    stream = sys.stderr if stderr else sys.stdout
    if _is_terminal(stream):
        return Console(stderr=stderr, highlight=False, markup=markup)
    trimmed = cast("TextIO", TrimmedLines(stream))
    return Console(file=trimmed, highlight=False, markup=markup, soft_wrap=True)
