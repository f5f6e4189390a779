"""`claude-bridge code [CLAUDE ARGS...]`: Claude Code through this configuration's proxy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from claude_bridge.proxy import launch
from claude_bridge.proxy.config import load_settings

from ..console import stderr
from .settings import CLAUDE_HELP, CONFIG_HELP

CONTEXT = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "allow_interspersed_args": False,
}
"""Claude Code's arguments pass through untouched: ours come first, and the first argument that
is not ours starts Claude Code's (`-c`, `-p` are Claude Code's)."""


def code(
    ctx: typer.Context,
    claude: str | None = typer.Option(None, "--claude", help=CLAUDE_HELP),
    print_env: bool = typer.Option(
        False,
        "--print-env",
        help="Only print the exports that point Claude Code at a running `serve` of this "
        'configuration, for `eval "$(claude-bridge code --print-env)"`.',
    ),
    # No `-c`: that is Claude Code's `--continue`.
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    log_file: Path | None = typer.Option(
        None,
        "--log-file",
        dir_okay=False,
        help="The started proxy's JSON log (default: ~/.local/state/claude-bridge/code.log).",
    ),
) -> None:
    """Run Claude Code through claude-bridge.

    Uses the `serve` of this configuration if one is running, else starts the proxy in the
    background on a free loopback port with a token made for this run; then runs `claude` with
    the arguments given. Its exit code is this command's; a proxy started here stops with it.

    Example:

        claude-bridge code -p "explain this repository"
    """
    settings = load_settings(config_path=config)
    if print_env:
        text, running = launch.print_env(settings)
        if not running:
            stderr.print(
                f"warning: no `claude-bridge serve` of this configuration answers at "
                f"{escape(launch.serve_url(settings))}; start it",
                soft_wrap=True,
                highlight=False,
            )
        typer.echo(text, nl=False)
        return
    status = launch.run(
        settings,
        ctx.args,
        claude=claude,
        log_file=log_file,
        notice=lambda line: stderr.print(
            escape(line), style="dim", soft_wrap=True, highlight=False
        ),
    )
    raise typer.Exit(status)
