"""rag_papers: question answering over paper abstracts, with checked citations."""

__version__ = "0.1.0"
__all__ = ["__version__"]
