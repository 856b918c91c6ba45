"""The one base of every error a user can fix: bad settings, an unreadable input file, an
index built with other settings, an unreachable store or model, a broken prompt file. Front
ends show such errors as one line (the message says what and where), not a traceback."""

from __future__ import annotations

__all__ = ["FilterError", "MissingExtraError", "RagPapersError", "SettingsError"]


class RagPapersError(Exception):
    """An error the user can fix; its message names what is wrong and where."""


class MissingExtraError(RagPapersError, ImportError):
    """A feature whose optional dependencies are not installed; the message names the extra."""


class FilterError(RagPapersError, ValueError):
    """A llama-index metadata filter the engine cannot apply; the message names it.
    (Declared here, not beside the adapters, so it imports without llama-index.)"""


class SettingsError(RagPapersError, ValueError):
    """A config file, preset or value that cannot be used; the message says which and why."""
