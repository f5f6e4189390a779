"""The dashboard, the request lines, the JSON events and the structured logs of `serve`.

The dashboard is checked as text: a scripted run of bus events (fake clocks) becomes a frame,
rendered on a fixed-width console and compared with `tests/data/dashboard/*.txt`. To rewrite
those files after an intended change: CLAUDE_BRIDGE_UPDATE_GOLDEN=1 pytest tests/test_dashboard.py
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from claude_bridge.cli import dashboard as dashboard_module
from claude_bridge.cli import render
from claude_bridge.cli.commands import serve as serve_command
from claude_bridge.cli.commands.serve import JsonEvents, secrets_of
from claude_bridge.cli.dashboard import Dashboard, percentile
from claude_bridge.cli.main import app
from claude_bridge.cli.render import ServerInfo, exchange_line
from claude_bridge.proxy import logs
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.events import Bus, Exchange, delta_chars

DATA = Path(__file__).parent / "data" / "dashboard"
UPDATE = os.environ.get("CLAUDE_BRIDGE_UPDATE_GOLDEN") == "1"
T0 = 1000.0
WALL0 = datetime(2025, 5, 1, 12, 0, 0)
SECRET = "sk-test-0123456789abcdefSECRET"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return WALL0 + timedelta(seconds=self.now - T0)


INFO = ServerInfo(
    listen="127.0.0.1:8082",
    upstream="llm.example.com:8080/v1",
    paste=render.client_command("127.0.0.1", 8082, None),
    big_model="qwen3-coder-30b",
    small_model="qwen3-4b",
    version="0.1.0",
)


def rid(suffix: str) -> str:
    return "req_01" + "X" * (22 - len(suffix)) + suffix


def exchange(suffix: str, started: float, **fields: object) -> Exchange:
    ex = Exchange(id=rid(suffix), route="messages", started=started)
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


SONNET = {"client_model": "claude-sonnet-4-5-20250929", "upstream_model": "qwen3-coder-30b"}
HAIKU = {"client_model": "claude-haiku-4-5-20251001", "upstream_model": "qwen3-4b"}


def scripted(clock: FakeClock) -> Dashboard:
    """Five finished requests (one of each outcome) and two in flight, seen at T0 + 60 s."""
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    bus = Bus()
    bus.subscribe(board)

    def run(ex: Exchange, **end: object) -> None:
        clock.now = ex.started
        bus.publish("start", ex)
        for name, value in end.items():
            setattr(ex, name, value)
        clock.now = ex.finished or clock.now
        bus.publish("finish", ex)

    run(
        exchange("a1b2c3", T0 + 1, stream=True, **SONNET),
        first_byte=T0 + 1.35, finished=T0 + 3.2, status=200, input_tokens=12345,
        cached_tokens=8000, output_tokens=456, stop_reason="end_turn",
    )  # fmt: skip
    run(
        exchange("d4e5f6", T0 + 4, **HAIKU),
        first_byte=T0 + 4.8, finished=T0 + 4.81, status=200, input_tokens=800,
        output_tokens=20, stop_reason="tool_use",
    )  # fmt: skip
    run(
        exchange("g7h8i9", T0 + 10, stream=True, **SONNET),
        finished=T0 + 10.05, status=529, error_type="overloaded_error",
        error="upstream is overloaded, try again later",
    )  # fmt: skip
    run(
        exchange("j1k2l3", T0 + 20, stream=True, **SONNET),
        first_byte=T0 + 20.5, finished=T0 + 35, status=200, input_tokens=30500,
        output_tokens=300, error_type="api_error",
        error="upstream connection failed: connection reset\nmore detail",
    )  # fmt: skip
    run(
        exchange("m4n5o6", T0 + 40),
        finished=T0 + 40.002, status=400, error_type="invalid_request_error",
        error="messages.0.content: Field required",
    )  # fmt: skip
    flying = exchange("p7q8r9", T0 + 55, stream=True, **SONNET)
    slow = exchange("s1t2u3", T0 + 59, **HAIKU)
    clock.now = T0 + 55
    bus.publish("start", flying)
    clock.now = T0 + 59
    bus.publish("start", slow)
    # Progress the pipeline writes on the live exchange while it streams: no event needed.
    flying.first_byte = T0 + 55.4
    flying.output_chars = 1000
    clock.now = T0 + 60
    return board


def text_of(renderable: RenderableType, width: int) -> str:
    console = Console(
        width=width, file=io.StringIO(), color_system=None, legacy_windows=False, record=True
    )
    console.print(renderable)
    return normalise(console.export_text())


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"


def check_golden(name: str, text: str) -> None:
    path = DATA / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with CLAUDE_BRIDGE_UPDATE_GOLDEN=1"
    assert text == normalise(path.read_text(encoding="utf-8"))


# -- the dashboard frame ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [80, 160])
def test_scripted_frame_matches_golden(width: int) -> None:
    view = scripted(FakeClock()).view()
    text = text_of(render.dashboard(view, width, 40), width)
    check_golden(f"scripted-{width}.txt", text)
    assert all(len(line) <= width for line in text.splitlines())


def test_scripted_frame_facts() -> None:
    """What the golden files show, said in words."""
    view = scripted(FakeClock()).view()
    assert (view.requests, view.errors, len(view.in_flight)) == (5, 3, 2)
    assert (view.input_tokens, view.cached_tokens, view.output_tokens) == (43645, 8000, 776)
    assert view.per_minute == 5
    assert [e.id[-6:] for e in view.in_flight] == ["p7q8r9", "s1t2u3"]
    assert view.recent[0].exchange.id.endswith("m4n5o6")
    assert view.recent[0].at == WALL0 + timedelta(seconds=40.002)
    assert dict(view.error_types) == {
        "overloaded_error": 1, "api_error": 1, "invalid_request_error": 1,
    }  # fmt: skip
    # Percentiles over the successful requests only: 2.2 s and 0.81 s; ttft 0.35 s and 0.8 s.
    assert view.duration_p50 == pytest.approx(0.81)
    assert view.duration_p95 == pytest.approx(2.2)
    assert view.ttft_p50 == pytest.approx(0.35)


def test_columns_are_dropped_to_fit_narrow_terminals() -> None:
    view = scripted(FakeClock()).view()
    narrow = text_of(render.dashboard(view, 80, 40), 80)
    wide = text_of(render.dashboard(view, 160, 40), 160)
    assert "cached" not in narrow.split("Recent")[1] and "cached" in wide.split("Recent")[1]
    assert "a1b2c3" not in narrow and "a1b2c3" in wide  # recent ids only when there is room
    for width in range(40, 200, 7):
        text = text_of(render.dashboard(view, width, 40), width)
        assert max(len(line) for line in text.splitlines()) <= width, width
        assert "sonnet" in text and "529" in text


def test_optional_columns_give_way_to_models_and_errors() -> None:
    """At 100 columns the request id and cached tokens go, so models and errors are legible."""
    view = scripted(FakeClock()).view()
    recent = text_of(render.dashboard(view, 100, 40), 100).split("Recent")[1]
    assert "cached" not in recent and "a1b2c3" not in recent
    assert "sonnet-4-5 → qwen3-coder-30b" in recent
    assert "overloaded_error: upstream is ov…" in recent


def test_status_and_errors_are_coloured_by_class() -> None:
    view = scripted(FakeClock()).view()
    console = Console(width=160, file=io.StringIO(), color_system="standard", record=True)
    console.print(render.dashboard(view, 160, 40))
    ansi = console.export_text(styles=True)
    assert "\x1b[33m400\x1b[0m" in ansi  # 4xx yellow
    assert "\x1b[31m529\x1b[0m" in ansi  # 5xx red
    assert "\x1b[31m200\x1b[0m" in ansi  # a stream that ended in an error event: red
    assert "\x1b[32m200\x1b[0m" in ansi  # success green
    assert "\x1b[31moverloaded_error: upstream is overloaded" in ansi


def test_frame_fits_the_terminal_height() -> None:
    clock = FakeClock()
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    for i in range(300):
        ex = exchange(f"{i:06d}", T0 + i, status=200, finished=T0 + i + 0.5, **SONNET)
        board("start", ex)
        board("finish", ex)
    for i in range(50):
        board("start", exchange(f"f{i:05d}", T0 + 300, **SONNET))
    clock.now = T0 + 310
    view = board.view()
    assert view.requests == 300 and len(view.recent) == dashboard_module.RECENT
    for height in (16, 24, 50):
        text = text_of(render.dashboard(view, 100, height), 100)
        assert len(text.splitlines()) <= height, height
        assert "more" in text  # the in-flight table says how many it could not show


def test_empty_dashboard() -> None:
    clock = FakeClock()
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    clock.now = T0 + 3725
    text = text_of(board.renderable(), 80)
    check_golden("empty-80.txt", text)
    assert "up 1:02:05" in text and "no requests yet" in text


def test_listener_does_no_drawing_and_draws_at_frame_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events only queue; the state (and any drawing) is computed when a frame is taken."""
    drawn: list[int] = []
    real = render.dashboard

    def counted(view: render.View, width: int, height: int) -> RenderableType:
        drawn.append(1)
        return real(view, width, height)

    monkeypatch.setattr(render, "dashboard", counted)
    clock = FakeClock()
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    bus = Bus()
    bus.subscribe(board)
    for i in range(1000):
        ex = exchange(f"{i:06d}", T0, status=200, finished=T0 + 1, **HAIKU)
        bus.publish("start", ex)
        bus.publish("finish", ex)
    assert drawn == [] and board._requests == 0
    board.renderable()
    assert drawn == [1] and board._requests == 1000


def test_a_failing_frame_is_logged_once_and_swallowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> RenderableType:
        raise ValueError("boom")

    monkeypatch.setattr(render, "dashboard", broken)
    board = Dashboard(INFO, console=Console(file=io.StringIO(), width=80))
    with caplog.at_level(logging.ERROR, logger="claude_bridge.dashboard"):
        first = text_of(board.renderable(), 80)
        board.renderable()
    assert "dashboard failed (ValueError: boom)" in first
    assert [r.getMessage() for r in caplog.records] == ["dashboard frame failed"]


def test_a_lost_finish_does_not_leave_a_ghost_in_flight() -> None:
    clock = FakeClock()
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    ex = exchange("ghost1", T0, **SONNET)
    board("start", ex)
    assert len(board.view().in_flight) == 1
    ex.finished, ex.status = T0 + 1, 200  # finished, but its "finish" never reached us
    assert board.view().in_flight == []


def test_requests_per_minute_counts_the_last_sixty_seconds() -> None:
    clock = FakeClock()
    board = Dashboard(INFO, clock=clock, wall=clock.wall)
    for t in (0.5, 10, 59.5, 70, 125):
        ex = exchange(f"{int(t * 10):06d}", T0 + t, finished=T0 + t, status=200, **HAIKU)
        board("finish", ex)
    clock.now = T0 + 125.5
    assert board.view().per_minute == 2  # 70 and 125
    clock.now = T0 + 200
    assert board.view().per_minute == 0


def test_numbers_fit_their_columns() -> None:
    cases = [0.0, 0.0004, 0.9994, 0.9996, 9.994, 9.996, 59.96, 3599.9, 359_999.0]
    assert [render.seconds(v) for v in cases] == [
        "0ms", "0ms", "999ms", "1.00s", "9.99s", "10.0s", "60.0s", "59m59s", "99h59m",
    ]  # fmt: skip
    counts = [0, 999, 1000, 99_949, 99_950, 999_499, 999_500, 12_345_678, 999_999_999]
    assert [render.count(v) for v in counts] == [
        "0", "999", "1.0k", "99.9k", "100k", "999k", "1.00M", "12.3M", "1000M",
    ]  # fmt: skip


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def test_delta_chars_counts_streamed_output() -> None:
    assert delta_chars({"type": "text_delta", "text": "hello"}) == 5
    assert delta_chars({"type": "input_json_delta", "partial_json": '{"a":'}) == 5
    assert delta_chars({"type": "signature_delta", "signature": "abc"}) == 0
    ex = Exchange(id="x", route="messages", output_chars=10)
    assert ex.output_so_far == 3
    ex.output_tokens = 7
    assert ex.output_so_far == 7


# -- what is shown never has secrets ---------------------------------------------------------


def test_server_info_shows_no_credentials() -> None:
    settings = Settings.model_validate(
        {
            "openai_base_url": "https://user:pw@llm.example.com:8443/v1/?key=abc",
            "upstreams": {"other": {"base_url": "http://other.example/v1", "api_key": SECRET}},
            "big_model": "big",
        }
    )
    info = ServerInfo.from_settings(settings)
    assert info.upstream == "llm.example.com:8443/v1 + other"
    view = Dashboard(info).view()
    text = text_of(render.dashboard(view, 160, 40), 160)
    assert "pw" not in text and "key=" not in text and SECRET not in text
    assert secrets_of(settings) == ["pw", SECRET]


# -- one line per request, and JSON events ----------------------------------------------------


def test_exchange_line() -> None:
    ex = exchange(
        "a1b2c3", T0, stream=True, first_byte=T0 + 0.3, finished=T0 + 1.5, status=200,
        input_tokens=1200, cached_tokens=800, output_tokens=42, stop_reason="end_turn", **SONNET,
    )  # fmt: skip
    line = exchange_line(ex, WALL0).plain
    assert line == (
        "12:00:00 200 sonnet-4-5 → qwen3-coder-30b stream  1.50s ttft 300ms  in 1.2k "
        f"(+800 cached) out 42  end_turn  {ex.id}"
    )
    ex.status, ex.error_type, ex.error = 504, "timeout_error", "timed out waiting for upstream"
    assert "504 sonnet-4-5" in exchange_line(ex).plain
    assert "timeout_error: timed out waiting for upstream" in exchange_line(ex).plain


def test_request_line_pieces_are_the_line() -> None:
    """`serve` prints the pieces joined where no terminal shows styles: the same line."""
    ok = exchange(
        "a1b2c3", T0, first_byte=T0 + 0.3, finished=T0 + 1.5, status=200, input_tokens=12,
        output_tokens=3, stop_reason="end_turn", session_id="0123456789", agent_id="a7", **SONNET,
    )  # fmt: skip
    cut = exchange("d4e5f6", T0, stream=True, finished=T0 + 9, status=200, cancelled=True)
    failed = exchange("a7b8c9", T0, finished=T0 + 2, status=502, error="bad\ngateway", **HAIKU)
    for ex in (ok, cut, failed):
        for at in (WALL0, None):
            pieces = render.exchange_pieces(ex, at)
            assert "".join(text for text, _ in pieces) == exchange_line(ex, at).plain


def test_json_events_one_object_per_line_per_event() -> None:
    out = io.StringIO()
    events = JsonEvents(out, logs.Redactor([SECRET]))
    ex = exchange("a1b2c3", T0)
    events("start", ex)
    ex.client_model, ex.upstream_model, ex.stream = SONNET["client_model"], "qwen3", True
    events("routed", ex)
    events("first_byte", ex)  # not one of ours: ignored
    ex.first_byte, ex.finished, ex.status = T0 + 0.25, T0 + 1.5, 401
    ex.error_type, ex.error = "authentication_error", f"Incorrect API key provided: {SECRET}"
    events("finish", ex)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["start", "routed", "error"]
    assert all(r["request_id"] == ex.id and r["ts"].endswith("Z") for r in records)
    assert records[1]["client_model"] == SONNET["client_model"]
    end = records[2]
    assert (end["status"], end["duration_ms"], end["ttft_ms"]) == (401, 1500.0, 250.0)
    assert end["error_type"] == "authentication_error"
    assert SECRET not in out.getvalue() and "[redacted]" in end["error"]


# -- structured logs --------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ["claude_bridge", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"]
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
            logging.getLogger(n).propagate)
        for n in names
    }  # fmt: skip
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_serve_prints_each_finished_request_as_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --no-dashboard` prints cheaper than through a rich `Text`, but the same."""
    ok = exchange("a1b2c3", T0, finished=T0 + 1, status=200, stop_reason="end_turn", **SONNET)
    odd = exchange("d4e5f6", T0, finished=T0 + 2, status=502, error="bad\tgate\x07way", **HAIKU)
    monkeypatch.setattr(
        serve_command, "datetime", type("Now", (), {"now": staticmethod(lambda: WALL0)})
    )
    for terminal in (True, False):
        for ex in (ok, odd):
            printed, expected = io.StringIO(), io.StringIO()
            colors = "standard" if terminal else None
            console = Console(file=printed, width=60, force_terminal=terminal, color_system=colors)
            monkeypatch.setattr(serve_command, "stdout", console)
            serve_command.print_line("finish", ex)
            line = exchange_line(ex, WALL0)
            if terminal:
                Console(file=expected, width=60, force_terminal=True, color_system=colors).print(
                    line, soft_wrap=True, highlight=False
                )
            else:  # a pipe or a file: the plain text
                expected.write(line.plain + "\n")
            assert printed.getvalue() == expected.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_request_records_are_built_only_for_a_handler_that_takes_them(tmp_path: Path) -> None:
    requests = logging.getLogger(logs.REQUESTS_LOGGER)
    logs.configure("info", io.StringIO())  # the console shows warnings: no record per request
    assert not logs.handled(requests, logging.INFO)
    assert logs.handled(requests, logging.WARNING)
    logs.configure("info", io.StringIO(), file=tmp_path / "bridge.jsonl")
    assert logs.handled(requests, logging.INFO)
    assert not logs.handled(requests, logging.DEBUG)


def test_a_listener_hears_the_kinds_it_subscribed_to_in_subscription_order() -> None:
    bus, heard = Bus(), []
    bus.subscribe(lambda kind, _: heard.append(f"first {kind}"))
    bus.subscribe(lambda kind, _: heard.append(f"ends {kind}"), ("start", "finish"))
    bus.subscribe(lambda kind, _: heard.append(f"last {kind}"))
    for kind in ("start", "routed", "finish"):
        bus.publish(kind, exchange("a1b2c3", T0))
    assert heard == [
        "first start", "ends start", "last start", "first routed", "last routed",
        "first finish", "ends finish", "last finish",
    ]  # fmt: skip


def read_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_log_file_records_carry_request_ids_and_no_secrets(tmp_path: Path) -> None:
    console = io.StringIO()
    path = tmp_path / "logs" / "bridge.jsonl"
    logs.configure("debug", console, file=path, console_format="text", secrets=[SECRET])
    pipeline_log = logging.getLogger("claude_bridge.pipeline")
    request_log = logs.RequestLog()
    ex = exchange("a1b2c3", T0, **SONNET)

    def one_request() -> None:  # what the pipeline does, in one request's context
        request_log("start", ex)
        pipeline_log.debug("routed %s -> %s", ex.client_model, ex.upstream_model)
        body = {
            "model": "m",
            "api_key": SECRET,
            "messages": [{"role": "user", "content": "x" * 500}],
        }
        logs.log_body(pipeline_log, "request body", json.dumps(body).encode())
        pipeline_log.warning("upstream said Authorization: Bearer %s", SECRET)
        ex.finished, ex.status, ex.error_type, ex.error = T0 + 2, 502, "api_error", "bad gateway"
        request_log("finish", ex)

    contextvars.copy_context().run(one_request)
    logging.getLogger("claude_bridge.app").info("outside any request")
    records = read_records(path)
    assert [r["msg"] for r in records] == [
        "request started", "routed claude-sonnet-4-5-20250929 -> qwen3-coder-30b",
        "request body", "upstream said Authorization: Bearer [redacted]", "request failed",
        "outside any request",
    ]  # fmt: skip
    assert [r.get("request_id") for r in records] == [ex.id] * 5 + [None]
    assert records[2]["body"] == {
        "model": "m", "api_key": "[redacted]",
        "messages": [{"role": "user", "content": "x" * 200 + "...(+300 chars)"}],
    }  # fmt: skip
    end = records[4]
    assert (end["level"], end["event"], end["status"], end["duration_ms"]) == (
        "warning", "error", 502, 2000.0,
    )  # fmt: skip
    assert SECRET not in path.read_text(encoding="utf-8")
    # The console shows the records a human needs, never the request records twice.
    shown = console.getvalue()
    assert "upstream said Authorization: Bearer [redacted]" in shown and f"[{ex.id}]" in shown
    assert "request failed" not in shown and SECRET not in shown


@pytest.mark.usefixtures("restore_logging")
def test_uvicorn_access_lines_are_folded_into_the_log_file(tmp_path: Path) -> None:
    console = io.StringIO()
    path = tmp_path / "bridge.jsonl"
    logs.configure("info", console, file=path)
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", "/v1/messages", "1.1", 200)
    logging.getLogger("uvicorn.error").info("Uvicorn running", extra={"color_message": "\x1b[1m"})
    logging.getLogger("uvicorn.error").error("address already in use")
    records = read_records(path)
    assert records[0] == {
        **{k: records[0][k] for k in ("ts",)},
        "level": "info", "logger": "uvicorn.access", "msg": "http POST /v1/messages 200",
        "client": "127.0.0.1:5555", "method": "POST", "path": "/v1/messages",
        "http_version": "1.1", "status": 200,
    }  # fmt: skip
    assert records[1]["msg"] == "Uvicorn running" and "color_message" not in records[1]
    # On the console: the error only, once (no access line, no uvicorn handler of its own).
    lines = [json.loads(line) for line in console.getvalue().splitlines()]
    assert [r["msg"] for r in lines] == ["address already in use"]


@pytest.mark.usefixtures("restore_logging")
def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "bridge.jsonl"
    logs.configure("info", io.StringIO(), file=path, max_bytes=2000, backups=2)
    for i in range(100):
        logging.getLogger("claude_bridge.app").info("record %d %s", i, "x" * 50)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bridge.jsonl", "bridge.jsonl.1", "bridge.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert str(read_records(path)[-1]["msg"]).endswith("x" * 50)


def test_redactor() -> None:
    redact = logs.Redactor(["s3cr3t-value"])
    assert redact("key s3cr3t-value here") == "key [redacted] here"
    assert redact('{"x-api-key": "abcdef123"}') == '{"x-api-key": "[redacted]"}'
    assert redact("api_key=abcdef123&b=1") == "api_key=[redacted]&b=1"
    assert redact("sk-or-v1-0123456789abcdef") == "sk-[redacted]"
    assert redact("authorization: Bearer abcdefgh123") == "authorization: Bearer [redacted]"
    assert redact("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic [redacted]"
    assert redact('{"max_tokens": 1024}') == '{"max_tokens": 1024}'


# -- `serve`'s choice of output and uvicorn's logging -------------------------------------------


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("flags", [[], ["--log-format", "json"], ["--log-file", "{tmp}/b.jsonl"]])
def test_serve_picks_its_output_and_folds_uvicorn_logging(
    flags: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[uvicorn.Config] = []

    def run(self: uvicorn.Server, sockets: object = None) -> None:
        ran.append(self.config)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.chdir(tmp_path)
    env = {"OPENAI_API_KEY": SECRET, "CLAUDE_BRIDGE_HOME": str(tmp_path), "BIG_MODEL": "qwen"}
    args = ["serve", "--port", "9999", *(f.format(tmp=tmp_path) for f in flags)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert ran[0].log_config is None  # no uvicorn handlers: its records reach ours
    assert ran[0].access_log is ("--log-file" in flags)  # access lines only where folded in
    assert SECRET not in result.output
    if "json" in flags:
        first = json.loads(result.output.splitlines()[0])
        assert (first["event"], first["listen"], first["big_model"]) == (
            "listening", "127.0.0.1:9999", "qwen",
        )  # fmt: skip
    else:  # CliRunner's stdout is no terminal: request lines, not the dashboard
        paste = "ANTHROPIC_BASE_URL=http://127.0.0.1:9999 ANTHROPIC_AUTH_TOKEN=unused claude"
        assert paste in result.output
