"""CSV and TSV with a header row, including the Kaggle arXiv metadata snapshot."""

from __future__ import annotations

import csv
from collections.abc import Iterator
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
from rag_papers.ingest.loaders.records import FieldKeys, paper_from_record

__all__ = ["parse_csv"]


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    if "," not in header:
        for candidate in ("\t", ";"):
            if candidate in header:
                return candidate
    return ","


def _check_header(path: Path, header: list[str], keys: FieldKeys) -> None:
    # Without a title or abstract column every row would be rejected: say it once instead.
    columns = {name.strip().lower() for name in header}
    for field in ("title", "abstract"):
        if not any(key.lower() in columns for key in keys[field]):
            looked = ", ".join(keys[field])
            shown = ", ".join(h.strip() for h in header[:20])
            raise LoaderError(
                f"{path}: no column for {field} (looked for {looked}; columns: {shown})"
            )


def parse_csv(path: Path, keys: FieldKeys) -> Iterator[Paper | Rejected]:
    lines, bad = decode_lines(read_bytes(path))
    source = str(path)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return  # an empty file holds no papers
    reader = csv.reader(lines, delimiter=_delimiter(path, first))
    header: list[str] | None = None
    consumed = 0  # lines the reader has used up: a record starts on the line after
    while True:
        start = consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            consumed = reader.line_num
            yield Rejected(source, start, f"CSV error: {exc}")
            continue
        consumed = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            _check_header(path, header, keys)
            continue
        if hit := first_bad_line(bad, start, consumed):
            yield Rejected(source, start, f"undecodable bytes (not UTF-8) on line {hit}")
            continue
        if len(row) != len(header):
            # Usually a broken quote that swallowed or split fields: the values cannot be trusted.
            yield Rejected(source, start, f"expected {len(header)} columns, got {len(row)}")
            continue
        try:
            yield paper_from_record(
                dict(zip(header, row, strict=True)), keys=keys, source=source, line=start
            )
        except RecordError as exc:
            yield Rejected(source, start, exc.reason, exc.field)
