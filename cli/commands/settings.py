"""Options shared by the commands that need settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from claude_bridge.proxy.config import Settings, load_settings

CONFIG_HELP = "TOML config file (default: ~/.config/claude-bridge/config.toml)."
CONFIG_OPTION = typer.Option(None, "--config", "-c", help=CONFIG_HELP)
CLAUDE_HELP = "Claude Code's executable (default: `claude` on PATH)."


def settings_from(config: Path | None, *, keys: bool = True, **flags: Any) -> Settings:
    """The settings, `flags` on top; `keys=False` when no upstream will be called."""
    return load_settings(flags=flags, config_path=config, keys=keys)
