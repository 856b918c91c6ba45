"""Retrieval: dense + BM25 search, fusion, filters, best sentences."""

__all__: list[str] = []
