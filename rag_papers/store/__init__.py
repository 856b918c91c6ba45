"""Store: the Chroma index, its catalog and BM25 sidecar, and the embedders."""

__all__: list[str] = []
