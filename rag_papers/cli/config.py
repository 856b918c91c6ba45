"""``rag-papers config``: the effective settings, secrets masked, and where each came from;
``rag-papers config path``: where the user's own config file goes.

The settings file read is the one named by ``--config``, else $RAG_PAPERS_CONFIG, else the
user's ``config.toml`` in the user config dir (``~/.config/rag-papers/config.toml`` on
Linux) when it exists. The environment overrides the file, options override both.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import typer

from rag_papers.cli.options import JsonOpt
from rag_papers.cli.state import State, current_state, print_json

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = [
    "config_app",
    "config_cmd",
    "config_path",
    "mask_url",
    "masked_settings",
    "setting_sources",
]

# Global options that set a setting directly, by setting name.
_OPTION_SETTINGS = ("index_dir", "chroma_url", "collection")


def setting_sources(state: State, settings: Settings) -> dict[str, str]:
    """Where each setting's value came from, by the precedence load_settings applies:
    option > environment > config file > preset > default."""
    from rag_papers import preset_values, read_config_file

    sources = dict.fromkeys(type(settings).model_fields, "default")
    config = type(settings).config_file_in_use(state.config)
    file_data: dict[str, Any] = read_config_file(config, "config file") if config else {}
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


config_app = typer.Typer(
    help="Print the effective settings (secrets masked) and where each came from; "
    "`config path`: where the user's config file goes.",
    invoke_without_command=True,
)


@config_app.callback()
def config_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Print the effective settings (secrets masked) and where each came from.

    Settings come from: defaults < --preset < the config file < RAG_PAPERS_* variables <
    options. The config file: --config, else $RAG_PAPERS_CONFIG, else the user's
    config.toml (see `rag-papers config path`) when it exists.
    """
    from rag_papers.terminal.render import render_settings

    if ctx.invoked_subcommand is not None:
        return
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


@config_app.command("path")
def config_path(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Print where the user's config file goes (read when present and no --config or
    $RAG_PAPERS_CONFIG names another), and on stderr whether it exists and is in use."""
    from rag_papers import Settings

    state = current_state(ctx)
    user = Settings.user_config_file()
    in_use = Settings.config_file_in_use(state.config)
    if json_out:
        print_json(
            {
                "user_config_file": str(user),
                "exists": user.is_file(),
                "in_use": None if in_use is None else str(in_use),
            }
        )
        return
    print(user)
    exists = "exists" if user.is_file() else "not created yet"
    if in_use is None:
        state.notify(f"({exists}; no config file is read)")
    else:
        state.notify(f"({exists}; in use: {'this one' if in_use == user else in_use})")
