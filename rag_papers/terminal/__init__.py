"""Terminal rendering (rich) shared by the CLI and the chat REPL."""

__all__: list[str] = []
