"""The `claude-bridge` command: one Typer app, one place that turns failures into exit codes.

Each command's module is imported when that command runs (or its help or completion is
asked for): `--version`, `--help` and completing a command name import none of them, so
they answer at once instead of after loading the proxy, httpx and the models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import typer
from typer import _click
from typer._click.shell_completion import CompletionItem
from typer._coercion import PassThroughRuntimeParam
from typer.core import TyperGroup

from claude_bridge.proxy import __version__

P = ParamSpec("P")
R = TypeVar("R")


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Expected failures (bad input, bad config, unreadable files) end as one red line on
    stderr and exit code 1, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            # Imported on a failure only: a command that does not need them never loads them.
            from rich.markup import escape

            from claude_bridge.proxy.config import ConfigError
            from claude_bridge.proxy.core.errors import BridgeError

            from . import console

            if not isinstance(exc, (BridgeError, ConfigError, OSError)):
                raise
            message = exc.message if isinstance(exc, BridgeError) else str(exc)
            # Escaped: user text (`[upstreams.nope]`, a path) is not rich markup.
            console.stderr.print(
                f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False
            )
            raise typer.Exit(1) from None

    return run


def _serve(app: typer.Typer) -> None:
    from .commands import serve

    app.command("serve")(guarded(serve.serve))


def _code(app: typer.Typer) -> None:
    from .commands import code

    app.command("code", context_settings=code.CONTEXT)(guarded(code.code))


def _translate(app: typer.Typer) -> None:
    from .commands import translate

    app.command("translate")(guarded(translate.translate))


def _count_tokens(app: typer.Typer) -> None:
    from .commands import count_tokens

    app.command("count-tokens")(guarded(count_tokens.count_tokens))


def _config(app: typer.Typer) -> None:
    from .commands import config

    config.app.command("init")(guarded(config.init))
    config.app.command("show")(guarded(config.show))
    app.add_typer(config.app, name="config")


def _replay(app: typer.Typer) -> None:
    from .commands import replay

    replay.register(app, guarded)


def _doctor(app: typer.Typer) -> None:
    from .commands import doctor

    app.command("doctor")(guarded(doctor.doctor))


@dataclass(frozen=True)
class Lazy:
    register: Callable[[typer.Typer], None]
    """Adds the command to a Typer app, importing its module."""
    help: str
    """Its one-line help, for the command list (a test keeps it equal to the command's)."""


COMMANDS = {
    "serve": Lazy(_serve, "Run the proxy."),
    "code": Lazy(_code, "Run Claude Code through claude-bridge."),
    "translate": Lazy(_translate, "Translate offline, exactly as `serve` would."),
    "count-tokens": Lazy(_count_tokens, "Count a request's input tokens, offline."),
    "config": Lazy(_config, "Write or show the configuration."),
    "replay": Lazy(_replay, "Browse, re-translate and re-send recorded exchanges."),
    "doctor": Lazy(_doctor, "Check the configuration, the upstreams and Claude Code."),
}


@functools.cache
def load(name: str) -> _click.Command:
    """The click command `name`, built by Typer as if registered on the app (once a process:
    registering twice would add the config and replay subcommands twice)."""
    holder = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
    COMMANDS[name].register(holder)
    return typer.main.get_group(holder).commands[name]


class LazyGroup(TyperGroup):
    """The top-level group: commands listed, helped and completed from `COMMANDS` without
    importing them; one is loaded when it is looked up to run or to complete its options."""

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(COMMANDS)

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        for param in params:
            _plain_flag(param)
        return params

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        return load(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, lazy.help) for name, lazy in COMMANDS.items()])

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list[CompletionItem]:
        names = [
            CompletionItem(name, help=lazy.help)
            for name, lazy in COMMANDS.items()
            if name.startswith(incomplete)
        ]
        options: list[CompletionItem] = _click.Command.shell_complete(self, ctx, incomplete)
        return names + options


def _plain_flag(param: _click.Parameter) -> None:
    """A boolean flag of this group converted without pydantic. Typer builds a pydantic
    adapter the first time it converts a value, even a flag's missing one (as a Tab completion
    does): importing pydantic would cost a completion more than everything else."""
    descriptor = getattr(param, "type_descriptor", None)
    if (
        getattr(param, "_runtime_param", "") is None
        and getattr(descriptor, "annotation", 0) is bool
    ):
        assert descriptor is not None
        info = descriptor.parameter_info
        param._runtime_param = PassThroughRuntimeParam(annotation=bool, parameter_info=info)  # type: ignore[attr-defined]


app = typer.Typer(
    name="claude-bridge",
    help="Run Anthropic Messages API clients (Claude Code, the anthropic SDKs) on any "
    "OpenAI-compatible Chat Completions endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Click's plain help: it wraps at any width and names flags without a `<bool>` type;
    # Typer's rich panels cut option help off at 80 columns.
    rich_markup_mode=None,
    cls=LazyGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"claude-bridge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run Anthropic Messages API clients on any OpenAI-compatible endpoint."""


def run() -> None:
    app()
