"""`claude-bridge doctor`: check the configuration, the upstreams and Claude Code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..console import stderr, stdout
from .settings import CLAUDE_HELP, CONFIG_OPTION

MARKS = {"ok": "✅", "warn": "⚠️", "fail": "❌", "pass": "✅"}


def doctor(
    config: Path | None = CONFIG_OPTION,
    live: bool = typer.Option(
        False, "--live", help="Also ask each routed model for a 1-token completion (costs a token)."
    ),
    claude_grid: bool = typer.Option(
        False,
        "--claude",
        help="Run the installed Claude Code through claude-bridge against a built-in scripted "
        "upstream, feature by feature (no model, no key, no network).",
    ),
    claude_path: str | None = typer.Option(None, "--claude-path", help=CLAUDE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check the configuration, the upstreams and Claude Code.

    One row per check: ✅ fine, ⚠️ worth a look, ❌ broken (with its fix); exit code 1 on any ❌.
    With --claude, the installed Claude Code's features instead, through a scripted upstream.

    Example:

        claude-bridge doctor --live
    """
    if claude_grid:
        _grid(claude_path, as_json)
        return
    from claude_bridge.proxy.doctor.report import as_json as report_json
    from claude_bridge.proxy.doctor.report import examine, failed

    from ..bind_check import exposure
    from ..listen import bind

    checks = examine(
        config,
        live=live,
        claude=claude_path,
        env=os.environ,
        cwd=Path.cwd(),
        bind=bind,
        exposure=exposure,
    )
    if as_json:
        typer.echo(json.dumps(report_json(checks), indent=2, ensure_ascii=False))
    else:
        table = Table("", "check", "result", box=box.SIMPLE_HEAD)
        for check in checks:
            fix = f"\n[bold]fix:[/bold] {escape(check.fix)}" if check.fix else ""
            table.add_row(MARKS[check.level], check.name, escape(check.detail) + fix)
        stdout.print(table)
    if failed(checks):
        raise typer.Exit(1)


def _grid(claude_path: str | None, as_json: bool) -> None:
    from claude_bridge.proxy.doctor.grid import run_grid
    from claude_bridge.proxy.launch import claude_command

    command = claude_command(claude_path, os.environ)
    stderr.print(f"checking Claude Code at {escape(command)} ...", style="dim", highlight=False)
    grid = run_grid(command)
    if as_json:
        typer.echo(json.dumps(grid.as_json(), indent=2, ensure_ascii=False))
    else:
        title = f"Claude Code {escape(grid.version)}"
        table = Table("", "feature", "result", title=title, box=box.SIMPLE_HEAD)
        for outcome in grid.outcomes:
            table.add_row(MARKS[outcome.status], outcome.label, escape(outcome.detail))
        stdout.print(table)
    if not grid.passed:
        raise typer.Exit(1)
