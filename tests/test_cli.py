"""The `claude-bridge` command in process: CliRunner, an isolated home, no real keys, no color."""

from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from claude_bridge.cli import console as cli_console
from claude_bridge.cli.main import app
from claude_bridge.proxy import __version__
from claude_bridge.proxy.core.tokens import count_request_tokens
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import CountTokensRequest
from claude_bridge.proxy.tokenizer import count_text

KEY = "sk-test-CLIKEY-0123456789abcdefXYZ"
LONG_TOOL = "mcp__claude_in_chrome_browser_automation__take_full_page_screenshot_of_current_tab"

REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 2048,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.117; cch=71fea;"},
        {"type": "text", "text": "You are a helpful assistant."},
    ],
    "messages": [{"role": "user", "content": "Weather in Rome, and a screenshot of tab 2?"}],
    "tools": [
        {
            "name": "get_weather",
            "description": "Current weather.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {
            "name": LONG_TOOL,
            "description": "Screenshot a tab.",
            "input_schema": {"type": "object", "properties": {"tab": {"type": "integer"}}},
        },
    ],
    "stop_sequences": ["###"],
    "stream": True,
}

REPLY: dict[str, Any] = {
    "id": "chatcmpl-CLI0000000000000000000000000",
    "object": "chat.completion",
    "created": 1782321890,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "functions.get_weather:0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-CLISTREAM",
        "object": "chat.completion.chunk",
        "created": 1782321890,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


SHORT_TOOL = "mcp__claude_in_chrome_browser_automation__take_full_pag_360582f1"
STREAM_CHUNKS: list[dict[str, Any]] = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Taking "}),
    _chunk({"content": "it."}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_STREAM0000000000000001",
                    "type": "function",
                    "function": {"name": SHORT_TOOL, "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"tab"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]}),
    _chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-CLISTREAM",
        "object": "chat.completion.chunk",
        "created": 1782321890,
        "model": "gpt-4o-2024-08-06",
        "choices": [],
        "usage": {"prompt_tokens": 80, "completion_tokens": 12, "total_tokens": 92},
    },
]
STREAM_SSE = "".join(f"data: {json.dumps(c)}\n\n" for c in STREAM_CHUNKS) + "data: [DONE]\n\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated home and working directory, an environment without real keys or settings."""
    for name in list(os.environ):
        if name.startswith(("CLAUDE_BRIDGE_", "OPENAI_", "ANTHROPIC_", "TIKTOKEN_")) or name in (
            "BIG_MODEL",
            "SMALL_MODEL",
        ):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".state"))
    monkeypatch.setenv("CLAUDE_BRIDGE_HOME", str(home / "claude-bridge"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "dumb")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a stray .env in the real working directory must not count
    return home


def invoke(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=True)


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)


def assert_one_error_line(result: Result, contains: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and contains in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""


# -- translate ---------------------------------------------------------------------------


def test_translate_request(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIG_MODEL", "big-model")
    result = invoke("translate", str(write(tmp_path / "request.json", REQUEST)))
    assert_ok(result)
    body = json.loads(result.stdout)
    assert body["model"] == "big-model"
    assert body["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["stop"] == ["###"]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", SHORT_TOOL]
    assert result.stderr == ""


def test_translate_request_without_a_big_model_keeps_the_name(home: Path, tmp_path: Path) -> None:
    result = invoke("translate", str(write(tmp_path / "request.json", REQUEST)))
    assert_ok(result)
    assert json.loads(result.stdout)["model"] == REQUEST["model"]


def test_translate_reads_standard_input(home: Path) -> None:
    result = invoke("translate", "-", input=json.dumps(REQUEST))
    assert_ok(result)
    assert json.loads(result.stdout)["messages"][1]["content"] == (
        "Weather in Rome, and a screenshot of tab 2?"
    )


def test_translate_uses_the_config_file(home: Path, tmp_path: Path) -> None:
    config = write(
        tmp_path / "bridge.toml",
        'openai_base_url = "http://127.0.0.1:8080/v1"\nprovider = "vllm"\n'
        'stream_usage = false\nmax_tokens_cap = 1000\n[[routes]]\npattern = "*sonnet*"\n'
        'model = "routed-model"\n',
    )
    result = invoke("translate", "--config", str(config), str(write(tmp_path / "r.json", REQUEST)))
    assert_ok(result)
    body = json.loads(result.stdout)
    assert body["model"] == "routed-model"
    assert body["max_tokens"] == 1000
    assert "stream_options" not in body


def test_translate_response(home: Path, tmp_path: Path) -> None:
    reply = write(tmp_path / "reply.json", REPLY)
    request = write(tmp_path / "request.json", REQUEST)
    result = invoke("translate", "--response", str(reply), "--request", str(request))
    assert_ok(result)
    message = json.loads(result.stdout)
    assert message["type"] == "message" and message["model"] == REQUEST["model"]
    assert message["id"].startswith("msg_01")
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0] == {"type": "text", "text": "Checking."}
    tool_use = message["content"][1]
    assert tool_use["name"] == "get_weather" and tool_use["input"] == {"city": "Rome"}
    assert tool_use["id"] == "toolu_cb_ZnVuY3Rpb25zLmdldF93ZWF0aGVyOjA"
    assert message["usage"] == {
        "input_tokens": 120,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 20,
    }


def test_translate_response_without_request(home: Path) -> None:
    result = invoke("translate", "--response", "-", input=json.dumps(REPLY))
    assert_ok(result)
    assert json.loads(result.stdout)["content"][1]["name"] == "get_weather"


def _events(sse: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in sse.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append((lines["event"], data))
    return events


def test_translate_stream(home: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("claude_bridge.proxy.core.stream") is None:
        pytest.skip("claude_bridge.proxy.core.stream (the stream translator) is not written yet")
    sse = write(tmp_path / "chunks.sse", STREAM_SSE)
    request = write(tmp_path / "request.json", REQUEST)
    result = invoke("translate", "--stream", str(sse), "--request", str(request))
    assert_ok(result)
    events = _events(result.stdout_bytes.decode())
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    start = events[0][1]["message"]
    assert start["model"] == REQUEST["model"] and start["id"].startswith("msg_01")
    text = "".join(
        d["delta"]["text"] for n, d in events if n == "content_block_delta" and "text" in d["delta"]
    )
    assert text == "Taking it."
    tool_starts = [
        d["content_block"]
        for n, d in events
        if n == "content_block_start" and d["content_block"]["type"] == "tool_use"
    ]
    assert [b["name"] for b in tool_starts] == [LONG_TOOL]
    arguments = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(arguments) == {"tab": 2}
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 12


# -- count-tokens ------------------------------------------------------------------------


def test_count_tokens_matches_the_library(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "request.json", REQUEST)
    result = invoke("count-tokens", str(path))
    assert_ok(result)
    expected = count_request_tokens(parse_body(path.read_bytes(), CountTokensRequest), count_text)
    assert json.loads(result.stdout) == {"input_tokens": expected}
    assert expected > 50


def test_count_tokens_from_standard_input(home: Path) -> None:
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hello world"}]}
    result = invoke("count-tokens", "-", input=json.dumps(body))
    assert_ok(result)
    expected = count_request_tokens(
        parse_body(json.dumps(body).encode(), CountTokensRequest), count_text
    )
    assert json.loads(result.stdout) == {"input_tokens": expected}


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "contains"),
    [
        (["translate", "-"], "{not json", "request body is not valid JSON"),
        (["translate", "-"], "[1, 2]", "request body must be a JSON object"),
        (
            ["translate", "-"],
            '{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": '
            '[{"type": "image"}]}]}',
            "messages.0.content.0.source: Field required",
        ),
        (["translate", "--response", "-"], "<html>502</html>", "not a JSON reply"),
        (["translate", "--response", "-"], '{"choices": []}', "upstream returned no choices"),
        (["translate", "--response", "--stream", "-"], "{}", "exclude each other"),
        (["translate", "--stream", "-"], json.dumps(REPLY), "not an SSE stream"),
        (["translate", "--stream", "-"], "data: <html>\n\n", "not an SSE stream"),
        (["translate", "does-not-exist.json"], None, "does-not-exist.json"),
        (["count-tokens", "-"], '{"messages": []}', "model: Field required"),
        (["count-tokens", "missing.json"], None, "missing.json"),
    ],
)
def test_invalid_input_is_one_error_line(
    home: Path, args: list[str], stdin: str | None, contains: str
) -> None:
    assert_one_error_line(invoke(*args, input=stdin), contains)


def test_bad_config_file_is_one_error_line(home: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "bad.toml", "port = [\n")
    request = write(tmp_path / "request.json", REQUEST)
    assert_one_error_line(invoke("translate", "-c", str(config), str(request)), "bad.toml")
    assert_one_error_line(invoke("config", "show", "-c", str(config)), "bad.toml")
    missing = str(tmp_path / "missing.toml")
    assert_one_error_line(invoke("config", "show", "-c", missing), "no such config file")


def test_the_error_line_is_red(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(stderr=True, force_terminal=True, color_system="standard", no_color=False)
    monkeypatch.setattr(cli_console, "stderr", console)
    result = invoke("translate", "-", input="{not json")
    assert result.exit_code == 1
    assert result.stderr.startswith("\x1b[31merror:\x1b[0m request body is not valid JSON")


# -- config ------------------------------------------------------------------------------


def test_config_init_writes_toml_and_refuses_to_overwrite(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("BIG_MODEL", "qwen3-coder")
    target = home / "claude-bridge" / "config.toml"
    result = invoke("config", "init")
    assert_ok(result)
    assert result.stderr.strip() == f"wrote {target}"
    text = target.read_text(encoding="utf-8")
    assert KEY not in text
    # A commented starter: what the environment sets is written, every default commented out.
    assert tomllib.loads(text) == {"big_model": "qwen3-coder"}
    assert "\n# port = 8082\n" in text and "# Port `serve` listens on.\n" in text
    assert "\n# [[routes]]\n" in text

    target.write_text("# edited by hand\nport = 9999\n", encoding="utf-8")
    refused = invoke("config", "init")
    assert_one_error_line(refused, "exists (use --force to overwrite)")
    assert target.read_text(encoding="utf-8") == "# edited by hand\nport = 9999\n"

    forced = invoke("config", "init", "--force")
    assert_ok(forced)
    # The hand-edited file was part of the effective settings that got written back.
    assert tomllib.loads(target.read_text(encoding="utf-8"))["port"] == 9999


def test_config_init_to_an_explicit_path(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "dir" / "bridge.toml"
    assert_ok(invoke("config", "init", str(target)))
    assert tomllib.loads(target.read_text(encoding="utf-8")) == {}  # all defaults, commented
    shown = invoke("config", "show", "--config", str(target))
    assert_ok(shown)
    assert json.loads(shown.stdout)["host"] == "127.0.0.1"


def test_config_show_masks_the_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("CLAUDE_BRIDGE_AUTH_TOKEN", KEY + "-client")
    monkeypatch.setenv("SMALL_MODEL", "qwen3-4b")
    result = invoke("config", "show")
    assert_ok(result)
    assert KEY not in result.stdout and KEY not in result.stderr
    shown = json.loads(result.stdout)
    assert shown["openai_api_key"] == "sk-...YZ"
    assert shown["small_model"] == "qwen3-4b"
    assert shown["port"] == 8082


def test_config_show_reads_the_default_config_file(home: Path) -> None:
    config = home / "claude-bridge" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('big_model = "from-home-config"\n', encoding="utf-8")
    result = invoke("config", "show")
    assert_ok(result)
    assert json.loads(result.stdout)["big_model"] == "from-home-config"


# -- help and version --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "example"),
    [
        (["serve"], "claude-bridge serve"),
        (["translate"], "claude-bridge translate --response reply.json"),
        (["count-tokens"], "claude-bridge count-tokens request.json"),
        (["config", "init"], "claude-bridge config init"),
        (["config", "show"], "claude-bridge config show"),
    ],
)
def test_every_command_help_shows_an_example(home: Path, command: list[str], example: str) -> None:
    result = invoke(*command, "--help")
    assert_ok(result)
    assert "Example" in result.stdout
    assert example in result.stdout
    assert "\x1b[" not in result.stdout


def test_top_level_help_lists_the_commands(home: Path) -> None:
    result = invoke("--help")
    assert_ok(result)
    for command in ("serve", "translate", "count-tokens", "config"):
        assert command in result.stdout


def test_version(home: Path) -> None:
    result = invoke("--version")
    assert_ok(result)
    assert result.stdout == f"claude-bridge {__version__}\n"


def test_translate_applies_the_detected_provider(home: Path, tmp_path: Path) -> None:
    """OpenAI's own endpoint wants `max_completion_tokens`: the profile comes from the URL."""
    config = write(tmp_path / "bridge.toml", 'openai_base_url = "https://api.openai.com/v1"\n')
    result = invoke("translate", "--config", str(config), str(write(tmp_path / "r.json", REQUEST)))
    assert_ok(result)
    body = json.loads(result.stdout)
    assert "max_tokens" not in body
    assert body["max_completion_tokens"] == REQUEST["max_tokens"]


def test_serve_strict_refuses_an_exposed_address_without_a_token(home: Path) -> None:
    result = invoke("serve", "--host", "0.0.0.0", "--port", "0", "--strict")
    assert_one_error_line(result, "refusing to start (--strict)")
