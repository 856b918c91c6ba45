"""Foundation: settings, the Paper record, text utilities, process environment."""

__all__: list[str] = []
