"""``python -m rag_papers``: the same command line as ``rag-papers``."""

from rag_papers.cli.app import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
