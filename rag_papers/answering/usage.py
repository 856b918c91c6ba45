"""Token usage and cost of one LLM call: from the API when it reports them, else counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag_papers.answering.contract import Usage
from rag_papers.core.text import count_tokens

if TYPE_CHECKING:
    from rag_papers.answering.llms import Completion
    from rag_papers.core.settings import Settings

__all__ = ["TOKENS_PER_MESSAGE", "count_usage"]

# Tokens tiktoken cannot see per chat message (role and separators), when the API reports none.
TOKENS_PER_MESSAGE = 4


def count_usage(
    settings: Settings, model: str, messages: list[dict[str, str]], completion: Completion
) -> Usage:
    """Tokens (from the API, else counted with tiktoken) and cost per settings.prices."""
    if completion.prompt_tokens is not None and completion.completion_tokens is not None:
        prompt, out, by = completion.prompt_tokens, completion.completion_tokens, "api"
    else:
        prompt = sum(
            count_tokens(m["content"], settings.tokenizer) + TOKENS_PER_MESSAGE for m in messages
        )
        out, by = count_tokens(completion.text, settings.tokenizer), "tiktoken"
    price_in, price_out = settings.prices.get(model, (0.0, 0.0))
    cost = (prompt * price_in + out * price_out) / 1_000_000
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=out,
        total_tokens=prompt + out,
        cost_usd=round(cost, 6),
        counted_by=by,  # type: ignore[arg-type]
    )
