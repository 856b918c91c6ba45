"""HTTP front end: FastAPI app, own API and an OpenAI-compatible API."""

__all__: list[str] = []
