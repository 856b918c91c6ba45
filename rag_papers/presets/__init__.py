"""Bundled settings presets (TOML files), loaded by rag_papers.settings."""

__all__: list[str] = []
