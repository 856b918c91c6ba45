"""Command-line front end: the rag-papers command."""

__all__: list[str] = []
