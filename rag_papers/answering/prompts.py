"""Prompt templates as files (prompts/ in the repo, rag_papers/_prompts in the wheel)."""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rag_papers.core.errors import RagPapersError

__all__ = ["PROMPT_VARIABLES", "Prompt", "PromptError", "load_prompt"]

# The variables each prompt must use, no more and no fewer: checked at load time.
PROMPT_VARIABLES: dict[str, frozenset[str]] = {
    "system": frozenset({"abstain_phrase"}),
    "answer": frozenset({"sources", "question"}),
    "condense": frozenset({"history", "question"}),
    "grounded_system": frozenset(),
    "grounded": frozenset({"sources", "question"}),
}


class PromptError(RagPapersError, ValueError):
    """A prompt file that is missing or uses the wrong variables."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    template: str
    path: str

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]

    def render(self, **values: str) -> str:
        return self.template.format(**values)


def _builtin_dir() -> Path:
    packaged = resources.files("rag_papers").joinpath("_prompts")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "prompts"  # source checkout


def load_prompt(name: str, override: Path | None = None) -> Prompt:
    if name not in PROMPT_VARIABLES:
        raise PromptError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_VARIABLES)}")
    path = override or _builtin_dir() / f"{name}.md"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"prompt {name!r}: cannot read {path}: {exc.strerror}") from None
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise PromptError(f"prompt {name!r} in {path}: bad template: {exc}") from None
    wanted = PROMPT_VARIABLES[name]
    if used != wanted:
        missing = ", ".join(sorted(wanted - used)) or "none"
        extra = ", ".join(sorted(used - wanted)) or "none"
        raise PromptError(
            f"prompt {name!r} in {path}: variables must be {sorted(wanted)}; "
            f"missing: {missing}; unknown: {extra} (write literal braces as {{{{ }}}})"
        )
    return Prompt(name=name, template=text.strip() + "\n", path=str(path))
