"""``rag-papers config``: the effective settings, secrets masked, and where each came from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rag_papers.cli.options import JsonOpt
from rag_papers.cli.state import State, current_state, print_json

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = ["config_cmd", "mask_url", "masked_settings", "setting_sources"]

# Global options that set a setting directly, by setting name.
_OPTION_SETTINGS = ("index_dir", "chroma_url", "collection")


def setting_sources(state: State, settings: Settings) -> dict[str, str]:
    """Where each setting's value came from, by the precedence load_settings applies:
    option > environment > config file > preset > default."""
    from rag_papers import preset_values, read_config_file

    sources = dict.fromkeys(type(settings).model_fields, "default")
    config = state.config or os.environ.get("RAG_PAPERS_CONFIG") or None
    file_data: dict[str, Any] = read_config_file(Path(config), "config file") if config else {}
    preset = state.preset or file_data.get("preset") or os.environ.get("RAG_PAPERS_PRESET")
    if preset:
        for key in preset_values(preset):
            sources[key] = f"preset {preset}"
    for key in file_data:
        if key in sources:
            sources[key] = f"config {config}"
    env = {k.upper(): k for k in os.environ}
    for name, info in type(settings).model_fields.items():
        names = [f"RAG_PAPERS_{name.upper()}"]
        alias = info.validation_alias
        names += [c.upper() for c in getattr(alias, "choices", []) if isinstance(c, str)]
        if found := next((env[n] for n in names if n in env), None):
            sources[name] = f"env {found}"
    for name in _OPTION_SETTINGS:
        if getattr(state, name) is not None:
            sources[name] = f"option --{name.replace('_', '-')}"
    return sources


def mask_url(value: Any) -> Any:
    """A URL with its password replaced by ****; any other value unchanged."""
    # A URL may carry a password (https://user:pass@host): never print it.
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        cred, _, host = rest.rpartition("@")
        if ":" in cred:
            return f"{scheme}://{cred.split(':', 1)[0]}:****@{host}"
    return value


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values: secret fields come out masked by pydantic, passwords
    in URLs by ``mask_url``."""
    return {k: mask_url(v) for k, v in settings.model_dump(mode="json").items()}


def config_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    from rag_papers.terminal.render import render_settings

    state = current_state(ctx)
    settings = state.settings
    values = masked_settings(settings)
    sources = setting_sources(state, settings)
    derived = {
        "resolved_index_dir": str(settings.resolved_index_dir),
        "fingerprint": settings.fingerprint(),
    }
    if json_out:
        print_json({"settings": values, "sources": sources, **derived})
        return
    rows = [
        (
            name,
            json.dumps(v) if isinstance(v, dict | list) else "—" if v is None else str(v),
            sources.get(name, ""),
        )
        for name, v in values.items()
    ]
    rows += [(name, value, "derived") for name, value in derived.items()]
    render_settings(state.out, rows)
