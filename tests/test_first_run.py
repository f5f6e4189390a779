"""A new user's first run and everyday use of the CLI: nothing misleads, everything answers.

`serve` says at start what is missing or suspicious, binds before it draws, prints the line
that starts Claude Code; the ids it shows work with `replay show`; Ctrl-C says at once what it
waits for; a cancelled stream shows as cancelled. Real servers on loopback where the point is
what a client sees; `serve` in process (uvicorn's `run` replaced) where it is what it prints.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import uvicorn
from conftest import CLIENT_TIMEOUT, START_TIMEOUT, bridge_settings, make_client, start_bridge
from test_cli import assert_one_error_line, home, invoke
from test_dashboard import restore_logging, text_of
from typer.testing import Result
from upstream import FakeUpstream, JSONReply, SSEReply, chunk, completion

from claude_bridge.cli import main as main_module
from claude_bridge.cli import render
from claude_bridge.cli.dashboard import Dashboard
from claude_bridge.proxy import logs
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings, UpstreamSettings
from claude_bridge.proxy.diagnose import diagnose, is_local
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal.writer import Recorder

__all__ = ["home", "restore_logging"]  # fixtures, imported for their use here

MODEL = "claude-sonnet-4-5"
HI: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
CLI = Path(sys.executable).parent / "claude-bridge"


# -- start-up diagnostics, a pure function ------------------------------------------------------


def findings(**values: Any) -> list[str]:
    return [str(f) for f in diagnose(Settings(**values))]


def test_nothing_configured_says_what_is_missing_and_how_to_fix_it() -> None:
    assert findings() == [
        "no API key for the upstream api.openai.com (it will refuse every request): set "
        "OPENAI_API_KEY (in the environment or .env)",
        "Claude model names (opus, sonnet, haiku) would reach api.openai.com unchanged: set "
        "BIG_MODEL and SMALL_MODEL to models it serves, or add [[routes]] rules",
    ]


def test_a_local_upstream_needs_no_key_and_llama_server_takes_any_model_name() -> None:
    assert findings(openai_base_url="http://127.0.0.1:8080/v1") == []
    assert findings(openai_base_url="http://ollama:11434/v1", big_model="qwen3") == []
    assert all(is_local(h) for h in ("localhost:1", "[::1]:8000", "10.1.2.3", "box.lan"))
    assert not any(is_local(h) for h in ("api.openai.com", "8.8.8.8:443", "openrouter.ai"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:8080/v1/chat/completions",
            "the upstream's base URL ends in /chat/completions, which claude-bridge adds itself: "
            "set OPENAI_BASE_URL to http://127.0.0.1:8080/v1",
        ),
        (
            "https://openrouter.ai/v1",
            "the upstream's base URL https://openrouter.ai/v1 lacks /api/v1, which OpenRouter "
            "serves its API under: set OPENAI_BASE_URL to https://openrouter.ai/api/v1",
        ),
        (
            "http://127.0.0.1:8000",
            "the upstream's base URL http://127.0.0.1:8000 lacks /v1, which vLLM serves its API "
            "under: set OPENAI_BASE_URL to http://127.0.0.1:8000/v1",
        ),
        (
            "https://bob:secret@api.groq.com/v1",  # the password is never printed
            "the upstream's base URL https://api.groq.com/v1 lacks /openai/v1, which Groq serves "
            "its API under: set OPENAI_BASE_URL to https://api.groq.com/openai/v1",
        ),
    ],
)
def test_base_urls_that_cannot_work(url: str, expected: str) -> None:
    key = None if "@" in url else "k"  # a URL's `user:password@` is its credential
    assert findings(openai_base_url=url, openai_api_key=key, big_model="m") == [expected]


def test_right_base_urls_and_mapped_names_say_nothing() -> None:
    for url in (
        "https://openrouter.ai/api/v1",
        "https://api.groq.com/openai/v1",
        "https://generativelanguage.googleapis.com/v1beta/openai/",
        "https://api.deepseek.com",
    ):
        assert findings(openai_base_url=url, openai_api_key="k", big_model="m") == [], url


def test_named_upstreams_and_routes() -> None:
    settings = Settings(
        openai_api_key="k",
        upstreams={"gw": UpstreamSettings(base_url="https://gw.example/v1", api_key_env="GW_KEY")},
        routes=[{"pattern": "*haiku*", "upstream": "gw", "model": "small"}],  # type: ignore[list-item]
    )
    assert [str(f) for f in diagnose(settings)] == [
        "no API key for upstream 'gw' gw.example (it will refuse every request): set GW_KEY (in "
        "the environment or .env)",
        "Claude model names (opus, sonnet) would reach api.openai.com unchanged: set BIG_MODEL "
        "to models it serves, or add [[routes]] rules",
    ]
    # Answered from a journal (`--upstream-replay`): keys and names do not matter.
    assert diagnose(settings, offline=True) == []


# -- serve, in process: what it prints before it serves ---------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Server]:
    """`serve` runs up to uvicorn, which returns at once as if started and stopped."""
    ran: list[uvicorn.Server] = []

    def run(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        ran.append(self)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return ran


def serve(*args: str) -> Result:
    return invoke("serve", "--port", "0", *args)


@pytest.mark.usefixtures("home", "restore_logging")
def test_serve_prints_each_finding_with_its_fix(served: list[uvicorn.Server]) -> None:
    result = serve("--no-dashboard")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {finding}" for finding in findings()]

    as_json = serve("--log-format", "json")
    listening = json.loads(as_json.stdout.splitlines()[0])
    assert listening["warnings"] == findings()
    assert "warning" not in as_json.stderr


@pytest.mark.usefixtures("home", "restore_logging")
def test_a_port_in_use_is_one_line_before_anything_is_drawn(
    served: list[uvicorn.Server],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("serve", "--port", str(port), "--no-dashboard")
    assert_one_error_line(
        result,
        f"port {port} on 127.0.0.1 is already in use (another `claude-bridge serve`?): stop it, "
        "or pick another port with --port",
    )
    assert served == []  # no paste line, no dashboard, no server


@pytest.mark.usefixtures("home", "restore_logging")
def test_serve_binds_then_serves_on_its_socket(served: list[uvicorn.Server]) -> None:
    result = serve("--no-dashboard")
    port = int(re.findall(r"ANTHROPIC_BASE_URL=http://127\.0\.0\.1:(\d+) ", result.stdout)[0])
    assert port != 0  # the port the socket got, so the line works
    assert served and served[0].config.port == port


# -- the line that starts Claude Code ------------------------------------------------------------


def test_the_paste_line_uses_an_auth_token_claude_code_takes_at_once() -> None:
    assert render.client_command("127.0.0.1", 8082, None) == (
        "ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_AUTH_TOKEN=unused claude"
    )
    assert render.client_command("0.0.0.0", 1, "s3cret it's") == (
        "ANTHROPIC_BASE_URL=http://127.0.0.1:1 ANTHROPIC_AUTH_TOKEN='s3cret it'\"'\"'s' claude"
    )
    assert render.client_command("::", 2, None).startswith("ANTHROPIC_BASE_URL=http://[::1]:2 ")


def test_the_dashboard_shows_the_token_the_proxy_asks_for() -> None:
    settings = Settings(auth_token="tok-0123456789abcdef", big_model="m")
    info = render.ServerInfo.from_settings(settings, warnings=("no key for x: set it",))
    text = text_of(render.dashboard(Dashboard(info).view(), 100, 30), 100)
    assert (
        "ANTHROPIC_BASE_URL=http://127.0.0.1:8082 ANTHROPIC_AUTH_TOKEN=tok-0123456789abcdef claude"
    ) in text
    assert "warning  no key for x: set it" in text
    assert "ANTHROPIC_API_KEY" not in text


@pytest.mark.usefixtures("home", "restore_logging")
def test_lines_and_json_print_the_same_line_without_the_token_in_a_pipe(
    served: list[uvicorn.Server],
) -> None:
    lines = serve("--no-dashboard", "--auth-token", "tok-0123456789abcdef")
    assert re.search(
        r"Paste this in another terminal:  ANTHROPIC_BASE_URL=http://127\.0\.0\.1:\d+ "
        r"ANTHROPIC_AUTH_TOKEN=\[redacted\] claude",
        lines.stdout,
    ), lines.stdout
    as_json = serve("--log-format", "json", "--auth-token", "tok-0123456789abcdef")
    listening = json.loads(as_json.stdout.splitlines()[0])
    assert re.fullmatch(
        r"ANTHROPIC_BASE_URL=http://127\.0\.0\.1:\d+ ANTHROPIC_AUTH_TOKEN=\[redacted\] claude",
        listening["client_command"],
    )
    assert "tok-0123456789abcdef" not in lines.stdout + as_json.stdout


# -- ids: what serve shows is what `replay show` takes ---------------------------------------------


@pytest.mark.usefixtures("home")
def test_every_id_serve_shows_finds_the_recorded_exchange(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    settings = bridge_settings(upstream.base_url)
    journal = tmp_path / "session.jsonl"
    bus = Bus()
    board = Dashboard(render.ServerInfo.from_settings(settings))
    finished: list[Exchange] = []
    bus.subscribe(board)
    bus.subscribe(lambda kind, ex: finished.append(ex) if kind == "finish" else None)
    app = create_app(settings, bus=bus, recorder=Recorder(journal))
    bridge = start_bridge(settings, app)
    try:
        upstream.reply(JSONReply(completion("Hello.")))
        with make_client(bridge) as client:
            client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    finally:
        bridge.stop()
    (exchange,) = finished
    frame = text_of(render.dashboard(board.view(), 160, 30), 160).splitlines()
    header = next(i for i, line in enumerate(frame) if line.startswith("time "))
    on_dashboard = frame[header + 1].split()[1]
    in_lines = render.exchange_line(exchange).plain.split()[-1]
    in_json = logs.exchange_record("finish", exchange)["request_id"]
    assert on_dashboard != in_lines  # a short form of the request id
    for shown in (on_dashboard, in_lines, in_json):
        result = invoke("replay", "show", shown, "--journal", str(journal))
        assert result.exit_code == 0, (shown, result.stderr)
        assert exchange.id in result.stdout


# -- Ctrl-C -------------------------------------------------------------------------------------


class Output:
    """A process's output lines as they come, read on a thread: `next_line` waits for one."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, matching: str) -> str:
        while True:
            line = self.lines.get(timeout=START_TIMEOUT)
            if re.search(matching, line):
                return line


@pytest.fixture
def serve_process(upstream: FakeUpstream, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    if not CLI.exists():
        pytest.skip(f"{CLI} is not installed (pip install -e .)")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-upstream-key-for-ctrl-c",
        "BIG_MODEL": "big",
    }
    command = [str(CLI), "serve", "--port", "0", "--no-dashboard"]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=START_TIMEOUT)


def test_ctrl_c_says_at_once_what_it_waits_for_and_a_second_one_ends_streams_cleanly(
    serve_process: subprocess.Popen[str], upstream: FakeUpstream
) -> None:
    stdout, stderr = Output(serve_process.stdout), Output(serve_process.stderr)
    url = re.findall(r"ANTHROPIC_BASE_URL=(\S+)", stdout.next_line("Paste this"))[0]
    upstream.reply(SSEReply([chunk({"role": "assistant", "content": "Hal"})], end="stall"))
    started = threading.Event()
    received: list[bytes] = []

    def stream() -> None:
        body = {"model": MODEL, "max_tokens": 10, "stream": True, "messages": HI}
        with (
            httpx.Client(timeout=CLIENT_TIMEOUT) as http,
            http.stream("POST", url + "/v1/messages", json=body) as response,
        ):
            for piece in response.iter_raw():
                received.append(piece)
                started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(START_TIMEOUT)

    serve_process.send_signal(signal.SIGINT)
    # Said at once: the stream is still open (its upstream stalls; the grace period is 5 s).
    assert stderr.next_line("^stopping") == (
        "stopping: 1 request in flight get up to 4.00s to finish; Ctrl-C again ends them now"
    )
    assert reader.is_alive()
    serve_process.send_signal(signal.SIGINT)
    assert stderr.next_line("^stopping") == (
        "stopping: ending 1 request in flight now, each with an error"
    )
    reader.join(START_TIMEOUT)
    events = b"".join(received).decode()
    # Ended with an Anthropic `error` event, not a cut chunked body.
    assert events.endswith(
        'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        '"message":"claude-bridge is shutting down; try again"}}\n\n'
    ), events
    assert serve_process.wait(START_TIMEOUT) is not None


# -- a stream its client cancels ---------------------------------------------------------------


def test_a_cancelled_stream_shows_as_cancelled_with_what_it_streamed(
    upstream: FakeUpstream,
) -> None:
    settings = bridge_settings(upstream.base_url)
    bus = Bus()
    board = Dashboard(render.ServerInfo.from_settings(settings))
    done: queue.Queue[Exchange] = queue.Queue()
    bus.subscribe(board)
    bus.subscribe(lambda kind, ex: done.put(ex) if kind == "finish" else None)
    bridge = start_bridge(settings, create_app(settings, bus=bus))
    try:
        words = "The answer streams in a few words before the client gives up. " * 4
        upstream.reply(
            SSEReply(
                [chunk({"role": "assistant", "content": ""}), chunk({"content": words})],
                end="stall",
            )
        )
        with (
            make_client(bridge) as client,
            client.messages.stream(model=MODEL, max_tokens=100, messages=HI) as stream,
        ):
            for event in stream:
                if event.type == "text":
                    break  # the user pressed Esc
        exchange = done.get(timeout=START_TIMEOUT)
    finally:
        bridge.stop()
    assert exchange.cancelled and exchange.error is None
    assert exchange.output_tokens == (len(words) + 3) // 4  # what streamed, estimated
    assert exchange.input_tokens > 0  # the estimate the client got in `message_start`
    line = render.exchange_line(exchange).plain
    assert f"in {exchange.input_tokens} out {exchange.output_tokens}" in line
    assert f"  cancelled  {exchange.id}" in line
    frame = text_of(render.dashboard(board.view(), 160, 30), 160)
    assert "cancelled" in frame and "errors 0" in frame
    record = logs.exchange_record("finish", exchange)
    assert record["cancelled"] is True and record["event"] == "finish"
    assert record["output_tokens"] == exchange.output_tokens


# -- what the client sees when the upstream connection fails -----------------------------------


def test_connection_failures_are_said_in_the_users_words(upstream: FakeUpstream) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    bridge = start_bridge(bridge_settings(f"http://127.0.0.1:{port}/v1"))
    try:
        with make_client(bridge) as client, pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    finally:
        bridge.stop()
    assert (
        f"could not connect to upstream 127.0.0.1:{port}: connection refused ("
        in refused.value.message
    )

    cut = start_bridge(bridge_settings(upstream.base_url))
    try:
        upstream.reply(
            SSEReply(
                ['{"id": "x", "choices": ['],
                end="close",
                headers={"content-type": "application/json"},
            )
        )
        with make_client(cut) as client, pytest.raises(anthropic.APIStatusError) as broken:
            client.messages.create(model=MODEL, max_tokens=10, messages=HI)
    finally:
        cut.stop()
    assert "connection failed: the answer was cut off before its end (" in broken.value.message
    for message in (refused.value.message, broken.value.message):
        assert "ssl:default" not in message and "<" not in message and "Error" not in message


# -- configuration --------------------------------------------------------------------------------

FROZEN_JOURNAL = Path(__file__).parent / "data" / "journal" / "v1-frozen.jsonl"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.usefixtures("home")
def test_config_show_says_where_each_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIG_MODEL", "from-env")
    write(Path(".env"), "OPENAI_API_KEY=sk-from-dotenv-0123456789\n")
    config = write(
        tmp_path / "c.toml", 'port = 9000\n[upstreams.gw]\nbase_url = "http://gw.example/v1"\n'
    )
    result = invoke("config", "show", "-c", str(config), "--format", "text")
    assert result.exit_code == 0, result.stderr
    shown = result.stdout
    for line in (
        r'big_model = "from-env" +# from BIG_MODEL \(environment\)',
        r'openai_api_key = "sk-\.\.\.89" +# from OPENAI_API_KEY in \.env',
        rf"port = 9000 +# from {re.escape(str(config))}",
        r'host = "127\.0\.0\.1" +# default',
        r"# small_model: unset +# default",
    ):
        assert re.search(f"^{line}$", shown, re.M), line
    assert f"# upstreams: from {config}\n[upstreams.gw]\n" in shown
    parsed = tomllib.loads(shown)  # still TOML
    assert (
        parsed["port"] == 9000 and parsed["upstreams"]["gw"]["base_url"] == "http://gw.example/v1"
    )
    assert "sk-from-dotenv-0123456789" not in shown
    # Piped (or --format json): the values alone, as scripts read them.
    assert json.loads(invoke("config", "show", "-c", str(config)).stdout)["port"] == 9000


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("prot = 9000\n", "setting prot: no such setting; did you mean 'port'?"),
        (
            '[upstreams.gw]\nbase_url = "http://gw/v1"\napi_kye_env = "K"\n',
            "setting upstreams.gw.api_kye_env: no such setting; did you mean 'api_key_env'?",
        ),
        (
            '[[routes]]\npattern = "*"\nmodle = "m"\n',
            "setting routes.0.modle: no such setting; did you mean 'model'?",
        ),
        ("zzz = 1\n", "setting zzz: no such setting ("),
    ],
)
def test_a_typo_in_the_config_file_gets_did_you_mean(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = write(tmp_path / "c.toml", toml)
    assert_one_error_line(invoke("config", "show", "-c", str(config)), expected)


@pytest.mark.usefixtures("home", "restore_logging")
def test_upstream_replay_needs_no_upstream_key(
    served: list[uvicorn.Server], tmp_path: Path
) -> None:
    config = write(
        tmp_path / "c.toml",
        '[upstreams.gw]\nbase_url = "https://gw.example/v1"\napi_key_env = "GW_KEY"\n',
    )
    replay = ["-c", str(config), "--upstream-replay", str(FROZEN_JOURNAL)]
    offline = serve("--no-dashboard", *replay)
    assert offline.exit_code == 0, offline.stderr
    assert "GW_KEY" not in offline.stderr and "warning" not in offline.stderr
    sent = invoke("replay", "send", str(FROZEN_JOURNAL), "--no-record", *replay)
    assert "sent " in sent.stdout and "GW_KEY" not in sent.stderr, sent.stderr
    # The real upstreams are called: their keys are needed.
    assert_one_error_line(serve("-c", str(config)), "GW_KEY is not set")
    forward = serve(*replay, "--replay-miss", "forward")
    assert_one_error_line(forward, "GW_KEY is not set")


# -- help ------------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["serve"],
    ["translate"],
    ["count-tokens"],
    ["config"],
    ["config", "init"],
    ["config", "show"],
    ["replay"],
    ["replay", "list"],
    ["replay", "show"],
    ["replay", "diff"],
    ["replay", "send"],
]


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_reads_well_at_80_columns(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "<bool>" not in text and "…" not in text and "╭" not in text, text


# -- start-up: only what a command needs --------------------------------------------------------

HEAVY = ("httpx", "uvicorn", "starlette", "anthropic", "rich", "claude_bridge.proxy.app")
PROBE = """
import json, sys
from claude_bridge.cli.main import app
try:
    app(sys.argv[1:], prog_name="claude-bridge")
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""
COMPLETE = {
    "_CLAUDE_BRIDGE_COMPLETE": "complete_bash",
    "COMP_WORDS": "claude-bridge ",
    "COMP_CWORD": "1",
}


@pytest.mark.parametrize(
    ("args", "env", "heavy"),
    [
        (["--version"], {}, (*HEAVY, "pydantic")),
        (["--help"], {}, (*HEAVY, "pydantic")),
        ([], COMPLETE, (*HEAVY, "pydantic")),  # a Tab completion
        (["count-tokens", "-"], {}, HEAVY),  # its models need pydantic
    ],
    ids=["version", "help", "completion", "count-tokens"],
)
def test_commands_load_only_what_they_need(
    args: list[str], env: dict[str, str], heavy: tuple[str, ...]
) -> None:
    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy), *args],
        env={**os.environ, **env},
        input=request,
        capture_output=True,
        text=True,
        check=True,
        timeout=START_TIMEOUT,
    )
    assert json.loads(result.stdout.splitlines()[-1]) == [], result.stdout


def test_the_command_list_says_what_each_command_says_of_itself() -> None:
    for name, lazy in main_module.COMMANDS.items():
        assert main_module.load(name).get_short_help_str(limit=200) == lazy.help, name
