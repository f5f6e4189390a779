"""`claude-bridge serve`: the proxy on uvicorn, with a live dashboard, request lines or JSON.

Output on stdout, one of:
- a rich live dashboard (the default when stdout is a terminal);
- one line per finished request (`--no-dashboard`, or stdout not a terminal);
- one JSON object per request event (`--log-format json`), for log shippers.
Log records (warnings and errors on stderr; everything at `--log-level` in `--log-file`) are
configured by `proxy.logs`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.control import strip_control_codes
from rich.markup import escape
from rich.text import Text
from starlette.applications import Starlette

from claude_bridge.proxy import __version__, logs
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.diagnose import diagnose
from claude_bridge.proxy.drain import GRACE, Stopping, server_config
from claude_bridge.proxy.drain import Server as DrainingServer
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal.writer import Recorder, journal_dir, session_path, worker_path
from claude_bridge.proxy.resilience.health import Health as UpstreamHealth
from claude_bridge.proxy.workers import Entry, Relay, Supervisor, shared_metrics

from .. import bind_check, listen
from ..console import stderr, stdout
from ..dashboard import Dashboard
from ..render import Health, Segments, ServerInfo, exchange_pieces, stopping_line
from .record_options import (
    RECORD_DIR_OPTION,
    RECORD_FULL_OPTION,
    RECORD_OPTION,
    REPLAY_MISS_OPTION,
    REPLAY_TIMING_OPTION,
    UPSTREAM_REPLAY_OPTION,
    ReplayMiss,
    record_flags,
    recording,
)
from .settings import CONFIG_OPTION, settings_from


class LogFormat(StrEnum):
    rich = "rich"
    json = "json"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret of the settings (`Settings.secrets`), for the log scrubber."""
    return settings.secrets()


class JsonEvents:
    """A bus listener writing one JSON object a line per request event."""

    def __init__(self, out: TextIO, redact: logs.Redactor) -> None:
        self.out = out
        self.redact = redact

    def write(self, data: dict[str, Any]) -> None:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = json.dumps({"ts": ts, **data}, ensure_ascii=False, default=str)
        self.out.write(self.redact(line) + "\n")
        self.out.flush()

    def __call__(self, kind: str, exchange: Exchange) -> None:
        if kind in ("start", "routed", "finish"):
            self.write(logs.exchange_record(kind, exchange))


def print_line(kind: str, exchange: Exchange) -> None:
    if kind != "finish":
        return
    pieces = exchange_pieces(exchange, datetime.now())
    text = "".join([piece for piece, _ in pieces])
    # Nothing a `Text` would clean up (control characters, tabs): the usual line.
    printable = text.isprintable()
    if stdout.color_system is None:
        # No terminal (a pipe, a log file): rich would print the plain text too, after ~80 µs
        # of rendering, and this runs before the request's answer is sent. Without the control
        # characters, as a `Text` drops them (8 µs to look for them: only when there are).
        out = stdout.file
        out.write((text if printable else strip_control_codes(text)) + "\n")
        out.flush()
    elif printable:  # what a `Text` prints, for a third of its cost
        stdout.print(Segments(pieces), soft_wrap=True, highlight=False)
    else:
        stdout.print(Text.assemble(*pieces), soft_wrap=True, highlight=False)


def serve(
    host: str = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", "-p", help="Port to listen on (default 8082)."),
    config: Path = CONFIG_OPTION,
    no_dashboard: bool = typer.Option(
        False, "--no-dashboard", help="One line per request instead of the live dashboard."
    ),
    log_format: LogFormat = typer.Option(
        LogFormat.rich,
        "--log-format",
        help="rich: dashboard or lines; json: one JSON object per request event on stdout.",
    ),
    log_file: Path | None = typer.Option(
        None,
        "--log-file",
        help="Write JSON log records here (rotated at 10 MB, 4 old files kept).",
        dir_okay=False,
    ),
    log_level: str = typer.Option(
        None,
        "--log-level",
        help="debug, info, warning or error: the log file's level (default info); the console "
        "shows warnings and errors, or everything at debug.",
    ),
    record: bool | None = RECORD_OPTION,
    record_dir: Path | None = RECORD_DIR_OPTION,
    record_full: bool | None = RECORD_FULL_OPTION,
    upstream_replay: Path | None = UPSTREAM_REPLAY_OPTION,
    replay_miss: ReplayMiss = REPLAY_MISS_OPTION,
    replay_timing: bool = REPLAY_TIMING_OPTION,
    auth_token: str | None = typer.Option(
        None,
        "--auth-token",
        help="Clients must present this as their API key (or set CLAUDE_BRIDGE_AUTH_TOKEN).",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse to listen beyond loopback without an auth token."
    ),
    workers: str = typer.Option(
        None,
        "--workers",
        "-w",
        help="Processes serving the port: a number, or auto (one per CPU core); default 1.",
    ),
) -> None:
    """Run the proxy.

    Example:

        OPENAI_BASE_URL=http://127.0.0.1:8080/v1 BIG_MODEL=qwen3 claude-bridge serve

    then, in another terminal, the line it prints:

        ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_AUTH_TOKEN=unused claude
    """
    settings = settings_from(
        config,
        # Answered from a journal alone, the upstreams need no key.
        keys=upstream_replay is None or replay_miss is ReplayMiss.forward,
        host=host,
        port=port,
        log_level=log_level,
        auth_token=auth_token,
        workers=workers,
        **record_flags(record, record_dir, record_full),
    )
    bind_check.enforce(settings.host, settings.auth_token, strict=strict, console=stderr)
    secrets = secrets_of(settings)
    count = settings.worker_count()
    spec = WorkerSpec(settings, upstream_replay, replay_miss, replay_timing, log_file is not None)
    if count > 1 and settings.record:
        spec.journal = session_path(journal_dir(settings))
    wiring = recording(
        settings,
        upstream_replay=upstream_replay,
        replay_miss=replay_miss,
        replay_timing=replay_timing,
        journal_file=worker_path(spec.journal, 1) if spec.journal else None,
    )
    journal = spec.journal_files()
    if count > 1 and wiring.recorder is not None:
        wiring.recorder.close()  # checked writable; the workers write
    # Bound before anything is drawn: a port in use is one error line, not a dashboard first.
    groups = listen.bind_group(settings.host, settings.port, count)
    try:
        settings = spec.settings = settings.model_copy(
            update={"port": listen.bound_port(groups[0])}
        )
        findings = [str(finding) for finding in diagnose(settings, offline=wiring.offline)]
        info = ServerInfo.from_settings(
            settings,
            version=__version__,
            recording=journal or (str(wiring.recorder.path) if wiring.recorder else None),
            replay=str(wiring.replay_source) if wiring.replay_source is not None else None,
            warnings=tuple(findings),
        )
        if log_format is LogFormat.json:
            mode = "json"
        elif no_dashboard or not stdout.is_terminal or stdout.is_dumb_terminal:
            mode = "lines"
        else:
            mode = "dashboard"
        logs.configure(
            settings.log_level,
            file=log_file,
            console_format="json" if mode == "json" else "text",
            secrets=secrets,
        )
        if mode != "json":  # the JSON `listening` event carries them
            for finding in findings:
                stderr.print(
                    f"[yellow]warning:[/yellow] {escape(finding)}", soft_wrap=True, highlight=False
                )
        bus = Bus()
        bus.subscribe(logs.RequestLog(), logs.RequestLog.KINDS)
        for line in wiring.describe(journal):
            stderr.print(escape(line), soft_wrap=True, highlight=False)
        if count > 1:
            supervisor = Supervisor(
                functools.partial(worker_entry, spec),
                groups,
                bus,
                grace=GRACE,
                on_stop=stop_notice(mode, secrets),
            )
            display = attach_output(mode, bus, info, secrets, functools.partial(health, supervisor))
            with display, shared_metrics(settings.metrics):
                started = supervisor.run()
        else:
            recorder = wiring.recorder
            upstreams = UpstreamHealth(settings)  # breakers and key pools: shown, and used
            display = attach_output(
                mode,
                bus,
                info,
                secrets,
                lambda: Health(
                    journal_stalls=recorder_stalls(recorder),
                    upstreams=tuple(upstreams.report()),
                ),
            )
            app = create_app(
                settings,
                bus=bus,
                transport=wiring.transport,
                recorder=recorder,
                health=upstreams,
            )
            app.state.drain.on_stop(stop_notice(mode, secrets))
            with display:
                started = run_server(
                    app, settings, access_log=log_file is not None, sockets=groups[0]
                )
    finally:
        for group in groups:
            for sock in group:
                sock.close()
    if not started:
        stderr.print(
            f"[red]error:[/red] the proxy did not start on {info.listen} (see above)",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(3)  # what uvicorn.run exits with when the server cannot start


def stop_notice(mode: str, secrets: list[str]) -> Callable[[Stopping], None]:
    """What tells the user, at once, that the server is stopping and what it waits for."""
    if mode == "json":
        events = JsonEvents(sys.stdout, logs.Redactor(secrets))

        def write(stopping: Stopping) -> None:
            events.write(
                {"event": "stopping", "in_flight": stopping.in_flight, "ends_in": stopping.ends_in}
            )

        return write
    return lambda stopping: stderr.print(
        stopping_line(stopping.in_flight, stopping.ends_in), soft_wrap=True, highlight=False
    )


def attach_output(
    mode: str,
    bus: Bus,
    info: ServerInfo,
    secrets: list[str],
    health: Callable[[], Health] = Health,
) -> AbstractContextManager[object]:
    """Subscribe what `mode` shows on stdout; the context to run the server in."""
    if mode == "json":
        events = JsonEvents(sys.stdout, logs.Redactor(secrets))
        bus.subscribe(events)
        events.write(
            {
                "event": "listening",
                "listen": info.listen,
                "client_command": info.paste,
                "warnings": list(info.warnings),
                "upstream": info.upstream,
                "big_model": info.big_model,
                "small_model": info.small_model,
                "recording": info.recording,
                "upstream_replay": info.replay,
                "version": __version__,
            }
        )
        return nullcontext()
    if mode == "lines":
        bus.subscribe(print_line, ("finish",))
        models = f"big={info.big_model or '(as asked)'} small={info.small_model or '(as big)'}"
        # The client token only where the user reads it, not into a pipe or a log file.
        paste = info.paste if stdout.is_terminal else logs.Redactor(secrets)(info.paste)
        stdout.print(
            f"claude-bridge → [bold]{escape(info.upstream)}[/bold]  {escape(models)}\n"
            f"Paste this in another terminal:  [bold green]{escape(paste)}[/bold green]\n"
            "or run [bold]claude-bridge code[/bold] there (it uses this proxy if the "
            "configuration is the same)",
            highlight=False,
            soft_wrap=True,
        )
        return nullcontext()
    dashboard = Dashboard(info, console=stdout, health=health)
    bus.subscribe(dashboard)
    return dashboard.live()


def event_loop() -> str:
    """uvicorn's event loop: uvloop when importable (a dependency but on Windows; a few hundred
    microseconds less per request than asyncio's), else uvicorn's choice. The HTTP parser is
    always httptools, in `http_limits`' protocol."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "auto"


def run_server(
    app: Starlette,
    settings: Settings,
    *,
    access_log: bool,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> bool:
    """Serve until stopped (Ctrl-C, SIGTERM); False if the server could not start. On a stop,
    requests in flight get the grace period, then streams end with an `error` event."""
    server = DrainingServer(
        server_config(
            app,
            settings,
            host=settings.host,
            port=settings.port,
            loop=event_loop(),
            # The access log only has a use in the log file, where it is folded into the JSON
            # records.
            access_log=access_log,
        ),
        app.state.drain,
        on_started,
    )
    with contextlib.suppress(SystemExit):  # how uvicorn says it could not bind
        server.run(sockets=sockets)
    return bool(server.started)


# -- serve --workers N -----------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """What a worker process builds its app from (picklable: it crosses to the process)."""

    settings: Settings
    upstream_replay: Path | None
    replay_miss: ReplayMiss
    replay_timing: bool
    access_log: bool
    journal: Path | None = None
    """The run's journal name: worker N writes `worker_path(journal, N)`."""

    def journal_files(self) -> str | None:
        """The workers' journal files, as the console and the dashboard name them."""
        if self.journal is None:
            return None
        return f"{self.journal.with_name(self.journal.stem + '-w*' + self.journal.suffix)}"


def worker_entry(spec: WorkerSpec, index: int, life: int) -> Entry:
    return functools.partial(serve_worker, spec, index, life)


def serve_worker(
    spec: WorkerSpec, index: int, life: int, relay: Relay, sockets: list[socket.socket]
) -> bool:
    """One worker of `serve --workers`: the app `serve` runs, its events and logs relayed to
    the parent, its journal its own file."""
    settings = spec.settings
    logs.configure(settings.log_level, stream=io.StringIO(), secrets=secrets_of(settings))
    relay.capture_logs()
    wiring = recording(
        settings,
        upstream_replay=spec.upstream_replay,
        replay_miss=spec.replay_miss,
        replay_timing=spec.replay_timing,
        journal_file=worker_path(spec.journal, index, life) if spec.journal else None,
    )
    bus = Bus()
    bus.subscribe(relay)
    app = create_app(settings, bus=bus, transport=wiring.transport, recorder=wiring.recorder)
    if wiring.recorder is not None:
        wiring.recorder.on_stall(relay.stalled)
    app.state.drain.on_stop(relay.stopping)
    return run_server(
        app, settings, access_log=spec.access_log, sockets=sockets, on_started=relay.ready
    )


def recorder_stalls(recorder: Recorder | None) -> int:
    return recorder.stalls if recorder is not None else 0


def health(supervisor: Supervisor) -> Health:
    return Health(
        workers=supervisor.count,
        serving=supervisor.serving(),
        restarts=supervisor.restarts,
        journal_stalls=supervisor.journal_stalls,
    )
