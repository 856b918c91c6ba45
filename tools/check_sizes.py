"""Fail when a module of the package grows past the size a reader can hold in mind."""

from __future__ import annotations

import sys
from pathlib import Path

LIMIT = 400  # lines per module (ARCHITECTURE.md)
ROOTS = ("rag_papers", "benchmarks")


def main() -> int:
    big = [
        (len(p.read_text(encoding="utf-8").splitlines()), p)
        for root in ROOTS
        for p in sorted(Path(root).rglob("*.py"))
    ]
    over = [(n, p) for n, p in big if n > LIMIT]
    for n, p in over:
        print(f"{p}: {n} lines (limit {LIMIT}): split it by concern")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
