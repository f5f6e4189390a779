"""Session fixtures for the real-stack tier: Claude Code -> claude-bridge -> llama-server.

Topology (all on 127.0.0.1, every hop recorded):

    claude (or the anthropic SDK) -> front recorder -> claude-bridge serve -> back recorder
        -> llama-server (scripted model or Gemma 3 270M)

The tier skips, with the reason, only when npm, a C++ compiler or cmake is missing; a build or
start-up failure of anything else fails the tests that need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import build
from .support import (
    LOOPBACK,
    Exchange,
    Process,
    Recorder,
    final_result,
    free_port,
    run_to_end,
    tail,
)

HERE = Path(__file__).resolve().parent
CLAUDE_TIMEOUT = 300.0
SERVER_START_TIMEOUT = 120.0

SCRIPTED = "scripted"
GEMMA = "gemma-3-270m"
# Claude Code's first request is about 12k tokens: this context cannot hold it.
SMALL_CONTEXT = 4096
# claude-bridge's rules for llama-server (what its default port 8080 selects), the generic
# translation that any undetected upstream gets (the servers here listen on other ports), and
# pass-through to llama-server's own Anthropic `/v1/messages` (`mode = "anthropic"`).
PASSTHROUGH = "anthropic"
PROVIDERS = ("llamacpp", "generic", PASSTHROUGH)
# Translation to llama-server's Responses API (`mode = "responses"`): test_responses.py only.
RESPONSES = "responses"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.realstack)


@pytest.fixture(scope="session")
def artefacts(pytestconfig: pytest.Config) -> build.Artefacts:
    # A cold build takes minutes: let its progress lines through pytest's capture.
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    live = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with live:
            return build.ensure_all()
    except build.MissingPrerequisite as exc:
        pytest.skip(f"real-stack tier: {exc}")
    except build.BuildError as exc:
        pytest.fail(f"real-stack build failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("realstack")


def _base_env(home: Path) -> dict[str, str]:
    """A clean environment: no keys, proxies or client settings leak in from the machine."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "NO_COLOR": "1",
    }


def _llama_server(
    artefacts: build.Artefacts,
    workdir: Path,
    *,
    name: str,
    context: int,
    label: str = "",
) -> Iterator[Process]:
    label = label or name
    model, template = {
        SCRIPTED: (artefacts.scripted_model, artefacts.scripted_template),
        GEMMA: (artefacts.gemma_model, artefacts.gemma_template),
    }[name]
    port = free_port()
    home = workdir / f"home-{label}"
    home.mkdir()
    argv: list[str | Path] = [
        artefacts.llama_server,
        "-m",
        model,
        "-a",
        name,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "-c",
        str(context),
        "-t",
        "2",
        "-np",
        "1",
        "--offline",
        "--no-webui",
        "--jinja",
        "--chat-template-file",
        template,
    ]
    process = Process(
        f"llama-server ({label})",
        argv,
        url=f"http://{LOOPBACK}:{port}",
        log=workdir / f"llama-{label}.log",
        env=_base_env(home),
        cwd=home,
    )
    try:
        process.wait_ready("/health", SERVER_START_TIMEOUT)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def scripted_llama(artefacts: build.Artefacts, workdir: Path) -> Iterator[Process]:
    yield from _llama_server(artefacts, workdir, name=SCRIPTED, context=65536)


@pytest.fixture(scope="session")
def small_llama(artefacts: build.Artefacts, workdir: Path) -> Iterator[Process]:
    """The scripted model with a context too small for Claude Code's prompt."""
    yield from _llama_server(
        artefacts, workdir, name=SCRIPTED, context=SMALL_CONTEXT, label="scripted-small"
    )


@pytest.fixture(scope="session")
def gemma_llama(artefacts: build.Artefacts, workdir: Path) -> Iterator[Process]:
    yield from _llama_server(artefacts, workdir, name=GEMMA, context=8192)


@dataclass
class Bridge:
    """claude-bridge in front of one llama-server, with a recorder on each side."""

    url: str  # the front recorder: what clients use as ANTHROPIC_BASE_URL
    front: Recorder  # Anthropic side: what the client sent and what claude-bridge answered
    back: Recorder  # OpenAI side: what claude-bridge sent upstream and what it got
    process: Process
    upstream: str  # llama-server's own URL, for the differential tests
    passthrough: bool = False  # `mode = "anthropic"`: llama-server's /v1/messages gets it as is

    @property
    def upstream_path(self) -> str:
        return "/v1/messages" if self.passthrough else "/v1/chat/completions"

    def logs(self) -> str:
        return f"--- claude-bridge log ---\n{tail(self.process.log, 60)}"


@pytest.fixture(scope="session", params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _bridge(
    workdir: Path, llama: Process, name: str, provider: str, label: str = ""
) -> Iterator[Bridge]:
    label = f"{label or name}-{provider}"
    home = workdir / f"home-bridge-{label}"
    home.mkdir()
    back = Recorder(llama.url)
    env = {
        "CLAUDE_BRIDGE_HOME": str(home / ".claude-bridge"),
        "OPENAI_API_KEY": "sk-realstack-not-a-key",
        "BIG_MODEL": name,
        "SMALL_MODEL": name,
        **(
            {"OPENAI_BASE_URL": back.url, "CLAUDE_BRIDGE_MODE": PASSTHROUGH}
            if provider == PASSTHROUGH
            else {"OPENAI_BASE_URL": f"{back.url}/v1", "CLAUDE_BRIDGE_PROVIDER": provider}
        ),
        **(
            {"CLAUDE_BRIDGE_MODE": RESPONSES, "CLAUDE_BRIDGE_PROVIDER": "llamacpp"}
            if provider == RESPONSES
            else {}
        ),
        "CLAUDE_BRIDGE_LOG_LEVEL": "debug",
        "PYTHONUNBUFFERED": "1",
    }
    yield from serve_bridge(home, label, env, back, llama.url, provider == PASSTHROUGH)


def serve_bridge(
    home: Path,
    label: str,
    env: dict[str, str],
    back: Recorder,
    upstream: str,
    passthrough: bool = False,
) -> Iterator[Bridge]:
    """`claude-bridge serve` in `home` with `env` over a clean environment, its log beside
    `home`, behind a front recorder; `back` (what records its upstream side) closes with it."""
    port = free_port()
    command = Path(sys.executable).parent / "claude-bridge"
    argv: list[str | Path] = [
        command,
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--no-dashboard",
    ]
    process = Process(
        f"claude-bridge ({label})",
        argv,
        url=f"http://{LOOPBACK}:{port}",
        log=home.parent / f"bridge-{label}.log",
        env={**_base_env(home), **env},
        cwd=home,
    )
    front: Recorder | None = None
    try:
        process.wait_ready("/", SERVER_START_TIMEOUT)
        front = Recorder(process.url)
        yield Bridge(front.url, front, back, process, upstream, passthrough)
    finally:
        process.stop()
        back.close()
        if front is not None:
            front.close()


@pytest.fixture(scope="session")
def scripted_bridge(workdir: Path, scripted_llama: Process, provider: str) -> Iterator[Bridge]:
    yield from _bridge(workdir, scripted_llama, SCRIPTED, provider)


@pytest.fixture(scope="session")
def small_bridge(workdir: Path, small_llama: Process, provider: str) -> Iterator[Bridge]:
    yield from _bridge(workdir, small_llama, SCRIPTED, provider, label="scripted-small")


@pytest.fixture(scope="session")
def gemma_bridge(workdir: Path, gemma_llama: Process, provider: str) -> Iterator[Bridge]:
    yield from _bridge(workdir, gemma_llama, GEMMA, provider)


@dataclass
class ClaudeRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    exchanges: list[Exchange]  # front recorder: Claude Code <-> claude-bridge
    upstream: list[Exchange]  # back recorder: claude-bridge <-> llama-server

    def result(self) -> dict[str, Any]:
        """The final `result` object, from --output-format json or stream-json."""
        found = final_result(self.stdout)
        if found is None:
            raise AssertionError(f"no result object in Claude Code's output:\n{self.report()}")
        return found

    def events(self) -> list[dict[str, Any]]:
        """The objects of --output-format stream-json."""
        out = []
        for line in self.stdout.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def messages_calls(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.split("?")[0] == "/v1/messages"]

    def report(self) -> str:
        calls = "\n".join(
            f"  {e.method} {e.path} -> {e.status} ({len(e.response_body)} bytes)"
            for e in self.exchanges
        )
        return (
            f"$ {' '.join(self.argv)}\nexit code {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}\n"
            f"--- requests Claude Code made ---\n{calls}"
        )


class Claude:
    """Runs the real Claude Code non-interactively against a bridge, with an isolated home."""

    def __init__(self, binary: Path, bridge: Bridge, home: Path, workspace: Path) -> None:
        self.binary = binary
        self.bridge = bridge
        self.home = home
        self.workspace = workspace
        home.mkdir(parents=True, exist_ok=True)
        workspace.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {
            **_base_env(self.home),
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "ANTHROPIC_BASE_URL": self.bridge.url,
            "ANTHROPIC_API_KEY": "sk-ant-realstack-dummy",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "TERM": "dumb",
        }

    def run(self, *args: str, timeout: float = CLAUDE_TIMEOUT) -> ClaudeRun:
        front, back = self.bridge.front.mark(), self.bridge.back.mark()
        argv = [str(self.binary), *args]
        try:
            result = run_to_end(argv, cwd=self.workspace, env=self.env(), timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            pytest.fail(
                f"Claude Code did not finish in {timeout:.0f} s: {' '.join(argv)}\n{out[-3000:]}\n"
                f"{self.bridge.logs()}",
                pytrace=False,
            )
        return ClaudeRun(
            argv,
            result.returncode,
            result.stdout,
            result.stderr,
            self.bridge.front.since(front),
            self.bridge.back.since(back),
        )


@pytest.fixture
def claude(artefacts: build.Artefacts, scripted_bridge: Bridge, tmp_path: Path) -> Claude:
    return Claude(artefacts.claude, scripted_bridge, tmp_path / "home", tmp_path / "workspace")


@pytest.fixture(scope="module")
def claude_module(
    artefacts: build.Artefacts, scripted_bridge: Bridge, tmp_path_factory: pytest.TempPathFactory
) -> Claude:
    """One home and workspace shared by a module's runs (for --continue)."""
    base = tmp_path_factory.mktemp("claude")
    return Claude(artefacts.claude, scripted_bridge, base / "home", base / "workspace")
