"""Chat front end: the terminal REPL."""

__all__: list[str] = []
