"""Command-line front end: the rag-papers command (entry point ``rag_papers.cli.app:main``).

app (root app, global options, exit codes), state (State, user errors), options (shared
options), one module per command group (ingest, papers, query, serve, config) and the lazily
mounted ``eval`` sub-app (eval, eval_common, eval_run, eval_beir, eval_render).
"""

__all__: list[str] = []
