"""`claude-bridge code` with the real Claude Code, on a fresh home, through llama-server.

No Anthropic account, no key, nothing written beforehand into Claude Code's files: the command
starts the proxy itself and runs Claude Code on it. A wrapper in front of the real `claude` first
calls the proxy without the launch token (it must be refused), then execs Claude Code. The proxy
records (`record = true`), so the journal shows what Claude Code sent; a recorder between the
proxy and llama-server shows what went upstream.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.records import Record

from . import build
from .conftest import CLAUDE_TIMEOUT, SCRIPTED, _base_env
from .scripted_model import TEXT_ANSWER, TOOL_MARKER, TOOL_TRIGGER
from .support import Process, Recorder, final_result, run_to_end

pytestmark = pytest.mark.realstack

GATEWAY_ID = f"{SCRIPTED}@claude-bridge"
WINDOW = 65536
WRAPPER = """#!{python}
import json, os, sys, urllib.error, urllib.request
url = os.environ["ANTHROPIC_BASE_URL"] + "/v1/models"
try:
    status = urllib.request.urlopen(url, timeout=10).status
except urllib.error.HTTPError as error:
    status = error.code
seen = {{k: v for k, v in os.environ.items() if k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}}
with open({probe!r}, "a") as out:
    out.write(json.dumps({{"status": status, "env": seen}}) + "\\n")
os.execv({claude!r}, [{claude!r}, *sys.argv[1:]])
"""


@dataclass
class CodeRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    probe: dict[str, Any]
    """What the wrapper saw: the status of its request without the token, the environment."""
    records: list[Record]
    """This run's journal records (Claude Code -> claude-bridge)."""

    def report(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit code {self.returncode}\n--- stdout ---\n"
            f"{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )

    def result(self) -> dict[str, Any]:
        found = final_result(self.stdout)
        if found is None:
            raise AssertionError(f"no result object in Claude Code's output:\n{self.report()}")
        return found


class Code:
    """`claude-bridge code` as a user runs it: a fresh home, the config in it, nothing else."""

    def __init__(self, artefacts: build.Artefacts, llama: Process, base: Path) -> None:
        self.home = base / "home"
        self.workspace = base / "workspace"
        self.workspace.mkdir(parents=True)
        self.bridge_home = self.home / ".claude-bridge"
        self.bridge_home.mkdir(parents=True)
        self.back = Recorder(llama.url)
        config = {
            "openai_base_url": f"{self.back.url}/v1",
            "provider": "llamacpp",
            "big_model": SCRIPTED,
            "small_model": SCRIPTED,
            "record": True,
            "models": {SCRIPTED: {"context_window": WINDOW}},
        }
        (self.bridge_home / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
        self.probes = base / "probes.jsonl"
        self.wrapper = base / "claude-wrapper"
        self.wrapper.write_text(
            WRAPPER.format(
                python=sys.executable, probe=str(self.probes), claude=str(artefacts.claude)
            ),
            encoding="utf-8",
        )
        self.wrapper.chmod(0o755)
        self.runs = 0

    def env(self) -> dict[str, str]:
        return {
            **_base_env(self.home),
            "CLAUDE_BRIDGE_HOME": str(self.bridge_home),
            "OPENAI_API_KEY": "sk-realstack-not-a-key",
            "TERM": "dumb",
        }

    def run(self, *args: str) -> CodeRun:
        command = Path(sys.executable).parent / "claude-bridge"
        argv = [str(command), "code", "--claude", str(self.wrapper), *args]
        journal = self.bridge_home / "journal"
        before = set(journal.glob("*.jsonl")) if journal.exists() else set()
        try:
            done = run_to_end(argv, cwd=self.workspace, env=self.env(), timeout=CLAUDE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"claude-bridge code did not finish: {exc}", pytrace=False)
        self.runs += 1
        probes = (
            self.probes.read_text(encoding="utf-8").splitlines() if self.probes.exists() else []
        )
        probe = json.loads(probes[-1]) if len(probes) == self.runs else {}
        new = sorted(set(journal.glob("*.jsonl")) - before) if journal.exists() else []
        records = [r for path in new for r in load(path).records]
        return CodeRun(argv, done.returncode, done.stdout, done.stderr, probe, records)


@pytest.fixture(scope="module")
def code(
    artefacts: build.Artefacts, scripted_llama: Process, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Code]:
    launcher = Code(artefacts, scripted_llama, tmp_path_factory.mktemp("code"))
    yield launcher
    launcher.back.close()


@pytest.fixture(scope="module")
def text_run(code: Code) -> CodeRun:
    return code.run("-p", "Say hello.", "--output-format", "json")


def test_text_answer_on_a_fresh_home(text_run: CodeRun) -> None:
    assert text_run.returncode == 0, text_run.report()
    result = text_run.result()
    assert result.get("subtype") == "success" and not result.get("is_error"), text_run.report()
    assert TEXT_ANSWER in str(result.get("result")), text_run.report()


def test_the_proxy_refuses_a_request_without_the_launch_token(text_run: CodeRun) -> None:
    assert text_run.probe["status"] == 401, text_run.report()
    env = text_run.probe["env"]
    assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == GATEWAY_ID
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(WINDOW)


def test_claude_code_sends_the_pinned_id_with_its_session(code: Code, text_run: CodeRun) -> None:
    messages = [r for r in text_run.records if r.client.path == "/v1/messages"]
    assert messages, text_run.report()
    assert {r.routing.client_model for r in messages} == {GATEWAY_ID}
    assert {r.routing.upstream_model for r in messages} == {SCRIPTED}
    sessions = {r.session_id for r in messages}
    assert len(sessions) == 1 and None not in sessions
    assert code.back.since(0), "nothing reached llama-server"


def test_discovery_lists_the_configured_models(code: Code, text_run: CodeRun) -> None:
    """What `/model` shows beside the built-in rows: Claude Code's cache of `GET /v1/models`."""
    cache = code.home / ".claude" / "cache" / "gateway-models.json"
    assert cache.exists(), f"no discovery cache in {code.home}\n{text_run.report()}"
    listed = json.loads(cache.read_text(encoding="utf-8"))
    assert [m["id"] for m in listed["models"]] == [GATEWAY_ID]
    assert "on 127.0.0.1:" in listed["models"][0]["display_name"]


def test_tool_loop(code: Code) -> None:
    run = code.run(
        "-p",
        f"Run the marker command ({TOOL_TRIGGER}).",
        "--output-format",
        "stream-json",
        "--verbose",
        "--allowedTools",
        "Bash(echo:*)",
        "--max-turns",
        "4",
    )
    assert run.returncode == 0, run.report()
    assert run.result().get("subtype") == "success", run.report()
    results = [
        block
        for line in run.stdout.splitlines()
        if line.strip()
        for event in [json.loads(line)]
        if event.get("type") == "user"
        for block in event["message"].get("content", [])
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert results and TOOL_MARKER in json.dumps(results[0]), run.report()
    assert len([r for r in run.records if r.client.path == "/v1/messages"]) >= 2, run.report()


class Terminal:
    """A program on a pseudo-terminal, read until what a user would wait for shows."""

    ESCAPES = re.compile(
        rb"\x1b\[[0-9;?<>=]*[a-zA-Z~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>]"
    )

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: never returns
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
        self.screen = b""

    def text(self) -> str:
        """What was drawn, without escapes or spaces (the TUI moves the cursor over gaps)."""
        drawn = self.ESCAPES.sub(b"", self.screen).decode(errors="replace")
        return "".join(drawn.split())

    def wait_for(self, wanted: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while "".join(wanted.split()) not in self.text():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{wanted!r} never showed:\n{self.text()[-3000:]}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"exited before {wanted!r}:\n{self.text()[-3000:]}")
                self.screen += data
                if b"\x1b[6n" in data:  # where is the cursor? (a terminal answers)
                    os.write(self.fd, b"\x1b[1;1R")
        return self.text()

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self, timeout: float = 30.0) -> None:
        """SIGTERM (`code` passes it on to Claude Code), then SIGKILL if it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            # Drain the terminal meanwhile, so the program is never blocked writing to it.
            if select.select([self.fd], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    self.screen += os.read(self.fd, 65536)
        os.close(self.fd)


def test_model_picker_lists_the_configured_models(
    code: Code, artefacts: build.Artefacts, tmp_path: Path
) -> None:
    """Interactive Claude Code: `/model` has a row per tier naming the model it routes to.
    Claude Code's own first-run screens (text style, security notes, folder trust) are marked
    done beforehand: they are not what this test is about."""
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    workspace.mkdir(parents=True)
    (home / ".claude-bridge").mkdir(parents=True)
    shutil.copy(code.bridge_home / "config.toml", home / ".claude-bridge" / "config.toml")
    state = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "projects": {str(workspace): {"hasTrustDialogAccepted": True}},
    }
    (home / ".claude.json").write_text(json.dumps(state), encoding="utf-8")
    env = {
        **code.env(),
        "HOME": str(home),
        "CLAUDE_BRIDGE_HOME": str(home / ".claude-bridge"),
        "TERM": "xterm-256color",
    }
    command = str(Path(sys.executable).parent / "claude-bridge")
    terminal = Terminal([command, "code", "--claude", str(artefacts.claude)], env, workspace)
    try:
        terminal.wait_for("shift+tab")
        terminal.type("/model")
        terminal.wait_for("Switch model")
        terminal.type("\r")
        terminal.wait_for("Select model")
        picker = terminal.wait_for("(haiku)").rpartition("Selectmodel")[2]
    finally:
        terminal.close()
    # Rows `scripted (opus)`... with the model's name: the TUI redraws only the characters that
    # changed, so the names themselves are not always whole on the wire.
    for family in ("opus", "sonnet", "fable", "haiku"):
        assert f"({family})" in picker, picker
