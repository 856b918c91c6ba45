"""Engine: PaperQA, the one door every front end goes through."""

__all__: list[str] = []
