"""`claude-bridge config`: write a starter config file, show the effective settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomli_w
import typer
from rich.markup import escape

from claude_bridge.proxy.config import (
    TOML_ONLY,
    config_template,
    default_config_path,
    load_settings,
)

from ..console import stderr, stdout
from .settings import CONFIG_OPTION, settings_from

app = typer.Typer(
    help="Write or show the configuration.",
    no_args_is_help=True,
    rich_markup_mode=None,  # as the main app's
)


def init(
    path: Path = typer.Argument(None, help="Where to write (default: the standard location)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config file: every setting with its meaning, commented out at
    its default unless the environment or .env sets it (keys stay in the environment).

    Example:

        claude-bridge config init && $EDITOR ~/.config/claude-bridge/config.toml
    """
    target = path or default_config_path()
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to overwrite)")
    text = config_template(settings_from(None, keys=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    stderr.print(f"wrote {escape(str(target))}", highlight=False)


class Format(StrEnum):
    auto = "auto"
    text = "text"
    json = "json"


def show(
    config: Path = CONFIG_OPTION,
    output: Format = typer.Option(
        Format.auto,
        "--format",
        help="text: TOML, each value with where it came from; json: the values alone; auto: "
        "text on a terminal, else json.",
    ),
) -> None:
    """Print the effective settings, secrets masked, and where each came from (a flag, the
    environment, .env, the config file, or the default).

    Example:

        BIG_MODEL=gpt-4.1 claude-bridge config show
    """
    sources: dict[str, str] = {}
    settings = load_settings(config_path=config, sources=sources, keys=False)
    if output is Format.json or (output is Format.auto and not stdout.is_terminal):
        typer.echo(json.dumps(settings.public(), indent=2))
    else:
        typer.echo(settings_text(settings.public(), sources), nl=False)


def settings_text(public: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    """The settings as TOML, each with a comment saying where its value came from."""
    rows: list[tuple[str, str]] = []
    tables: list[str] = []
    for name, value in public.items():
        origin = sources.get(name, "default")
        if name in TOML_ONLY:
            if value:
                toml = tomli_w.dumps({name: _without_unset(value)})
                tables.append(f"# {name}: from {origin}\n{toml}")
            continue
        line = f"# {name}: unset" if value is None else tomli_w.dumps({name: value}).strip()
        rows.append((line, "default" if origin == "default" else f"from {origin}"))
    width = max(len(line) for line, _ in rows)
    text = "".join(f"{line.ljust(width)}  # {origin}\n" for line, origin in rows)
    return text + "".join(f"\n{table}" for table in tables)


def _without_unset(value: Any) -> Any:
    """`value` without the None entries of its tables, which TOML cannot write."""
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_unset(item) for item in value]
    return value
