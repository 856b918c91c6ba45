"""JSON (a top-level array, or an object holding a list of records) and JSON Lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_papers.core.papers import Paper
from rag_papers.ingest.loaders.common import (
    LoaderError,
    RecordError,
    Rejected,
    decode_lines,
    first_bad_line,
    iter_lines,
    read_bytes,
)
from rag_papers.ingest.loaders.records import FieldKeys, paper_from_record

__all__ = ["LIST_KEYS", "parse_json", "parse_jsonl"]

# Keys under which an object wrapper usually keeps its records, in order of preference.
LIST_KEYS = ("papers", "records", "entries", "data", "items", "results", "documents", "articles")

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# What json raises besides JSONDecodeError: huge ints (ValueError) and deep nesting.
_JSON_ERRORS = (ValueError, RecursionError)


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _walk_array(text: str, pos: int) -> tuple[list[tuple[int, int, Any]], int]:
    """Decode the array starting at text[pos] == '[' element by element, so each element
    keeps its offsets (json.loads forgets where things were). Returns (start, end, value)."""
    items: list[tuple[int, int, Any]] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, end, value))
        pos = _skip(text, end)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif text.startswith("]", pos):
            return items, pos + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)


def _walk_object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    """Decode the object at text[pos] == '{'; list values become [(start, end, value)]."""
    members: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        return members, pos + 1
    while True:
        if not text.startswith('"', pos):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, pos
            )
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        pos = _skip(text, pos + 1)
        if text.startswith("[", pos):
            members[key], pos = _walk_array(text, pos)
        else:
            members[key], pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif text.startswith("}", pos):
            return members, pos + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, tuple) for v in value)


def _records(path: Path, text: str) -> list[tuple[int, int, Any]]:
    """The (start, end, record) items of a JSON document, or LoaderError."""
    start = _skip(text, 0)
    try:
        if text.startswith("[", start):
            items, end = _walk_array(text, start)
        elif text.startswith("{", start):
            members, end = _walk_object(text, start)
            items = _pick_list(path, members, start, end)
        else:
            _, end = _DECODER.raw_decode(text, start)  # raises for anything not JSON
            raise LoaderError(f"{path}: expected a JSON array or object of paper records")
        if _skip(text, end) != len(text):
            raise json.JSONDecodeError("Extra data", text, _skip(text, end))
    except json.JSONDecodeError as exc:
        raise LoaderError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except _JSON_ERRORS as exc:
        raise LoaderError(f"{path}: invalid JSON: {exc}") from None
    return items


def _pick_list(
    path: Path, members: dict[str, Any], start: int, end: int
) -> list[tuple[int, int, Any]]:
    lists = {k: v for k, v in members.items() if _is_record_list(v)}
    for key in LIST_KEYS:
        if key in lists:
            return lists[key]
    if "title" in members:
        # A single record on its own; turn the walked lists back into plain values.
        plain = {
            k: [v for _, _, v in val] if _is_record_list(val) else val for k, val in members.items()
        }
        return [(start, end, plain)]
    of_dicts = [v for v in lists.values() if v and any(isinstance(x, dict) for _, _, x in v)]
    if len(of_dicts) == 1:
        return of_dicts[0]
    raise LoaderError(
        f"{path}: no list of records (expected a top-level array or an object with one of "
        f"{', '.join(LIST_KEYS)})"
    )


def parse_json(path: Path, keys: FieldKeys) -> Iterator[Paper | Rejected]:
    lines, bad = decode_lines(read_bytes(path))
    text = "".join(lines)
    source = str(path)
    line, seen = 1, 0  # offsets only grow: count newlines incrementally
    for start, end, record in _records(path, text):
        line += text.count("\n", seen, start)
        seen = start
        last = line + text.count("\n", start, end)
        yield _convert(record, keys=keys, source=source, line=line, bad=bad, last=last)


def parse_jsonl(path: Path, keys: FieldKeys) -> Iterator[Paper | Rejected]:
    source = str(path)
    for number, raw in iter_lines(path):
        if raw is None:
            yield Rejected(source, number, "undecodable bytes (not UTF-8)")
            continue
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except _JSON_ERRORS as exc:
            yield Rejected(source, number, f"invalid JSON: {_short(exc)}")
            continue
        yield _convert(record, keys=keys, source=source, line=number)


def _short(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    return str(exc)[:200] or type(exc).__name__


def _convert(
    record: Any,
    *,
    keys: FieldKeys,
    source: str,
    line: int,
    bad: set[int] | None = None,
    last: int | None = None,
) -> Paper | Rejected:
    if bad and (hit := first_bad_line(bad, line, last or line)):
        return Rejected(source, line, f"undecodable bytes (not UTF-8) on line {hit}")
    if not isinstance(record, dict):
        return Rejected(source, line, f"expected a JSON object, got {type(record).__name__}")
    try:
        return paper_from_record(record, keys=keys, source=source, line=line)
    except RecordError as exc:
        return Rejected(source, line, exc.reason, exc.field)
