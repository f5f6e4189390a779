"""`claude-bridge code`: Claude Code on this configuration's proxy, in one command.

1. A healthy `serve` already listening at the configured address with the same configuration
   (`Settings.fingerprint`, in its `GET /` answer) is used as it is. Otherwise the proxy is
   started here, headless, in a thread of this process (`background.py`), asking for a token
   made for this launch alone, so that nothing else on the machine can use it.
2. Claude Code runs with the environment of `claude_env` (PROTOCOL.md 11.5): the base URL, the
   token as `ANTHROPIC_AUTH_TOKEN` (no key prompt, no login, no check of api.anthropic.com on a
   first run, unlike `ANTHROPIC_API_KEY`), its tiers pinned to the gateway ids they route to, the
   big model's window, gateway model discovery on, telemetry off.
3. Its exit code is the launch's; the proxy started here stops when it exits, with the grace
   period `serve` gives a stop.

Nothing is written into Claude Code's own files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

import httpx

from .background import LOOPBACK, LaunchError, Target, background_proxy
from .config import Settings
from .core.routing import LATEST, TIERS, gateway_id
from .diagnose import diagnose
from .plan import routed
from .windows import Windows

PROBE_TIMEOUT = 1.0
"""Seconds a running `serve` has to answer `GET /` before it is taken for absent."""
NO_TOKEN = "claude-bridge"
"""What Claude Code presents to a `serve` that asks for no token: it needs some credential, or
it opens its login screen."""
INSTALL = "npm install -g @anthropic-ai/claude-code"
DROPPED = (
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
)
"""Taken out of Claude Code's environment: a key would be sent too (and prompted for), and any
`CLAUDE_CODE_USE_*` makes it ignore the base URL."""
QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def serve_url(settings: Settings) -> str:
    """Where a `serve` of these settings listens, as a client reaches it."""
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else LOOPBACK
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{settings.port}"


def serve_token(settings: Settings) -> str:
    return settings.auth_token.get_secret_value() if settings.auth_token else NO_TOKEN


def running_serve(settings: Settings) -> Target | None:
    """A healthy `serve` of this configuration at its configured address, if there is one."""
    if settings.port == 0:
        return None
    target = Target(serve_url(settings), serve_token(settings), reused=True)
    try:
        answer = httpx.get(
            target.url + "/",
            headers={"authorization": f"Bearer {target.token}"},
            timeout=PROBE_TIMEOUT,
        )
        health = answer.json() if answer.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(health, dict) and health.get("config") == settings.fingerprint():
        return target
    return None


def claude_env(
    target: Target,
    settings: Settings,
    windows: Windows,
    base: Mapping[str, str],
) -> dict[str, str]:
    """Claude Code's environment: `base` (the user's) with what routes it through `target`."""
    env = {k: v for k, v in base.items() if k not in DROPPED}
    env.update(QUIET)
    env.update(model_env(settings, windows))
    env["ANTHROPIC_BASE_URL"] = target.url
    env["ANTHROPIC_AUTH_TOKEN"] = target.token
    env["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] = "1"
    # `x-claude-code-request-class` on every request: what `request_class` rules match on.
    env["CLAUDE_CODE_GATEWAY_HINT_HEADERS"] = "1"
    return env


def model_env(settings: Settings, windows: Windows) -> dict[str, str]:
    """Each tier pinned to the gateway id of the model it routes to, so `/model` names it and
    the id reaches that model; the window and output limit of the model opus routes to."""
    env: dict[str, str] = {}
    for family in TIERS:
        to = routed(settings, LATEST[family])
        if to.model == LATEST[family]:
            continue  # passed through as asked: Claude Code's own name is right
        variable = f"ANTHROPIC_DEFAULT_{family.upper()}_MODEL"
        env[variable] = gateway_id(to.upstream, to.model)
        # `/model` rows: one per tier, so each says which tier it is.
        env[f"{variable}_NAME"] = f"{to.model} ({family})"
        env[f"{variable}_DESCRIPTION"] = f"{family} via claude-bridge"
    big = routed(settings, LATEST["opus"])
    if big.model == LATEST["opus"]:
        return env
    # Claude Code gives its default (opus) model a 1M window (`[1m]`) and then ignores the
    # window it is told, unless 1M contexts are off (PROTOCOL.md 11.5).
    env["CLAUDE_CODE_DISABLE_1M_CONTEXT"] = "1"
    limits = windows.of(big.upstream, big.model)
    if limits.context_window:
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(limits.context_window)
    if limits.max_output_tokens:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(limits.max_output_tokens)
    return env


def exports(env: Mapping[str, str], base: Mapping[str, str]) -> str:
    """`export NAME='value'` lines for what `env` sets or changes, `unset` for what it drops."""
    lines = [f"export {k}={_quoted(v)}" for k, v in env.items() if base.get(k) != v]
    lines += [f"unset {k}" for k in DROPPED if k in base]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def claude_command(claude: str | None, env: Mapping[str, str]) -> str:
    """The Claude Code executable: `claude` (a path or a name looked up on PATH)."""
    name = claude or "claude"
    found = shutil.which(name, path=env.get("PATH"))
    if found is None:
        what = f"{name} is not an executable" if claude else "claude is not on PATH"
        raise LaunchError(f"{what}; install Claude Code: {INSTALL}")
    return found


def run_claude(command: str, args: Sequence[str], env: Mapping[str, str]) -> int:
    """Claude Code in the foreground, on this terminal; its exit code (128 + N for signal N).

    Ctrl-C reaches Claude Code (the whole foreground process group gets it) and is its to
    handle: here it is ignored while Claude Code runs. A SIGTERM or SIGHUP to this process is
    passed on to it, so it never outlives the proxy it uses."""
    process = subprocess.Popen([command, *args], env=dict(env))

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in handled}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def run(
    settings: Settings,
    args: Sequence[str],
    *,
    claude: str | None = None,
    log_file: Path | None = None,
    base: Mapping[str, str] | None = None,
    notice: Callable[[str], None] = lambda line: None,
) -> int:
    """The whole of `claude-bridge code`: Claude Code's exit code. `notice` hears what would
    make requests fail (`diagnose`, as `serve` says it) and which proxy Claude Code uses."""
    base = dict(os.environ if base is None else base)
    command = claude_command(claude, base)
    for finding in diagnose(settings):
        notice(f"warning: {finding}")
    with proxy_for(settings, log_file) as target:
        kind = "the running serve at" if target.reused else "a proxy started on"
        notice(f"claude-bridge: Claude Code goes through {kind} {target.url}")
        return run_claude(command, args, claude_env(target, settings, Windows(settings), base))


@contextlib.contextmanager
def proxy_for(settings: Settings, log_file: Path | None = None) -> Iterator[Target]:
    """A running `serve` of this configuration, else one started for the block."""
    running = running_serve(settings)
    if running is not None:
        yield running
        return
    with background_proxy(settings, log_file=log_file) as target:
        yield target


def print_env(settings: Settings, base: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The exports for the `serve` of this configuration, and whether it is running now."""
    base = dict(os.environ if base is None else base)
    running = running_serve(settings)
    target = running or Target(serve_url(settings), serve_token(settings))
    return exports(claude_env(target, settings, Windows(settings), base), base), bool(running)
