"""Bundled data: the sample corpus and the embedding tokenizer (package data only)."""

__all__: list[str] = []
