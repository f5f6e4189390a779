"""`claude-bridge replay`: browse, re-translate and re-send recorded exchanges.

    replay list [FILE|DIR]          newest first; -n, --json, --model, --status, -q TEXT, --session
    replay show ID                  one exchange, pretty; --raw for its JSON record
    replay diff [ID|FILE|DIR]       re-run through the current translation; exit 1 on a change
    replay send [ID|FILE|DIR]       re-send to the upstream (or --to a running claude-bridge)

Journals come from `serve --record` (default directory: `$CLAUDE_BRIDGE_HOME/journal`, else
`~/.local/state/claude-bridge/journal`; `--journal` or the `record_dir` setting elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.markup import escape
from rich.progress import Progress
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.journal.reader import Journal, find, load, prompt_text, select
from claude_bridge.proxy.journal.records import Record, chunk_data
from claude_bridge.proxy.journal.writer import Recorder, journal_dir
from claude_bridge.proxy.pricing import Cost, Pricing
from claude_bridge.proxy.replay import (
    DiffResult,
    ReplayTransport,
    SendResult,
    diff_record,
    resendable,
    send_records,
)

from ..console import stderr, stdout
from ..health_view import attempt_text
from ..render import money, routed_to
from .settings import CONFIG_OPTION, settings_from

PROGRESS_OVER = 20
"""`diff` shows a progress bar (on a terminal) from this many exchanges on."""

JOURNAL_OPTION = typer.Option(
    None,
    "--journal",
    "-j",
    help="Journal file or directory to look IDs up in (default: the recording directory).",
)


def register(
    parent: typer.Typer, guard: Callable[[Callable[..., None]], Callable[..., None]]
) -> None:
    """Add `replay` and its commands to `parent`, each wrapped in `guard` (the CLI's error
    handler)."""
    app = typer.Typer(
        name="replay",
        help="Browse, re-translate and re-send recorded exchanges.",
        no_args_is_help=True,
        rich_markup_mode=None,  # as the main app's
    )
    app.command("list")(guard(list_exchanges))
    app.command("show")(guard(show))
    app.command("diff")(guard(diff))
    app.command("send")(guard(send))
    parent.add_typer(app, name="replay")


# -- loading -------------------------------------------------------------------------------


def _load(path: Path) -> Journal:
    journal = load(path)
    for warning in journal.warnings:
        stderr.print(
            f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True, highlight=False
        )
    return journal


def _records(target: str | None, journal: Path | None, settings: Settings) -> list[Record]:
    """`target` as a journal path when it is one, else an exchange id looked up in `journal`
    (default: the recording directory); no target: every record there. Newest first."""
    if target is not None and Path(target).exists():
        return _load(Path(target)).records
    records = _load(journal or journal_dir(settings)).records
    return [find(records, target)] if target is not None else records


# -- list ----------------------------------------------------------------------------------


def summary(record: Record, pricing: Pricing) -> dict[str, Any]:
    """One exchange as `list --json` and `show --json` print it; the cost at today's prices."""
    usage = record.usage
    return {
        "id": record.id,
        "request_id": record.request_id,
        "time": datetime.fromtimestamp(record.timings.started_at)
        .astimezone()
        .isoformat(timespec="seconds"),
        "model": record.routing.client_model,
        "upstream_model": record.routing.upstream_model,
        "stream": record.routing.stream,
        "status": record.status,
        "state": record.state,
        "duration_ms": record.timings.end_ms,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        **pricing.of_record(record).fields(),
        "session_id": record.session_id,
        "agent_id": record.agent_id,
        "routed_by": record.routing.routed_by,
        "stop_reason": usage.stop_reason,
        "error": f"{record.error.type}: {record.error.message}" if record.error else None,
        "replayed_from": record.replayed_from,
        "prompt": prompt_text(record)[:200],
    }


def _status_text(record: Record) -> Text:
    if record.state == "incomplete":
        return Text(f"{record.status or '-'} incomplete", style="yellow")
    status = record.status or 0
    style = "green" if status < 400 else "yellow" if status < 500 else "red"
    return Text(str(record.status or "-"), style=style)


def _client_model(record: Record) -> str:
    """The model asked for, also when the request was refused before routing."""
    if record.routing.client_model:
        return record.routing.client_model
    body = record.client.body
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else "-"


def list_table(records: list[Record], pricing: Pricing) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("id", "time", "model", "status", "ms", "in/out", "cost", "prompt"):
        right = name in ("ms", "in/out", "cost")
        table.add_column(
            name,
            justify="right" if right else "left",
            no_wrap=name != "prompt",
            overflow="ellipsis",
        )
    for record in records:
        started = datetime.fromtimestamp(record.timings.started_at)
        upstream = routed_to(record.routing.upstream, record.routing.upstream_model or "-")
        model = f"{_client_model(record)} → {upstream}"
        if record.routing.stream:
            model += " ⇶"
        took = record.timings.end_ms
        preview = " ".join(prompt_text(record).split())[:80]
        if record.error:
            preview = f"[{record.error.type}] {preview}"
        if record.replayed_from:
            preview = f"[replay] {preview}"
        table.add_row(
            record.id,
            started.strftime("%Y-%m-%d %H:%M:%S"),
            Text(model),  # Text: user strings (`[replay]`, a prompt) are not rich markup
            _status_text(record),
            f"{took:.0f}" if took is not None else "-",
            f"{record.usage.input_tokens}/{record.usage.output_tokens}",
            money(pricing.of_record(record).usd),
            Text(preview),
        )
    return table


def list_exchanges(
    source: Path = typer.Argument(
        None,
        help="Journal file or directory (default: the recording directory).",
        metavar="[FILE|DIR]",
    ),
    count: int = typer.Option(20, "-n", "--count", help="How many, newest first (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array of summaries."),
    model: str = typer.Option(None, "--model", "-m", help="Client or upstream model contains."),
    status: str = typer.Option(
        None, "--status", "-s", help="ok, error, incomplete, a status (429) or a class (5xx)."
    ),
    search: str = typer.Option(None, "--search", "-q", help="Text in the request or reply."),
    session: str = typer.Option(
        None, "--session", help="Claude Code's session id (or its start, as the dashboard shows)."
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """List recorded exchanges, newest first.

    Example:

        claude-bridge replay list -n 5 --status error
    """
    settings = settings_from(config)
    records = _load(source or journal_dir(settings)).records
    records = select(records, model=model, status=status, text=search, session=session)
    if count > 0:
        records = records[:count]
    pricing = Pricing.from_settings(settings)
    if as_json:
        data = [summary(r, pricing) for r in records]
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
        sys.stdout.write("\n")
        return
    if not records:
        stderr.print("no recorded exchanges match", highlight=False)
        return
    stdout.print(list_table(records, pricing))


# -- show ----------------------------------------------------------------------------------


def _headers(headers: dict[str, str]) -> Text:
    text = Text(style="dim")
    for name, value in headers.items():
        text.append(f"{name}: {value}\n")
    return text


def _body(body: Any, text: str | None) -> RenderableType:
    if text is not None:
        return Text(text)
    if body is None:
        return Text("(empty)", style="dim")
    return JSON.from_data(body, ensure_ascii=False)


def _offset(ms: float) -> str:
    return f"{ms:>9.1f} ms  "


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def cost_line(record: Record, cost: Cost) -> Text:
    """What the exchange cost and at which rates, or why it is unknown."""
    if cost.usd is None:
        model = record.routing.upstream_model or "-"
        return Text(
            f'cost: unknown (no price for {model}: set [prices."{model}"] in the config)',
            style="yellow",
        )
    line = f"cost: {money(cost.usd)} ({cost.source or 'nothing used'}"
    if cost.price is not None:
        u = record.usage
        r = cost.price.rates_for(u.input_tokens + u.cached_tokens + u.cache_write_tokens)
        line += (
            f"; per million tokens: input ${r.input:g}, output ${r.output:g}, "
            f"cache read ${r.cache_read:g}, cache write ${r.cache_write:g}"
        )
    return Text(line + ")", style="cyan")


_DIALECT_NOTES = {"openai": "", "anthropic": "  passed through"}


def _options_text(options: dict[str, Any]) -> str:
    """The translation options on one line: the provider profile by its name (its rules are
    data in `core/providers.py`; `--raw` has them all), not as its every field."""
    shown = []
    for key, value in options.items():
        if key == "model":
            continue
        if key == "profile" and isinstance(value, dict):
            key, value = "provider", value.get("name", "?")
        if key == "passthrough" and isinstance(value, dict):  # `core/passthrough_profiles.py`
            value = value.get("name", "?")
        shown.append(f"{key}={value}")
    return ", ".join(shown)


def show_exchange(record: Record, pricing: Pricing) -> Iterator[RenderableType]:
    """The sections of `replay show`, top to bottom."""
    started = datetime.fromtimestamp(record.timings.started_at).astimezone()
    head = Text.assemble(
        (f"{record.id}", "bold"),
        f"  {record.request_id}  {started.isoformat(timespec='milliseconds')}  ",
        _status_text(record),
    )
    if record.replayed_from:
        head.append(f"  replay of {record.replayed_from}", style="cyan")
    yield head
    t = record.timings
    yield Text(
        f"upstream first byte {_ms(t.upstream_first_byte_ms)} · client first byte "
        f"{_ms(t.client_first_byte_ms)} · total {_ms(t.end_ms)}"
    )
    routing = record.routing
    target = routed_to(routing.upstream, routing.upstream_model or "-")
    route = Text(f"{routing.client_model or '-'} → {target}", style="bold")
    route.append("  stream" if routing.stream else "", style="dim")
    # The dialect spoken upstream, when it is not the first one (Chat Completions).
    route.append(_DIALECT_NOTES.get(routing.mode, f"  {routing.mode}"), style="dim")
    route.append(f"  by {routing.routed_by}" if routing.routed_by else "", style="dim")
    if routing.options:
        route.append(f"  {_options_text(routing.options)}", style="dim")
    yield route
    for number, attempt in enumerate(record.attempts, 1):
        yield Text(*attempt_text(number, attempt))
    if record.error:
        yield Text(f"error: {record.error.type}: {record.error.message}", style="red")
    usage = record.usage
    yield Text(
        f"usage: in {usage.input_tokens} (cached {usage.cached_tokens}, written "
        f"{usage.cache_write_tokens}) out {usage.output_tokens} (reasoning "
        f"{usage.reasoning_tokens})  stop {usage.stop_reason or '-'}",
        style="cyan",
    )
    yield cost_line(record, pricing.of_record(record))
    if record.session_id:
        agent = f"  agent: {record.agent_id}" if record.agent_id else ""
        yield Text(f"session: {record.session_id}{agent}", style="dim")
    if record.notes:
        yield Text("not sent upstream: " + ", ".join(record.notes), style="dim")
    if record.elided:
        yield Text(f"{record.elided} base64 payload(s) elided when recorded", style="dim")

    client = record.client
    yield Rule(f"client request: {client.method} {client.path}", align="left")
    yield _headers(client.headers)
    yield _body(client.body, client.body_text)

    upstream = record.upstream
    if upstream is None:
        yield Rule("no upstream call", align="left")
    else:
        request = upstream.request
        yield Rule(f"upstream request: {request.method} {request.url}", align="left")
        yield _headers(request.headers)
        yield _body(request.body, request.body_text)
        response = upstream.response
        if response is None:
            yield Rule("upstream response: none", align="left")
        else:
            yield Rule(f"upstream response: {response.status}", align="left")
            yield _headers(response.headers)
            if response.chunks is not None:
                yield _chunks(response.chunks)
            else:
                yield _body(response.body, response.body_text)
        if upstream.error:
            yield Text(f"upstream transport error: {upstream.error}", style="red")
        for retry in upstream.retries:
            yield Text(f"earlier try at {retry}", style="yellow")

    reply = record.reply
    if reply is None:
        yield Rule("reply: none recorded", align="left")
    else:
        yield Rule(f"reply: {reply.status}", align="left")
        if reply.events is not None:
            lines = Text()
            for ms, event in reply.events:
                lines.append(_offset(ms), style="dim")
                lines.append(str(event.get("type")), style="bold")
                rest = {k: v for k, v in event.items() if k != "type"}
                lines.append(" " + json.dumps(rest, ensure_ascii=False) + "\n")
            yield lines
        else:
            yield _body(reply.body, None)


def _chunks(chunks: list[Any]) -> Text:
    text = Text()
    for chunk in chunks:
        data = chunk_data(chunk)
        shown = data.decode("utf-8", "replace").rstrip("\n").replace("\n", "⏎")
        text.append(_offset(chunk[0]), style="dim")
        text.append((shown if isinstance(chunk[1], str) else f"(bytes) {shown}") + "\n")
    return text


def show(
    exchange: str = typer.Argument(..., help="Exchange id (or a unique prefix, or request id)."),
    raw: bool = typer.Option(False, "--raw", help="The JSON record as written."),
    as_json: bool = typer.Option(
        False, "--json", help="Its summary as `list --json` gives it (with today's cost)."
    ),
    journal: Path = JOURNAL_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Show one recorded exchange: request, routing, upstream request and answer, reply,
    timings.

    Example:

        claude-bridge replay show 01JD3K
    """
    settings = settings_from(config)
    record = find(_load(journal or journal_dir(settings)).records, exchange)
    if raw:
        sys.stdout.write(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False))
        sys.stdout.write("\n")
        return
    pricing = Pricing.from_settings(settings)
    if as_json:
        sys.stdout.write(json.dumps(summary(record, pricing), indent=2, ensure_ascii=False))
        sys.stdout.write("\n")
        return
    stdout.print(Group(*show_exchange(record, pricing)), soft_wrap=True)


# -- diff ----------------------------------------------------------------------------------


def _diff_lines(lines: list[str]) -> Text:
    text = Text()
    for line in lines:
        style = (
            "bold"
            if line.startswith(("---", "+++"))
            else "cyan"
            if line.startswith("@@")
            else "green"
            if line.startswith("+")
            else "red"
            if line.startswith("-")
            else ""
        )
        text.append(line + "\n", style=style)
    return text


_OUTCOME_STYLE = {"same": "green", "differs": "bold red", "skipped": "dim"}


def diff_table(results: list[DiffResult]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("id", "model", "upstream request", "reply", "note"):
        table.add_column(name, no_wrap=name != "note")
    for result in results:
        record = result.record
        note = result.reply.note or result.request.note
        table.add_row(
            record.id,
            f"{_client_model(record)}{' ⇶' if record.routing.stream else ''}",
            Text(result.request.outcome, style=_OUTCOME_STYLE[result.request.outcome]),
            Text(result.reply.outcome, style=_OUTCOME_STYLE[result.reply.outcome]),
            note,
        )
    return table


def diff(
    target: str = typer.Argument(
        None,
        help="An exchange id, a journal file or directory (default: all recorded).",
        metavar="[ID|FILE|DIR]",
    ),
    count: int = typer.Option(0, "-n", "--count", help="Only the newest N (0: all)."),
    journal: Path = JOURNAL_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Re-run recorded exchanges through the current translation, offline, and show what
    would now differ in the upstream request and in the client's reply.

    Exits 1 when anything differs: a regression check after an upgrade.

    Example:

        claude-bridge replay diff tests/data/journal/
    """
    settings = settings_from(config)
    records = _records(target, journal, settings)
    if count > 0:
        records = records[:count]
    records = sorted(records, key=lambda r: r.id)
    results: list[DiffResult] = []
    with Progress(
        console=stderr,
        transient=True,
        disable=len(records) < PROGRESS_OVER or not stderr.is_terminal,
    ) as progress:
        task = progress.add_task("re-translating", total=len(records))
        for record in records:
            results.append(diff_record(record))
            progress.advance(task)
    for result in results:
        if not result.differs:
            continue
        for part in (result.request, result.reply):
            if part.outcome == "differs":
                stdout.print(_diff_lines(part.unified(result.record.id)), soft_wrap=True)
    if results:
        stdout.print(diff_table(results))
    changed = sum(r.differs for r in results)
    skipped = sum("skipped" in (r.request.outcome, r.reply.outcome) for r in results)
    stdout.print(
        f"{len(results)} exchanges: {changed} differ, {len(results) - changed} same"
        + (f" ({skipped} partly skipped)" if skipped else ""),
        highlight=False,
    )
    if changed:
        raise typer.Exit(1)


# -- send ----------------------------------------------------------------------------------


def _result_line(result: SendResult) -> Text:
    record = result.record
    line = Text()
    if result.status is None:
        line.append("  ✗ ", style="red")
    elif result.same_status:
        line.append("  ✓ ", style="green")
    else:
        line.append("  ≠ ", style="yellow")
    line.append(f"{result.status or '-'} (was {record.status or '-'})  {record.id}")
    line.append(f" → {result.request_id or '-'}", style="dim")
    line.append(f"  {result.duration_ms:.0f} ms")
    if result.error:
        line.append(f"  {result.error[:160]}", style="red")
    return line


async def _send_all(
    records: list[Record],
    settings: Settings,
    *,
    to: str | None,
    concurrency: int,
    api_key: str | None,
    recorder: Recorder | None,
    transport: httpx.AsyncBaseTransport | None,
) -> list[SendResult]:
    def report(result: SendResult) -> None:
        stdout.print(_result_line(result), soft_wrap=True, highlight=False)

    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    if to is not None:
        async with httpx.AsyncClient(base_url=to, timeout=timeout) as client:
            return await send_records(
                client, records, concurrency=concurrency, api_key=api_key, on_result=report
            )
    app = create_app(settings, transport=transport, recorder=recorder)
    key = api_key or (settings.auth_token.get_secret_value() if settings.auth_token else None)
    # A loopback name: the app refuses any other `Host` (proxy/guard.py).
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=timeout
        ) as client,
    ):
        return await send_records(
            client, records, concurrency=concurrency, api_key=key, on_result=report
        )


def send(
    target: str = typer.Argument(
        None,
        help="An exchange id, a journal file or directory (default: all recorded).",
        metavar="[ID|FILE|DIR]",
    ),
    to: str = typer.Option(
        None,
        "--to",
        help="Base URL of a running claude-bridge (or any Messages API) to send to; default: "
        "through this claude-bridge's pipeline, in process, to the configured upstream.",
    ),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Requests at a time."),
    count: int = typer.Option(0, "-n", "--count", help="Only the newest N (0: all)."),
    api_key: str = typer.Option(None, "--api-key", help="Key to present (x-api-key)."),
    record: bool = typer.Option(
        True, "--record/--no-record", help="In process: record the new exchanges."
    ),
    upstream_replay: Path = typer.Option(
        None,
        "--upstream-replay",
        help="In process: answer upstream calls from this journal instead (fully offline).",
        metavar="JOURNAL",
    ),
    include_replays: bool = typer.Option(
        False,
        "--include-replays",
        help="Also re-send exchanges that are replays themselves (an ID always is sent).",
    ),
    journal: Path = JOURNAL_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Re-send recorded client requests, oldest first, and compare the new statuses.

    The new exchanges are recorded (`replay list` marks them as replays) and are not sent
    again by the next run unless --include-replays. Exits 1 when a status differs from the
    recorded one or a request could not be sent.

    Example:

        claude-bridge replay send 01JD3K --to http://127.0.0.1:8082
    """
    # Offline, or sent to another bridge: no upstream key of this one is used.
    settings = settings_from(config, keys=upstream_replay is None and to is None)
    records = _records(target, journal, settings)
    named = target is not None and not Path(target).exists()  # one exchange, by its id
    if not (named or include_replays):
        # Each run records its replays: sending those too would send more every time.
        replays = sum(1 for r in records if r.replayed_from)
        records = [r for r in records if not r.replayed_from]
        if replays:
            stderr.print(
                f"{replays} recorded replay(s) not sent again (--include-replays sends them)",
                highlight=False,
            )
    if count > 0:
        records = records[:count]
    skipped = [r for r in records if not resendable(r)]
    records = [r for r in records if resendable(r)]
    if skipped:
        stderr.print(f"{len(skipped)} exchange(s) have no request body to re-send", highlight=False)
    elided = sum(1 for r in records if r.elided)
    if elided:
        stderr.print(
            f"[yellow]warning:[/yellow] {elided} request(s) had base64 payloads elided when "
            "recorded and are re-sent with placeholders (record with --record-full to keep them)",
            highlight=False,
        )
    if not records:
        stderr.print("nothing to send", highlight=False)
        return
    recorder = Recorder.from_settings(settings) if record and to is None else None
    transport = ReplayTransport(_load(upstream_replay).records) if upstream_replay else None
    results = asyncio.run(
        _send_all(
            records,
            settings,
            to=to,
            concurrency=concurrency,
            api_key=api_key,
            recorder=recorder,
            transport=transport,
        )
    )
    failed = sum(r.status is None for r in results)
    changed = sum(r.status is not None and not r.same_status for r in results)
    stdout.print(
        f"sent {len(results)}: {len(results) - failed - changed} same status, {changed} "
        f"different, {failed} failed",
        highlight=False,
    )
    if recorder is not None and recorder.written:
        stderr.print(f"recorded to {escape(str(recorder.path))}", highlight=False)
    if failed or changed:
        raise typer.Exit(1)
