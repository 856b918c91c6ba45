"""Config files and presets: the TOML that ``load_settings`` layers under the environment."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from rag_papers.core.errors import SettingsError

__all__ = ["PRESETS", "preset_values", "read_config_file"]

PRESETS = ("offline", "openai", "ollama", "llamacpp", "scifact")


def read_config_file(path: Path, what: str = "config file") -> dict[str, Any]:
    """The settings in a TOML file (flat, or under a [rag_papers] table)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{what} {path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{what} {path}: invalid TOML: {exc}") from None
    # Accept both a flat file and one with a [rag_papers] table.
    return dict(data.get("rag_papers", data))


def preset_values(name: str) -> dict[str, Any]:
    """The settings a bundled preset sets."""
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("rag_papers.presets").joinpath(f"{name}.toml").read_text()
    return dict(tomllib.loads(text))
