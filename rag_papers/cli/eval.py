"""`rag-papers eval ...`: run a dataset, compare two runs, BEIR retrieval benchmarks.

Mounted lazily by rag_papers.cli.app; the commands (eval_run, eval_beir) import the harness
inside their bodies, so `rag-papers eval --help` is instant.
Needs the ``eval`` extra (ranx, matplotlib): ``pip install 'rag-papers[eval]'``; without it
``eval run`` and ``eval beir`` say so in one line (exit 3).
Exit codes: 0 fine, 1 a --fail-under threshold (or --fail-on-regression) was missed or a
question failed with an error, 2 a usage problem (bad option), 3 a bad input (dataset, run or
BEIR folder) or the eval extra missing.
"""

from __future__ import annotations

import typer

from rag_papers.cli.eval_beir import beir
from rag_papers.cli.eval_run import compare_cmd, run

__all__ = ["app", "main"]

app = typer.Typer(
    help="Evaluate retrieval and answers: run a question set, compare runs, BEIR benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("compare")(compare_cmd)
app.command("beir")(beir)


def main() -> None:
    """``python -m rag_papers.cli.eval``."""
    app()


if __name__ == "__main__":
    main()
