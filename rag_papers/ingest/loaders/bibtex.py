"""BibTeX entries that carry an ``abstract`` field, parsed with bibtexparser 2.

LaTeX in names, titles and abstracts is decoded with pylatexenc (``M{\\"u}ller`` -> Müller,
``\\&`` -> &); math (``$...$``) and macros pylatexenc does not know are kept as written.
The paper id is the arXiv eprint, else the DOI, else the entry key (a reference manager's
label: weaker than either), else a title slug.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import bibtexparser
from bibtexparser.middlewares.names import (
    parse_single_name_into_parts,
    split_multiple_persons_names,
)
from bibtexparser.model import Entry, ParsingFailedBlock

from rag_papers.core.papers import Paper
from rag_papers.ingest.loaders.common import (
    LoaderError,
    RecordError,
    Rejected,
    clean_text,
    decode_lines,
    first_bad_line,
    read_bytes,
)
from rag_papers.ingest.loaders.records import (
    FieldKeys,
    as_categories,
    build_paper,
    extract_year,
)

__all__ = ["decode_latex", "parse_bibtex", "person_names"]

# Parse errors come back as Rejected records. Without a handler of its own, bibtexparser's log
# lines about them would also reach stderr through logging's last-resort handler.
logging.getLogger("bibtexparser").addHandler(logging.NullHandler())


# A bare % starts a LaTeX comment: it would cut the rest of the text off.
_BARE_PERCENT = re.compile(r"(?<!\\)%")


@cache
def _latex_to_text() -> Any:
    from pylatexenc.latex2text import (
        LatexNodes2Text,
        MacroTextSpec,
        get_default_latex_context_db,
    )

    context = get_default_latex_context_db().filter_context()  # a copy we may change
    # An unknown macro (\\sysname) is kept as written rather than dropped.
    context.set_unknown_macro_spec(
        MacroTextSpec("", simplify_repl=lambda node, **_: node.latex_verbatim())
    )
    return LatexNodes2Text(latex_context=context, math_mode="verbatim", strict_latex_spaces=True)


def decode_latex(text: str) -> str:
    """LaTeX accents, escapes and text macros -> Unicode; math and unknown macros kept."""
    if "\\" not in text:
        return text  # braces alone are left to clean_text
    try:
        return str(_latex_to_text().latex_to_text(_BARE_PERCENT.sub(r"\\%", text)))
    except Exception:  # pylatexenc is tolerant, but a text it chokes on is kept, not lost
        return text


def person_names(value: str) -> list[str]:
    """'Devlin, Jacob and Chang, Ming-Wei' -> ['Jacob Devlin', 'Ming-Wei Chang']."""
    names: list[str] = []
    for person in split_multiple_persons_names(value):
        try:
            names.append(parse_single_name_into_parts(person, strict=False).merge_first_name_first)
        except ValueError:
            names.append(person)  # an odd name is still better shown than dropped
    return [name for name in (clean_text(decode_latex(n), braces=True) for n in names) if name]


def _field(entry: Entry, key: str) -> str | None:
    found = entry.fields_dict.get(key)
    if found is None:
        return None
    return found.value if isinstance(found.value, str) else str(found.value)


def _arxiv(entry: Entry) -> str | None:
    # biblatex: eprint = {2301.00001}, eprinttype/archiveprefix = {arXiv}
    eprint = _field(entry, "eprint")
    kind = (_field(entry, "archiveprefix") or _field(entry, "eprinttype") or "").lower()
    if eprint and kind in ("", "arxiv"):
        return eprint
    return None


def _paper(entry: Entry, *, source: str, line: int) -> Paper:
    title = _field(entry, "title")
    if not title or not title.strip():
        raise RecordError("title", "missing")
    abstract = _field(entry, "abstract")
    if not abstract or not abstract.strip():
        raise RecordError("abstract", "missing")
    year_text = _field(entry, "year") or _field(entry, "date")
    keywords = _field(entry, "keywords")
    return build_paper(
        source=source,
        line=line,
        title=decode_latex(title),
        abstract=decode_latex(abstract),
        authors=person_names(_field(entry, "author") or ""),
        year=extract_year(year_text) if year_text else None,
        url=_field(entry, "url"),
        categories=as_categories(keywords, "keywords") if keywords else None,
        doi=_field(entry, "doi"),
        arxiv=_arxiv(entry),
        fallback_id=entry.key,
    )


def parse_bibtex(path: Path, keys: FieldKeys | None = None) -> Iterator[Paper | Rejected]:
    lines, bad = decode_lines(read_bytes(path))
    source = str(path)
    try:
        library = bibtexparser.parse_string("".join(lines))
    except Exception as exc:  # the splitter's own errors; one broken file must not crash a run
        raise LoaderError(f"{path}: cannot parse BibTeX: {exc}") from None
    for block in library.blocks:
        line = (block.start_line or 0) + 1  # bibtexparser counts lines from 0
        if isinstance(block, ParsingFailedBlock):
            entry = block.ignore_error_block
            if not isinstance(entry, Entry):
                yield Rejected(source, line, f"BibTeX error: {_reason(block.error)}")
                continue
            block = entry  # a duplicate key or field: the entry itself is readable
            line = (entry.start_line if entry.start_line is not None else line - 1) + 1
        if not isinstance(block, Entry):
            continue  # @string, @preamble, @comment
        last = line + (block.raw or "").count("\n")
        if hit := first_bad_line(bad, line, last):
            yield Rejected(source, line, f"undecodable bytes (not UTF-8) on line {hit}")
            continue
        try:
            yield _paper(block, source=source, line=line)
        except RecordError as exc:
            yield Rejected(source, line, exc.reason, exc.field)


def _reason(error: Exception) -> str:
    """bibtexparser's block errors keep their message in ``abort_reason``; str() is empty."""
    reason = str(getattr(error, "abort_reason", "") or error).strip()
    return reason or type(error).__name__
