"""`claude-bridge code`: the proxy started (or a running `serve` reused), Claude Code run with the
environment that routes it there, its exit code returned, the started proxy stopped after it.

Claude Code is played by a small script (`fake_claude`) that does what it does on start: reads
its environment, lists the gateway's models, sends a message; it writes what it saw to a file.
The real Claude Code through `code` is in tests/realstack/test_code.py."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from conftest import BIG_MODEL, SMALL_MODEL, UPSTREAM_KEY, start_bridge
from test_dashboard import restore_logging
from typer.testing import CliRunner, Result
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.cli.main import app
from claude_bridge.proxy import launch
from claude_bridge.proxy.config import Settings

__all__ = ["restore_logging"]  # a fixture, used by name

FAKE_CLAUDE = f"""#!{sys.executable}
import json, os, sys
import httpx
base, token = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_AUTH_TOKEN"]
seen = {{k: v for k, v in os.environ.items() if k.startswith(("ANTHROPIC", "CLAUDE", "DISABLE"))}}
report = {{"args": sys.argv[1:], "env": seen}}
auth = {{"authorization": "Bearer " + token, "anthropic-version": "2023-06-01"}}
body = {{"model": os.environ.get("ANTHROPIC_DEFAULT_OPUS_MODEL", "claude-opus-5-5"),
         "max_tokens": 128000, "messages": [{{"role": "user", "content": "Hi"}}]}}
report["models"] = [m["id"] for m in httpx.get(base + "/v1/models", headers=auth).json()["data"]]
report["without_token"] = httpx.post(base + "/v1/messages", json=body).status_code
report["message"] = httpx.post(base + "/v1/messages", json=body, headers=auth).json()
with open(os.environ["FAKE_CLAUDE_REPORT"], "w") as out:
    json.dump(report, out)
sys.exit(int(os.environ.get("FAKE_CLAUDE_EXIT", "0")))
"""


@pytest.fixture
def fake_claude(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()
    path.write_text(FAKE_CLAUDE, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated home and working directory: no `.env`, config or keys of the machine."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CLAUDE_BRIDGE_", "ANTHROPIC_", "OPENAI_", "CLAUDE_CODE_")) or name in (
            "BIG_MODEL",
            "SMALL_MODEL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLAUDE_BRIDGE_HOME", str(tmp_path / "bridge-home"))
    monkeypatch.setenv("FAKE_CLAUDE_REPORT", str(tmp_path / "report.json"))
    yield tmp_path


def config_values(upstream: FakeUpstream, **more: Any) -> dict[str, Any]:
    return {
        "openai_base_url": upstream.base_url,
        "openai_api_key": UPSTREAM_KEY,
        "big_model": BIG_MODEL,
        "small_model": SMALL_MODEL,
        "retries": 0,
        "models": {BIG_MODEL: {"context_window": 131072, "max_output_tokens": 8192}},
        **more,
    }


def write_config(home: Path, values: dict[str, Any]) -> Path:
    path = home / "config.toml"
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def run_code(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["code", *map(str, args)], catch_exceptions=False)


def report(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "report.json").read_text(encoding="utf-8"))
    return data


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


@pytest.mark.usefixtures("restore_logging")
def test_code_starts_a_private_proxy_runs_claude_and_stops_it(
    home: Path, fake_claude: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.reply(JSONReply(completion("hello from upstream")))
    monkeypatch.setenv("FAKE_CLAUDE_EXIT", "7")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-users-own-key")  # taken out: no prompt
    config = write_config(home, config_values(upstream, auth_token="the-configured-token"))
    result = run_code("--claude", fake_claude, "--config", config, "-p", "say hi", "-c")
    assert result.exit_code == 7, result.output
    seen = report(home)
    assert seen["args"] == ["-p", "say hi", "-c"]  # Claude Code's own `-c`, passed through
    env = seen["env"]
    url, token = env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_AUTH_TOKEN"]
    assert url.startswith("http://127.0.0.1:") and url != "http://127.0.0.1:8082"
    assert len(token) >= 32 and token != "the-configured-token"  # made for this launch
    assert "ANTHROPIC_API_KEY" not in env
    assert seen["without_token"] == 401
    # The tiers are pinned to the models they route to; the big model's window is Claude
    # Code's, and the model it sends reaches the big model, max_tokens lowered to its limit.
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == f"{BIG_MODEL}@claude-bridge"
    assert env["ANTHROPIC_DEFAULT_FABLE_MODEL"] == f"{BIG_MODEL}@claude-bridge"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == f"{SMALL_MODEL}@claude-bridge"
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "131072"
    assert env["CLAUDE_CODE_DISABLE_1M_CONTEXT"] == "1"  # else `[1m]`, and the window ignored
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"
    assert env["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] == "1"
    assert env["DISABLE_TELEMETRY"] == "1"
    assert seen["models"] == [f"{BIG_MODEL}@claude-bridge", f"{SMALL_MODEL}@claude-bridge"]
    assert seen["message"]["content"][0]["text"] == "hello from upstream"
    (sent,) = upstream.requests
    assert (sent.json["model"], sent.json["max_tokens"]) == (BIG_MODEL, 8192)
    assert refused(url)  # stopped with Claude Code
    log = (home / "bridge-home" / "code.log").read_text(encoding="utf-8")
    assert token not in log and "listening" in log
    assert "warning" not in result.stderr  # a configuration with nothing to fix


@pytest.mark.usefixtures("restore_logging")
def test_code_says_what_would_fail_before_claude_code_starts(
    home: Path, fake_claude: Path, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("ok")))
    config = write_config(home, {"openai_base_url": upstream.base_url})  # no big_model
    result = run_code("--claude", fake_claude, "--config", config)
    assert result.exit_code == 0
    assert "warning: Claude model names (opus, sonnet, haiku) would reach" in result.stderr


@pytest.mark.usefixtures("restore_logging")
def test_code_reuses_a_running_serve_of_the_same_configuration(
    home: Path, fake_claude: Path, upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("via serve")), JSONReply(completion("private")))
    values = config_values(upstream, auth_token="serve-token")
    serve = start_bridge(Settings(**values))
    try:
        port = int(serve.url.rsplit(":", 1)[1])
        same = write_config(home, {**values, "port": port, "log_level": "debug"})
        assert run_code("--claude", fake_claude, "--config", same).exit_code == 0
        env = report(home)["env"]
        assert (env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_AUTH_TOKEN"]) == (
            serve.url,
            "serve-token",
        )
        other = write_config(home, {**values, "port": port, "big_model": "another"})
        assert run_code("--claude", fake_claude, "--config", other).exit_code == 0
        assert report(home)["env"]["ANTHROPIC_BASE_URL"] != serve.url
    finally:
        serve.stop()
    assert [r.json["model"] for r in upstream.requests] == [BIG_MODEL, "another"]


def test_print_env_gives_exports_for_the_serve(
    home: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-users-own-key")
    config = write_config(home, config_values(upstream, port=1))  # nothing listens there
    result = CliRunner().invoke(app, ["code", "--print-env", "--config", str(config)])
    assert result.exit_code == 0
    assert "no `claude-bridge serve` of this configuration answers" in result.stderr
    lines = result.stdout.splitlines()
    exported = dict(
        shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export")
    )
    assert exported["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert exported["ANTHROPIC_AUTH_TOKEN"] == launch.NO_TOKEN
    assert "unset ANTHROPIC_API_KEY" in lines


def test_a_missing_claude_is_one_line_with_the_install_command(
    home: Path, upstream: FakeUpstream
) -> None:
    config = write_config(home, config_values(upstream))
    result = run_code("--claude", home / "nowhere" / "claude", "--config", config)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "npm install -g @anthropic-ai/claude-code" in line


def test_model_env_leaves_names_passed_through_alone(upstream: FakeUpstream) -> None:
    settings = Settings(
        openai_base_url=upstream.base_url,
        routes=[{"pattern": "claude-haiku-*", "model": "qwen3:4b", "upstream": "local"}],
        upstreams={"local": {"base_url": "http://127.0.0.1:11434/v1"}},
    )
    env = launch.model_env(settings, launch.Windows(settings))
    # No big model: opus, sonnet and fable keep Claude Code's names (and windows).
    assert env == {
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "local/qwen3:4b@claude-bridge",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL_NAME": "qwen3:4b (haiku)",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL_DESCRIPTION": "haiku via claude-bridge",
    }


def test_fingerprint_ignores_address_logging_and_token() -> None:
    base = Settings(big_model="a", openai_api_key="k1")
    assert (
        base.fingerprint()
        == base.model_copy(
            update={"port": 9, "log_level": "debug", "auth_token": "t", "record": True}
        ).fingerprint()
    )
    assert base.fingerprint() != Settings(big_model="b", openai_api_key="k1").fingerprint()
    assert base.fingerprint() != Settings(big_model="a", openai_api_key="k2").fingerprint()


def test_health_shows_the_fingerprint_to_token_holders_only(
    upstream: FakeUpstream,
) -> None:
    settings = Settings(openai_base_url=upstream.base_url, auth_token="secret-token")
    bridge = start_bridge(settings)
    try:
        anonymous = httpx.get(bridge.url + "/").json()
        holder = httpx.get(bridge.url + "/", headers={"x-api-key": "secret-token"}).json()
    finally:
        bridge.stop()
    assert "config" not in anonymous and holder["config"] == settings.fingerprint()
