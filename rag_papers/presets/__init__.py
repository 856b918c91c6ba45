"""Bundled settings presets (TOML files), loaded by rag_papers.core.settings."""

__all__: list[str] = []
