"""Answering: the Answer contract, citation markers, support check, extractive answers,
prompts and LLM backends."""

__all__: list[str] = []
