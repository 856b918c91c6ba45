"""Options several commands share, and the parsers of their values.

Choices and help derive from the library's single declarations (``rag_papers.MODES`` through
the ``Mode`` literal, ``LLM_SPEC_HELP``, ``FORMATS``), so a new mode or format shows up here
without an edit. Only ``rag_papers.core.specs`` is loaded: ``--help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, cast

import typer

from rag_papers import FORMATS, LLM_SPEC_HELP, MODES, AnswerStyle, Mode

if TYPE_CHECKING:
    from rag_papers import Filters

__all__ = [
    "MAX_K",
    "MAX_ROWS",
    "YEAR_RANGE",
    "AnswerStyleOpt",
    "AuthorOpt",
    "CategoryOpt",
    "FieldOpt",
    "FormatOpt",
    "JsonOpt",
    "KOpt",
    "LlmOpt",
    "ModeOpt",
    "ModesOpt",
    "YearOpt",
    "parse_fields",
    "parse_filters",
    "parse_modes",
]

# Bounds on numbers that reach SQLite, Chroma or a prompt: beyond them an option is a
# usage error (one line), not an overflow deep in the store.
MAX_K = 1000
MAX_ROWS = 10**9
YEAR_RANGE = (1, 9999)

KOpt = Annotated[
    int | None, typer.Option("-k", "--top-k", min=1, max=MAX_K, help="Papers to retrieve.")
]
AnswerStyleOpt = Annotated[
    AnswerStyle | None,
    typer.Option(
        "--answer-style",
        help="LLM answers: grounded (claims with verbatim quotes, each checked), free (prose "
        "with [n]) or auto (default: settings).",
    ),
]
# Typer turns the Mode literal into the choice list (dense|bm25|hybrid) and checks it.
ModeOpt = Annotated[
    Mode | None, typer.Option("--mode", help="Retrieval mode (default: from settings).")
]
ModesOpt = Annotated[
    list[str] | None,
    typer.Option("--mode", help=f"{', '.join(MODES)} (repeatable; default all of them)."),
]
YearOpt = Annotated[
    str | None,
    typer.Option("--year", metavar="FROM:TO", help="Year or range: 2024, 2023:2025, 2023:."),
]
AuthorOpt = Annotated[
    str | None, typer.Option("--author", metavar="NAME", help="Author name contains NAME.")
]
CategoryOpt = Annotated[
    str | None, typer.Option("--category", metavar="C", help="Exact category, e.g. cs.CL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
LlmOpt = Annotated[
    str | None,
    typer.Option("--llm", metavar="SPEC", help=f"{LLM_SPEC_HELP} (default: settings)."),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="F",
        help=f"{', '.join(FORMATS)} (default: detected per file).",
    ),
]
FieldOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--field",
        metavar="OURS=THEIRS",
        help="Read our field from another key (json/jsonl/csv), e.g. abstract=summary.",
    ),
]


def parse_filters(year: str | None, author: str | None, category: str | None) -> Filters | None:
    """The metadata filters of --year/--author/--category; None when there are none."""
    from rag_papers import Filters

    try:
        year_min, year_max = Filters.parse_years(year)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--year") from None
    lo, hi = YEAR_RANGE
    for value in (year_min, year_max):
        if value is not None and not lo <= value <= hi:
            raise typer.BadParameter(
                f"year range {year!r}: {value} is not a year from {lo} to {hi}",
                param_hint="--year",
            )
    if year_min is not None and year_max is not None and year_min > year_max:
        raise typer.BadParameter(
            f"year range {year!r}: {year_min} is after {year_max} (write FROM:TO)",
            param_hint="--year",
        )
    filters = Filters(year_min=year_min, year_max=year_max, author=author, category=category)
    return None if filters.empty else filters


def parse_fields(pairs: Sequence[str]) -> dict[str, str] | None:
    """--field OURS=THEIRS pairs as a mapping, checked against the known fields."""
    if not pairs:
        return None
    fields: dict[str, str] = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise typer.BadParameter(f"{pair!r}: expected OURS=THEIRS", param_hint="--field")
        fields[ours.strip()] = theirs.strip()
    from rag_papers import resolve_fields

    try:
        resolve_fields(fields)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--field") from None
    return fields


def parse_modes(modes: Sequence[str] | None) -> list[Mode]:
    """Repeated --mode values, deduplicated in order; all modes when none is given."""
    chosen = list(dict.fromkeys(modes or MODES))
    if bad := [m for m in chosen if m not in MODES]:
        raise typer.BadParameter(
            f"{', '.join(bad)}: choose from {', '.join(MODES)}", param_hint="--mode"
        )
    return [cast("Mode", m) for m in chosen]
