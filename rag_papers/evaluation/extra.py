"""The ``eval`` extra: the libraries only the eval harness needs, whether they are
installed, and where they may write.

``pip install rag-papers`` leaves out ranx (IR metrics; it pulls numba, llvmlite, scipy and
pandas) and matplotlib (report plots); ``pip install 'rag-papers[eval]'`` adds them. Both are
imported only inside the functions that use them, after ``prepare_eval_environment`` has
pointed their own folders away from the user's home.
"""

from __future__ import annotations

import importlib.util

from rag_papers.core.env import prepare_eval_environment

__all__ = ["EVAL_EXTRA_INSTALL", "EVAL_MODULES", "missing_eval_modules", "prepare_eval_environment"]

EVAL_MODULES = ("ranx", "matplotlib")
EVAL_EXTRA_INSTALL = "pip install 'rag-papers[eval]'"


def missing_eval_modules() -> list[str]:
    """The eval extra's modules that are not installed (found without importing them)."""
    return [name for name in EVAL_MODULES if importlib.util.find_spec(name) is None]
