"""Every `doctor` check, in the order they are shown, and their JSON form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ..config import Settings
from .checks import (
    Check,
    auth_check,
    claude_check,
    environment_checks,
    port_check,
    settings_checks,
)
from .upstreams import upstream_checks


def examine(
    config_path: Path | None,
    *,
    live: bool,
    claude: str | None,
    env: Mapping[str, str],
    cwd: Path,
    bind: Callable[[str, int], list[Any]],
    exposure: Callable[[str, SecretStr | None], str | None],
) -> list[Check]:
    """The settings; with settings that load, each upstream, the port and the auth token; then
    Claude Code and its environment. `bind` and `exposure` are `serve`'s own checks."""
    settings, checks = settings_checks(config_path, env)
    if settings is not None:
        checks += asyncio.run(upstream_checks(settings, live=live))
        checks.append(port_check(settings, bind))
        checks.append(auth_check(settings, exposure(settings.host, settings.auth_token)))
    checks.append(claude_check(claude, env))
    checks += environment_checks(settings or Settings.model_validate({}), env, cwd)
    return checks


def failed(checks: list[Check]) -> bool:
    return any(check.level == "fail" for check in checks)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": not failed(checks), "checks": [vars(check) for check in checks]}
