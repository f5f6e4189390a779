"""Pure functions from pipeline state to rich renderables: no clock, no I/O, no globals.

`dashboard(view, width, height)` draws `serve`'s live screen from a `View` (a snapshot that
`cli/dashboard.py` computes); `exchange_line` is the one-line form of a finished request.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core.dialects import AUTO
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM
from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.resilience.health import UpstreamReport

from . import health_view

OR_CODE = "   or run: claude-bridge code"
"""After the paste line when there is room: `code` starts Claude Code on a running `serve` of
the same configuration, or on one of its own."""


def client_command(host: str, port: int, token: str | None) -> str:
    """The line that runs Claude Code on the proxy at `host`:`port`.

    `ANTHROPIC_AUTH_TOKEN`, not `ANTHROPIC_API_KEY`: an interactive Claude Code asks before it
    uses an API key from the environment, with "No" preselected, and then ignores it; a token
    it uses at once (PROTOCOL.md 11.5). It needs some credential even when the proxy asks for
    none, or it opens its login screen (11.6): any value does then."""
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in address:
        address = f"[{address}]"
    credential = shlex.quote(token) if token else "unused"
    return f"ANTHROPIC_BASE_URL=http://{address}:{port} ANTHROPIC_AUTH_TOKEN={credential} claude"


@dataclass(frozen=True)
class ServerInfo:
    """What the dashboard header says about the server. The one secret is the client token in
    `paste`, shown so the user can paste it; JSON and piped output redact it."""

    listen: str
    upstream: str
    paste: str = ""
    """The line to run Claude Code on this proxy with (`client_command`)."""
    big_model: str | None = None
    small_model: str | None = None
    version: str = ""
    recording: str | None = None
    """The journal being written, if any."""
    replay: str | None = None
    """The journal upstream answers come from (`--upstream-replay`), if any."""
    warnings: tuple[str, ...] = ()
    """What is missing or suspicious in the settings, with the fix (`proxy.diagnose`)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        version: str = "",
        recording: str | None = None,
        replay: str | None = None,
        warnings: tuple[str, ...] = (),
    ) -> ServerInfo:
        public = settings.public()
        token = settings.auth_token.get_secret_value() if settings.auth_token else None
        return cls(
            listen=f"{public['host']}:{public['port']}",
            upstream=upstreams_label(settings),
            paste=client_command(settings.host, settings.port, token),
            big_model=public["big_model"],
            small_model=public["small_model"],
            version=version,
            recording=recording,
            replay=replay,
            warnings=warnings,
        )


@dataclass(frozen=True)
class Finished:
    """A finished exchange and the wall-clock time it finished at."""

    exchange: Exchange
    at: datetime


@dataclass(frozen=True)
class Health:
    """The serving processes and the journal writer, as the dashboard header says them."""

    workers: int = 1
    serving: int = 1
    """Workers serving now."""
    restarts: int = 0
    """Workers started again after one died."""
    journal_stalls: int = 0
    """Times the journal writer's queue was full (and requests waited for it)."""
    upstreams: tuple[UpstreamReport, ...] = ()
    """Each upstream's breaker and keys (`resilience.health`): a line when worth showing."""


@dataclass(frozen=True)
class View:
    """One frame's worth of dashboard state."""

    info: ServerInfo
    now: float
    """Monotonic time of the frame: in-flight exchanges are aged against it."""
    uptime: float
    requests: int
    errors: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    per_minute: int
    in_flight: Sequence[Exchange]
    """Oldest first."""
    recent: Sequence[Finished]
    """Newest first."""
    duration_p50: float | None = None
    duration_p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    window: int = 0
    """How many successful recent requests the percentiles are over."""
    error_types: Sequence[tuple[str, int]] = ()
    """Most frequent first."""
    cache_write_tokens: int = 0
    spend: Spend | None = None
    """Cost and cache use of every finished request."""
    sessions: Sequence[tuple[str, Spend]] = ()
    """By client session (Claude Code's session id), the latest first."""
    health: Health = Health()


@dataclass(frozen=True)
class Spend:
    """What some finished requests cost and how much of their input came from a cache."""

    requests: int = 0
    usd: float = 0.0
    unpriced: int = 0
    """Requests whose cost is unknown (no price for their model): not in `usd`."""
    prompt: int = 0
    cached: int = 0

    def plus(self, exchange: Exchange) -> Spend:
        usd = 0.0 if exchange.cost is None else exchange.cost.usd  # None: not priced at all
        return Spend(
            self.requests + 1,
            self.usd + (usd or 0.0),
            self.unpriced + (usd is None),
            self.prompt
            + exchange.input_tokens
            + exchange.cached_tokens
            + exchange.cache_write_tokens,
            self.cached + exchange.cached_tokens,
        )

    @property
    def hit(self) -> float | None:
        """Cached input over all input."""
        return self.cached / self.prompt if self.prompt else None


# -- small formatters ---------------------------------------------------------------------


def upstreams_label(settings: Settings) -> str:
    """The default upstream, its mode when one is set, and the other names."""
    label = upstream_label(settings.openai_base_url)
    if settings.mode not in (AUTO, "openai"):
        label += f" ({settings.mode})"
    if settings.upstreams:
        label += " + " + ", ".join(settings.upstreams)
    return label


def routed_to(upstream: str | None, model: str) -> str:
    """`model`, prefixed with the upstream's name when a routing rule picked another one."""
    if upstream in (None, "", DEFAULT_UPSTREAM):
        return model
    return f"{upstream}:{model}" if model else str(upstream)


def upstream_label(url: str) -> str:
    """host[:port]/path of the upstream: never its user, password or query string."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path.rstrip('/')}"


def seconds(value: float | None) -> str:
    """A duration in 5 characters (under 100 hours): 850ms, 1.25s, 12.5s, 2m05s, 1h02m."""
    if value is None:
        return "-"
    if value < 0.9995:
        return f"{max(value, 0) * 1000:.0f}ms"
    if value < 9.995:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def money(usd: float | None) -> str:
    """A cost in 7 characters (under $100k): ?, $0, $0.0123, $12.34, $1,234, $12,345."""
    if usd is None:
        return "?"
    if usd == 0:
        return "$0"
    if usd < 0.99995:
        return f"${usd:.4f}"
    if usd < 99.995:
        return f"${usd:.2f}"
    return f"${usd:,.0f}"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"


def cost_text(exchange: Exchange) -> str:
    """An exchange's cost: "-" before it is priced, "?" when its price is unknown."""
    return "-" if exchange.cost is None else money(exchange.cost.usd)


def count(value: int) -> str:
    """A token count in 5 characters (under a billion): 999, 12.3k, 123k, 1.23M, 12.3M, 123M."""
    if value < 1000:
        return str(value)
    if value < 99_950:
        return f"{value / 1000:.1f}k"
    if value < 999_500:
        return f"{round(value / 1000)}k"
    if value < 9_995_000:
        return f"{value / 1_000_000:.2f}M"
    if value < 99_950_000:
        return f"{value / 1_000_000:.1f}M"
    return f"{round(value / 1_000_000)}M"


def uptime(value: float) -> str:
    whole = int(value)
    days, rest = divmod(whole, 86400)
    clock = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


_DATED = re.compile(r"-\d{8}$")


def short_model(name: str) -> str:
    """Claude Code's model names without the constant parts: sonnet-4-5, haiku-4-5."""
    return _DATED.sub("", name.removeprefix("claude-"))


def models(exchange: Exchange) -> str:
    """client → [upstream name:]upstream model; "…" while the body is not read yet, "-" if it
    never was."""
    client = short_model(exchange.client_model) if exchange.client_model else ""
    upstream = exchange.upstream_model
    if not client:
        return "…" if exchange.finished is None else "-"
    target = routed_to(
        exchange.upstream, "" if upstream in (client, exchange.client_model) else upstream
    )
    label = f"{client} → {target}" if target else client
    if exchange.routed_by.startswith("rule "):  # `rule 2 (pattern)`: which one took it
        label += f" [{exchange.routed_by.partition(' (')[0]}]"
    label += health_view.attempts_note(exchange)  # a fallback answered: after how many tries
    return f"↳ {label}" if exchange.agent_id else label  # a subagent's request


def status_style(status: int) -> str:
    if status < 300:
        return "green"
    if status < 400:
        return "cyan"
    return "yellow" if status < 500 else "red"


def status_piece(exchange: Exchange) -> Piece:
    # A stream that started with 200 and ended in an `error` event is a failure too.
    style = "red" if exchange.error and exchange.status < 400 else status_style(exchange.status)
    return str(exchange.status), style


def tokens_per_second(exchange: Exchange, now: float) -> float | None:
    if exchange.first_byte is None:
        return None
    end = exchange.finished if exchange.finished is not None else now
    elapsed = end - exchange.first_byte
    tokens = exchange.output_so_far
    return tokens / elapsed if elapsed > 0.05 and tokens else None


def error_text(exchange: Exchange) -> str:
    message = (exchange.error or "").strip().splitlines()
    first = message[0] if message else ""
    return f"{exchange.error_type}: {first}" if exchange.error_type else first


CANCELLED = "cancelled"
"""Shown for a stream its client closed early, beside the tokens it had got."""


def result(exchange: Exchange) -> Piece:
    if exchange.error:
        return error_text(exchange), "red"
    if exchange.cancelled:
        return CANCELLED, "yellow"
    if exchange.searches:  # the proxy ran web searches inside this answer
        return f"{exchange.stop_reason or '-'} {searched(exchange)}", ""
    return (exchange.stop_reason, "") if exchange.stop_reason else ("-", "dim")


def searched(exchange: Exchange) -> str:
    failed = f", {exchange.search_failures} failed" if exchange.search_failures else ""
    return f"({exchange.searches} web search{'es' if exchange.searches > 1 else ''}{failed})"


# -- lines of styled pieces, drawn straight to segments ------------------------------------

Piece = tuple[str, str]
"""Text and its rich style ("" for none)."""
Line = list[Piece]


@lru_cache(maxsize=64)
def _style(name: str) -> Style | None:
    return Style.parse(name) if name else None


def crop(line: Line, width: int) -> Line:
    """The line cut to `width` cells, with an ellipsis where it was cut."""
    out: Line = []
    used = 0
    for text, style in line:
        size = cell_len(text)
        if used + size > width:
            if width - used > 0:
                out.append((set_cell_size(text, width - used - 1) + "…", style))
            elif out:
                last, last_style = out[-1]
                out[-1] = (set_cell_size(last, cell_len(last) - 1) + "…", last_style)
            return out
        out.append((text, style))
        used += size
    return out


class Segments:
    """One line of pieces that rich only has to turn into segments, uncut (the terminal wraps
    it): a third of what the same `Text` costs to print. For printable text only: a `Text`
    also drops control characters and expands tabs."""

    def __init__(self, line: Line) -> None:
        self.line = line

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for text, style in self.line:
            yield Segment(text, _style(style))
        yield Segment.line()


class Frame:
    """Laid-out lines that rich only has to turn into segments: a rich `Table` or `Text`
    costs ten times more to draw, and the dashboard draws four times a second."""

    def __init__(self, lines: Sequence[Line], width: int) -> None:
        self.width = width
        self.lines = [crop(line, width) for line in lines]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        narrower = options.max_width < self.width
        for line in self.lines:
            for text, style in crop(line, options.max_width) if narrower else line:
                yield Segment(text, _style(style))
            yield newline


# -- tables that drop columns to fit -------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    width: int | None
    """None: flexible, shares what the fixed columns leave."""
    priority: int
    """0 is never dropped; the highest number goes first."""
    justify: str = "right"
    min_width: int = 10
    max_width: int | None = None
    """A flexible column's limit; what it cannot use goes to the other flexible columns."""


OPTIONAL = 4
"""Columns of this priority or more also give way when the flexible ones lack room."""
COMFORTABLE = 32
"""Width a flexible column is happy with (or less, if its content needs less)."""


def fit(
    columns: Sequence[Column], width: int, needs: Mapping[str, int] | None = None
) -> list[tuple[Column, int]]:
    """The columns that fit in `width` (one space between them), with their widths.

    The least important columns are dropped first: any droppable one while the minimum widths
    do not fit, the optional ones also while a flexible column gets less than it needs (up to
    `COMFORTABLE`). Flexible columns share the rest, each up to what its content needs
    (`needs`, by header) and its `max_width`."""
    needs = needs or {}
    kept = list(columns)
    limits = {
        id(c): min(c.max_width or width, max(needs.get(c.header, width), c.min_width))
        for c in columns
    }

    def room() -> int:
        return width - (sum(c.width or 0 for c in kept) + len(kept) - 1)

    def wanted() -> int:
        return sum(min(limits[id(c)], max(COMFORTABLE, c.min_width)) for c in kept if not c.width)

    def least(threshold: int) -> Column | None:
        droppable = [c for c in kept if c.priority >= threshold]
        return max(droppable, key=lambda c: (c.priority, kept.index(c)), default=None)

    while room() < sum(c.min_width for c in kept if not c.width) and (column := least(1)):
        kept.remove(column)
    while room() < wanted() and (column := least(OPTIONAL)):
        kept.remove(column)
    sizes = {id(c): c.width or 0 for c in kept}
    spare = max(room(), 0)
    open_ = [c for c in kept if c.width is None]
    while spare and open_:
        share = max(spare // len(open_), 1)
        for column in list(open_):
            grant = min(share, spare, limits[id(column)] - sizes[id(column)])
            sizes[id(column)] += grant
            spare -= grant
            if sizes[id(column)] >= limits[id(column)] or not spare:
                open_.remove(column)
    return [(c, max(sizes[id(c)], 1)) for c in kept]


Row = Mapping[str, Piece]


def table(
    columns: Sequence[Column], rows: Sequence[Row], width: int, title: str | None = None
) -> list[Line]:
    """`rows` (cells by column header) in the columns that fit `width`."""
    needs = {
        column.header: max(
            [len(column.header)] + [cell_len(r.get(column.header, _NONE)[0]) for r in rows]
        )
        for column in columns
    }
    chosen = fit(columns, width, needs)
    lines: list[Line] = [[(title, "bold")]] if title else []
    head = {column.header: (column.header, "bold") for column, _ in chosen}
    for row in [head, *rows]:
        line: Line = []
        for i, (column, size) in enumerate(chosen):
            text, style = row.get(column.header, _NONE)
            if cell_len(text) > size:
                text = set_cell_size(text, size - 1) + "…"
            pad = " " * (size - cell_len(text))
            gap = " " if i else ""
            if column.justify == "left":
                line += [(gap, ""), (text, style), (pad, "")]
            else:
                line += [(gap + pad, ""), (text, style)]
        while line and not line[-1][0].strip():
            line.pop()
        lines.append(line)
    return lines


_NONE: Piece = ("", "")


IN_FLIGHT_COLUMNS = (
    Column("id", 6, 4, "left"),
    Column("model", None, 0, "left", min_width=14, max_width=44),
    Column("mode", 6, 3, "left"),
    Column("elapsed", 7, 0),
    Column("ttft", 5, 1),
    Column("out", 5, 1),
    Column("tok/s", 6, 2),
)

RECENT_COLUMNS = (
    Column("time", 8, 3, "left"),
    Column("id", 6, 5, "left"),
    Column("model", None, 0, "left", min_width=21, max_width=44),
    Column("http", 4, 0),
    Column("dur", 5, 0),
    Column("ttft", 5, 2),
    Column("in", 5, 1),
    Column("cached", 6, 4),
    Column("out", 5, 1),
    Column("cost", 7, 4),
    Column("stop / error", None, 0, "left", min_width=20),
)


def short_id(request_id: str) -> str:
    return request_id[-6:]


def in_flight_row(exchange: Exchange, now: float) -> Row:
    rate = tokens_per_second(exchange, now)
    return {
        "id": (short_id(exchange.id), "dim"),
        "model": (models(exchange), ""),
        "mode": ("stream" if exchange.stream else "json", ""),
        "elapsed": (seconds(now - exchange.started), ""),
        "ttft": (seconds(exchange.ttft), ""),
        "out": (count(exchange.output_so_far) if exchange.first_byte is not None else "-", ""),
        "tok/s": (f"{rate:.1f}" if rate is not None else "-", ""),
    }


def recent_row(done: Finished) -> Row:
    exchange = done.exchange
    refused = exchange.status >= 400  # no tokens to speak of
    return {
        "time": (done.at.strftime("%H:%M:%S"), ""),
        "id": (short_id(exchange.id), "dim"),
        "model": (models(exchange), ""),
        "http": status_piece(exchange),
        "dur": (seconds(exchange.duration), ""),
        "ttft": (seconds(exchange.ttft), ""),
        "in": ("-" if refused else count(exchange.input_tokens), ""),
        "cached": ("-" if refused else count(exchange.cached_tokens), ""),
        "out": ("-" if refused else count(exchange.output_tokens), ""),
        "cost": ("-" if refused else cost_text(exchange), ""),
        "stop / error": result(exchange),
    }


# -- the dashboard ----------------------------------------------------------------------------


def header(view: View) -> list[Line]:
    info = view.info
    label = "dim"
    recording: Piece = ("on " + info.recording, "bold red") if info.recording else ("off", "")
    upstream: Piece = (
        (f"replay of {info.replay}", "bold magenta") if info.replay else (info.upstream, "bold")
    )
    return [
        [
            (f"claude-bridge {info.version}".rstrip(), "bold"),
            ("  listening ", label),
            (info.listen, "bold"),
            ("  upstream ", label),
            upstream,
        ],
        [
            ("models   ", label),
            ("big ", label),
            (info.big_model or "(as asked)", "cyan"),
            ("  small ", label),
            (info.small_model or "(as big)", "cyan"),
            ("  up ", label),
            (uptime(view.uptime), ""),
            ("  recording ", label),
            recording,
            *health_pieces(view.health),
        ],
        [
            ("requests ", label),
            (str(view.requests), "bold"),
            ("  errors ", label),
            (str(view.errors), "bold red" if view.errors else "bold"),
            ("  in flight ", label),
            (str(len(view.in_flight)), "bold"),
            ("  per min ", label),
            (str(view.per_minute), "bold"),
        ],
        [
            ("tokens   ", label),
            ("in ", label),
            (count(view.input_tokens), "cyan"),
            ("  cached ", label),
            (count(view.cached_tokens), "cyan"),
            ("  out ", label),
            (count(view.output_tokens), "cyan"),
            ("  cache writes ", label),
            (count(view.cache_write_tokens), "cyan"),
            ("  cache hit ", label),
            (percent(view.spend.hit if view.spend else None), "cyan"),
        ],
        cost_line(view),
        [(info.paste, "green")],
    ]


def health_pieces(health: Health) -> Line:
    """What follows the recording state: the journal writer falling behind, the workers."""
    line: Line = []
    if health.journal_stalls:
        line.append((f" (writer behind: {health.journal_stalls} waits)", "bold yellow"))
    if health.workers > 1:
        style = "bold" if health.serving == health.workers else "bold yellow"
        line += [("  workers ", "dim"), (f"{health.serving}/{health.workers}", style)]
    if health.restarts:
        line.append((f" ({health.restarts} restarted)", "yellow"))
    return line


def cost_line(view: View) -> Line:
    """The cost so far, and per client session, latest first (as many as the width shows)."""
    label = "dim"
    spend = view.spend or Spend()
    line: Line = [("cost     ", label), (money(spend.usd), "bold")]
    if spend.unpriced:
        line.append((f" + {spend.unpriced} unpriced", "yellow"))
    if view.sessions:
        line.append(("  sessions", label))
    for session, used in view.sessions:
        line += [
            (f"  {session[:8]} ", label),
            (money(used.usd) + ("+?" if used.unpriced else ""), ""),
            (f" {used.requests} req, hit {percent(used.hit)}", label),
        ]
    return line


def footer(view: View) -> list[Line]:
    label = "dim"
    latency: Line = [
        ("latency  ", label),
        ("p50/p95 duration ", label),
        (f"{seconds(view.duration_p50)} / {seconds(view.duration_p95)}", ""),
        ("  ttft ", label),
        (f"{seconds(view.ttft_p50)} / {seconds(view.ttft_p95)}", ""),
    ]
    if view.window:
        latency.append((f"  (last {view.window} ok)", label))
    errors: Line = [("errors   ", label)]
    if view.error_types:
        errors.append(("  ".join(f"{name} {n}" for name, n in view.error_types), "red"))
    else:
        errors.append(("none", label))
    return [latency, errors]


def warning_lines(warnings: Sequence[str], width: int) -> list[Line]:
    """Each start-up warning, wrapped (not cut: the fix is at the end) under a label."""
    lines: list[Line] = []
    for warning in warnings:
        for i, part in enumerate(textwrap.wrap(warning, max(width - 9, 20))):
            label = ("warning  ", "bold yellow") if i == 0 else (" " * 9, "")
            lines.append([label, (part, "yellow")])
    return lines


def stopping_line(in_flight: int, ends_in: float | None) -> str:
    """What `serve` says at once on Ctrl-C (and on a second one, `ends_in` 0)."""
    requests = f"{in_flight} request{'' if in_flight == 1 else 's'} in flight"
    if ends_in == 0:
        return f"stopping: ending {requests} now, each with an error"
    if not in_flight:
        return "stopping: no requests in flight"
    if ends_in is None:
        return f"stopping: waiting for {requests} to finish; Ctrl-C again ends them now"
    limit = seconds(ends_in)
    return f"stopping: {requests} get up to {limit} to finish; Ctrl-C again ends them now"


HEADER_LINES = 6
FOOTER_LINES = 2


def dashboard(view: View, width: int, height: int) -> Frame:
    """The whole screen, at most `width` columns and `height` lines."""
    width = max(width, 40)
    warnings = warning_lines(view.info.warnings, width)
    reports = view.health.upstreams
    if health_view.worth_showing(reports):  # several upstreams or keys: how each is doing
        warnings.insert(0, health_view.upstreams_line(reports))
    # Below about 16 lines not everything fits: rich's Live crops the bottom.
    budget = max(height - HEADER_LINES - len(warnings) - FOOTER_LINES - 1, 4)
    head = header(view)
    if cell_len(view.info.paste + OR_CODE) <= width:
        head[-1].append((OR_CODE, "dim"))  # the header ends with the paste line
    lines = [*head, *warnings, []]
    flying = list(view.in_flight)
    if flying:
        # In-flight rows take at most a third of the room; the rest is for recent requests.
        shown = min(len(flying), max(budget // 3 - 2, 1))
        rows = [in_flight_row(e, view.now) for e in flying[:shown]]
        if shown < len(flying):
            rows[-1] = {"model": (f"… {len(flying) - shown + 1} more", "dim")}
        lines += table(IN_FLIGHT_COLUMNS, rows, width, title=f"In flight ({len(flying)})")
        budget -= len(rows) + 2
    else:
        lines.append([("In flight ", "bold"), ("none", "dim")])
        budget -= 1
    if view.recent:
        shown = max(min(len(view.recent), budget - 2), 1)
        rows = [recent_row(done) for done in view.recent[:shown]]
        title = f"Recent ({view.requests} done, newest first)"
        lines += table(RECENT_COLUMNS, rows, width, title=title)
    else:
        lines.append([("Recent ", "bold"), ("no requests yet", "dim")])
    lines += footer(view)
    return Frame(lines, width)


# -- one line per request ---------------------------------------------------------------------


def exchange_line(exchange: Exchange, at: datetime | None = None) -> Text:
    """A finished request on one line, for `serve --no-dashboard` and non-terminal output."""
    return Text.assemble(*exchange_pieces(exchange, at))


def exchange_pieces(exchange: Exchange, at: datetime | None = None) -> Line:
    """`exchange_line` as styled pieces: where no terminal shows the styles, their texts joined
    are the line, without the cost of a rich `Text` (`serve` prints one per request)."""
    line: Line = []
    add = line.append
    if at is not None:
        # `strftime` costs four times as much.
        add((f"{at.hour:02d}:{at.minute:02d}:{at.second:02d} ", "dim"))
    add(status_piece(exchange))
    add((f" {models(exchange)}", ""))
    if exchange.stream:
        add((" stream", "dim"))
    add((f"  {seconds(exchange.duration)}", ""))
    if exchange.ttft is not None:
        add((f" ttft {seconds(exchange.ttft)}", "dim"))
    if exchange.status < 400:
        add((f"  in {count(exchange.input_tokens)}", "cyan"))
        if exchange.cached_tokens:
            add((f" (+{count(exchange.cached_tokens)} cached)", "cyan"))
        add((f" out {count(exchange.output_tokens)}", "cyan"))
        if exchange.cost is not None:
            add((f" {cost_text(exchange)}", "cyan"))
        if exchange.stop_reason and not exchange.error:
            add((f"  {exchange.stop_reason}", "dim"))
        elif exchange.cancelled and not exchange.error:
            add((f"  {CANCELLED}", "yellow"))
        if exchange.searches:
            add((f" {searched(exchange)}", "dim"))
    if exchange.error:
        add((f"  {error_text(exchange)[:120]}", "red"))
    add((f"  {exchange.id}", "dim"))
    if exchange.session_id:
        agent = f" agent {exchange.agent_id}" if exchange.agent_id else ""
        add((f"  session {exchange.session_id[:8]}{agent}", "dim"))
    return line
