"""Bounds on the numbers a caller may pass to the store (years, page sizes, offsets, k).

Checked where the engine receives them, so a huge value is one clear error naming the
parameter, not an OverflowError from SQLite or a 500 from Chroma.
"""

from __future__ import annotations

from rag_papers.core.errors import RagPapersError

__all__ = [
    "MAX_K",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "MAX_YEAR",
    "BoundsError",
    "check_int",
    "check_search",
    "check_year",
]

MAX_YEAR = 9999
MAX_LIMIT = 100_000  # papers per page
MAX_OFFSET = 2**53  # far beyond any index, well inside SQLite's 64-bit integers
MAX_K = 1000  # papers per search (Settings.max_k caps what HTTP clients may ask for)


class BoundsError(RagPapersError, ValueError):
    """A number outside the range the parameter allows."""


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else BoundsError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BoundsError(f"{name}: expected a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise BoundsError(f"{name}: {value} is out of range (allowed: {low} to {high:,})")
    return value


def check_year(name: str, value: int | None) -> int | None:
    """A year filter (None: no bound) in 0..MAX_YEAR."""
    return None if value is None else check_int(name, value, 0, MAX_YEAR)


def check_search(k: int | None, year_min: int | None = None, year_max: int | None = None) -> None:
    """A search's k (None: the default) and filter years."""
    if k is not None:
        check_int("k", k, 1, MAX_K)
    check_year("year_min", year_min)
    check_year("year_max", year_max)
