"""The one base of every error a user can fix: bad settings, an unreadable input file, an
index built with other settings, an unreachable store or model, a broken prompt file. Front
ends show such errors as one line (the message says what and where), not a traceback."""

from __future__ import annotations

__all__ = ["RagPapersError"]


class RagPapersError(Exception):
    """An error the user can fix; its message names what is wrong and where."""
