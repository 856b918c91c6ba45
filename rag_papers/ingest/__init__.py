"""Ingest: read paper files (loaders) and cut papers into chunks."""

__all__: list[str] = []
