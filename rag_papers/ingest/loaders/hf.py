"""Text copied from a Hugging Face papers page: a header, then title / abstract paragraphs.

The header ("new", "Subscribe", a date, ...) varies with what was copied, so it is not counted:
blocks are skipped until the first short single line followed by a long paragraph.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rag_papers.core.papers import Paper
from rag_papers.ingest.loaders.common import (
    LoaderError,
    RecordError,
    Rejected,
    decode_lines,
    first_bad_line,
    read_bytes,
)
from rag_papers.ingest.loaders.records import FieldKeys, build_paper

__all__ = ["Block", "blocks", "find_start", "is_abstract", "is_title", "parse_hf"]

# Titles on the page are one line of at most ~20 words; abstracts are 100-300 words. The
# thresholds leave a wide margin on both sides of what the sample shows (17 and 188 words).
MAX_TITLE_WORDS = 40
MAX_TITLE_CHARS = 400
MIN_ABSTRACT_WORDS = 25


@dataclass(slots=True)
class Block:
    """A paragraph: consecutive non-blank lines."""

    line: int  # 1-based line of its first line
    lines: list[str]

    @property
    def last(self) -> int:
        return self.line + len(self.lines) - 1

    @property
    def text(self) -> str:
        return " ".join(part.strip() for part in self.lines)


def blocks(lines: list[str]) -> list[Block]:
    found: list[Block] = []
    current: Block | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            current = None
        elif current is None:
            current = Block(number, [line])
            found.append(current)
        else:
            current.lines.append(line)
    return found


def is_title(block: Block) -> bool:
    text = block.text
    return (
        len(block.lines) == 1
        and len(text) <= MAX_TITLE_CHARS
        and len(text.split()) <= MAX_TITLE_WORDS
    )


def is_abstract(block: Block) -> bool:
    return len(block.text.split()) >= MIN_ABSTRACT_WORDS


def find_start(found: list[Block]) -> int | None:
    """Index of the first title block that is followed by an abstract, else None."""
    for i in range(len(found) - 1):
        if is_title(found[i]) and is_abstract(found[i + 1]):
            return i
    return None


def parse_hf(path: Path, keys: FieldKeys | None = None) -> Iterator[Paper | Rejected]:
    lines, bad = decode_lines(read_bytes(path))
    source = str(path)
    found = blocks(lines)
    if not found:
        return  # an empty file holds no papers
    i = find_start(found)
    if i is None:
        raise LoaderError(f"{path}: no title line followed by an abstract paragraph found")
    while i < len(found):
        block = found[i]
        after = found[i + 1] if i + 1 < len(found) else None
        if not is_title(block):
            # Resynchronise on the next title/abstract pair rather than pairing everything wrongly.
            yield Rejected(
                source, block.line, "a paragraph where a title line was expected", "title"
            )
            i += 1
            continue
        if after is None or not is_abstract(after):
            reason = (
                "no abstract after the title"
                if after is None
                else "title not followed by an abstract"
            )
            yield Rejected(source, block.line, reason, "abstract")
            i += 1
            continue
        i += 2
        if hit := first_bad_line(bad, block.line, after.last):
            yield Rejected(source, block.line, f"undecodable bytes (not UTF-8) on line {hit}")
            continue
        try:
            yield build_paper(source=source, line=block.line, title=block.text, abstract=after.text)
        except RecordError as exc:
            yield Rejected(source, block.line, exc.reason, exc.field)
