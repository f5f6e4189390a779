"""`claude-bridge doctor`'s checks that need no upstream: the settings and where each came
from, the port, the auth token, the installed Claude Code and what in its environment or its
settings files would send it somewhere else (PROTOCOL.md 11.5, 11.6).

Each check is a `Check`: ok, warn or fail, with a fix for every failure. The start-up
diagnostics (`diagnose.py`) are reused as they are, as warnings; the port and the exposure
checks `serve` makes come in as functions (they live with the CLI that binds).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ..background import LaunchError
from ..config import ConfigError, Settings, default_config_path, load_settings
from ..diagnose import diagnose
from ..launch import INSTALL, claude_command, running_serve, serve_url

Level = Literal["ok", "warn", "fail"]
VERSION = re.compile(r"^\s*(\d+\.\d+\.\d+\S*)(?:\s+\(Claude Code\))?\s*$", re.MULTILINE)
"""`claude --version`'s line: `2.1.331 (Claude Code)`."""
VERSION_TIMEOUT = 30.0
"""Seconds `claude --version` may take (a first run of a native binary is slow)."""
PROBE_TIMEOUT = 2.0
"""Seconds whatever holds the port has to say whether it is a claude-bridge."""


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def settings_checks(
    config_path: Path | None, env: Mapping[str, str]
) -> tuple[Settings | None, list[Check]]:
    """The settings (None when they do not load) and a row for the file, each setting set
    away from its default and where, and each start-up finding."""
    sources: dict[str, str] = {}
    path = config_path or default_config_path(env)
    try:
        settings = load_settings(config_path=config_path, env=env, sources=sources)
    except ConfigError as exc:
        fix = "correct it where it is set; `claude-bridge config show` lists every setting"
        return None, [Check("settings", "fail", str(exc), fix)]
    where = str(path) if path.is_file() else f"{path} (absent: defaults, environment, .env)"
    checks = [Check("config file", "ok", where)]
    public = settings.public()
    for name, origin in sources.items():
        if name in public:
            checks.append(Check(f"setting {name}", "ok", f"{_shown(public[name])} from {origin}"))
    checks += [Check("settings", "warn", f.problem, f.fix) for f in diagnose(settings)]
    return settings, checks


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def port_check(settings: Settings, bind: Callable[[str, int], list[Any]]) -> Check:
    """Whether `serve` can listen where it is configured to: free, already this
    configuration's `serve`, or taken (by another claude-bridge or something else)."""
    name = f"port {settings.host}:{settings.port}"
    if settings.port == 0:
        return Check(name, "ok", "0: serve picks a free port at start")
    if running_serve(settings) is not None:
        return Check(name, "ok", "a claude-bridge serve of this configuration listens there")
    try:
        sockets = bind(settings.host, settings.port)
    except ConfigError as exc:
        if _is_claude_bridge(settings):
            fix = "stop it, or give this configuration another port (CLAUDE_BRIDGE_PORT)"
            return Check(name, "warn", "another claude-bridge (other settings) listens there", fix)
        fix = "stop what listens there, or set CLAUDE_BRIDGE_PORT (or --port) to a free port"
        return Check(name, "fail", str(exc), fix)
    for sock in sockets:
        sock.close()
    return Check(name, "ok", "free: serve can listen there")


def _is_claude_bridge(settings: Settings) -> bool:
    try:
        answer = httpx.get(serve_url(settings) + "/", timeout=PROBE_TIMEOUT)
        health = answer.json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(health, dict) and health.get("status") == "ok" and "version" in health


def auth_check(settings: Settings, exposure: str | None) -> Check:
    """The client token, given what `serve` would say of the address it binds."""
    if exposure is not None:
        fix = "set CLAUDE_BRIDGE_AUTH_TOKEN (clients send it as their key), or bind 127.0.0.1"
        return Check("auth token", "fail", exposure, fix)
    if settings.auth_token is not None and settings.auth_token.get_secret_value():
        return Check("auth token", "ok", "set: clients must present it")
    detail = f"none: only this machine reaches {settings.host} (`code` makes its own token)"
    return Check("auth token", "ok", detail)


def claude_version(claude: str) -> str:
    """`claude --version`'s number (`2.1.331 (Claude Code)` -> `2.1.331`)."""
    try:
        done = subprocess.run(
            [claude, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"{claude} --version failed: {exc}") from None
    # Not the first word: some releases print a notice on stdout first (1.0.x warns there when
    # its configuration file is missing but a backup of it exists).
    found = VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        said = (done.stderr or done.stdout).strip()[:200]
        raise LaunchError(f"{claude} --version failed (exit {done.returncode}): {said}")
    return found[1]


def claude_check(claude: str | None, env: Mapping[str, str]) -> Check:
    """The installed Claude Code and its version. Absent is a warning: the proxy serves any
    Anthropic client; `claude-bridge code` is what needs it."""
    try:
        command = claude_command(claude, env)
    except LaunchError:
        missing = f"{claude} is not an executable" if claude else "not found on PATH"
        return Check("Claude Code", "warn", missing, INSTALL)
    try:
        version = claude_version(command)
    except LaunchError as exc:
        return Check("Claude Code", "fail", str(exc), f"reinstall it: {INSTALL}")
    detail = f"{version} at {command} (`claude-bridge doctor --claude` checks it end to end)"
    return Check("Claude Code", "ok", detail)


ELSEWHERE = {
    "CLAUDE_CODE_USE_BEDROCK": "Amazon Bedrock",
    "CLAUDE_CODE_USE_VERTEX": "Google Vertex AI",
    "CLAUDE_CODE_USE_FOUNDRY": "Microsoft Foundry",
}
"""Variables that make Claude Code ignore `ANTHROPIC_BASE_URL` for another provider."""
PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SETTINGS_FILES = ("settings.json", "settings.local.json")
WINS = ("ANTHROPIC_BASE_URL", *ELSEWHERE)
"""What a settings file's `env` may set that takes Claude Code away even from `code`."""
CREDENTIALS = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")


def environment_checks(settings: Settings, env: Mapping[str, str], cwd: Path) -> list[Check]:
    """What would send Claude Code somewhere other than this proxy: in the environment (for a
    `claude` started by hand), in the environment `code` passes on (proxies), and in Claude
    Code's settings files, whose `env` wins over both."""
    url = serve_url(settings)
    checks: list[Check] = []
    for variable, provider in ELSEWHERE.items():
        if env.get(variable):
            checks.append(
                Check(
                    variable,
                    "warn",
                    f"set: `claude` started by hand goes to {provider}, not to this proxy",
                    f"unset {variable} (`claude-bridge code` drops it for its run)",
                )
            )
    base = env.get("ANTHROPIC_BASE_URL")
    if base and base.rstrip("/") != url:
        detail = f"{base}: `claude` started by hand goes there, not to {url}"
        fix = 'run `claude-bridge code`, or eval "$(claude-bridge code --print-env)"'
        checks.append(Check("ANTHROPIC_BASE_URL", "warn", detail, fix))
    if all(env.get(name) for name in CREDENTIALS):
        detail = "ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY are both set (an auth conflict)"
        fix = "unset ANTHROPIC_API_KEY (`claude-bridge code` drops it for its run)"
        checks.append(Check("credentials", "warn", detail, fix))
    checks += _proxy_checks(env)
    checks += _settings_file_checks(env, cwd)
    if not checks:
        checks.append(Check("environment", "ok", "nothing sends Claude Code elsewhere"))
    return checks


def _proxy_checks(env: Mapping[str, str]) -> list[Check]:
    """An HTTP proxy that Claude Code would send its requests for this loopback proxy to."""
    proxy = next((env[name] for name in PROXIES if env.get(name)), None)
    if proxy is None:
        return []
    exempt = {part.strip() for part in (env.get("NO_PROXY") or env.get("no_proxy", "")).split(",")}
    if "*" in exempt or any(name in exempt for name in LOOPBACK_NAMES):
        return [Check("HTTP proxy", "ok", f"{proxy}, with loopback exempt (NO_PROXY)")]
    detail = f"{proxy}: Claude Code would send its requests for 127.0.0.1 through it"
    return [Check("HTTP proxy", "fail", detail, "add 127.0.0.1,localhost to NO_PROXY")]


def _settings_file_checks(env: Mapping[str, str], cwd: Path) -> list[Check]:
    """Claude Code's user and project settings files whose `env` or `apiKeyHelper` overrides
    what `claude-bridge code` sets (PROTOCOL.md 11.6: settings-file `env` wins)."""
    home = Path(env.get("HOME") or Path.home())
    user = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    files = [user / name for name in SETTINGS_FILES]
    files += [cwd / ".claude" / name for name in SETTINGS_FILES]
    checks: list[Check] = []
    for path in files:
        data = _json_object(path)
        values = data.get("env") if isinstance(data.get("env"), dict) else {}
        assert isinstance(values, dict)
        for name in [n for n in WINS if values.get(n)]:
            detail = f"{path} sets {name} in `env`, which wins over the environment"
            fix = f"remove {name} from that file's `env`"
            checks.append(Check(name, "fail", detail, fix))
        for name in [n for n in CREDENTIALS if values.get(n)]:
            detail = f"{path} sets {name} in `env`: Claude Code sends it instead of the token"
            checks.append(Check(name, "warn", detail, f"remove {name} from that file's `env`"))
        if data.get("apiKeyHelper"):
            detail = f"{path} has an apiKeyHelper: its output is sent as the key"
            checks.append(Check("apiKeyHelper", "warn", detail, "remove it to use the token"))
    return checks


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent, or not JSON: Claude Code ignores it too
    return data if isinstance(data, dict) else {}
