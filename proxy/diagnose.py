"""What is missing or suspicious in the settings, each with its fix: checked before serving.

`diagnose(settings)` is pure (no network, no environment): `serve` prints its findings at start,
one line each, and a `doctor` command can reuse it. It looks for what makes every request fail
or go where the user did not mean:

- a remote upstream with no key (loopback and private-network servers, like llama.cpp, need
  none);
- a base URL without the path its provider serves the API under (the profiles' `base_paths` in
  `core/providers.py`: `/v1`, OpenRouter's `/api/v1`...), or ending in the endpoint that
  claude-bridge adds itself (each dialect's: `/chat/completions`, `/responses`, `/messages`);
  one without a scheme is refused when the settings load;
- Claude model names that would reach an upstream unchanged (no big or small model, no rule).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import LEGACY_ENV, Settings, UpstreamSettings
from .core import dialects, providers
from .core.routing import DEFAULT_UPSTREAM, matching_rule, route

# What Claude Code asks for, one name per family (BIG_MODEL and SMALL_MODEL map by family).
CLAUDE_FAMILIES = ("opus", "sonnet", "haiku")
_LOCAL_SUFFIXES = (".localhost", ".local", ".lan", ".internal", ".home.arpa")


@dataclass(frozen=True)
class Finding:
    """One thing to fix: what is wrong, and what to do about it."""

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}"


def diagnose(settings: Settings, *, offline: bool = False) -> list[Finding]:
    """Every finding about `settings`, upstream by upstream, then the model names. `offline`:
    upstream answers come from a recording (`--upstream-replay`), so keys and model names
    do not matter."""
    findings: list[Finding] = []
    for name, endpoint in settings.endpoints().items():
        findings += _url_findings(name, endpoint)
        if not offline:
            findings += _key_findings(name, endpoint)
    if not offline:
        findings += _model_findings(settings)
    return findings


def is_local(host: str) -> bool:
    """Whether `host` (a name or `host:port`) is this machine or a private network, where
    servers usually take no key: loopback and private addresses, `localhost`, names without
    a dot (a container's service name) and the private-use suffixes."""
    name = (urlsplit("//" + providers.host_of(host)).hostname or "").rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or "." not in name or name.endswith(_LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def _label(name: str) -> str:
    return "the upstream" if name == DEFAULT_UPSTREAM else f"upstream {name!r}"


def _setting(name: str, field: str) -> str:
    """How the user sets `field` of upstream `name`."""
    if name == DEFAULT_UPSTREAM:
        return LEGACY_ENV.get(f"openai_{field}", f"openai_{field}")
    return f"{field} under [upstreams.{name}]"


def _url_findings(name: str, endpoint: UpstreamSettings) -> list[Finding]:
    # A URL without a scheme or host is refused when the settings load (`config._base_url`).
    url = endpoint.base_url.strip()
    setting = _setting(name, "base_url")
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    # Never the URL's `user:password@`: these lines are printed.
    origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    spoken = dialects.candidates(endpoint.mode)
    for dialect in spoken:
        if path.endswith(dialect.path):
            return [
                Finding(
                    f"{_label(name)}'s base URL ends in {dialect.path}, which claude-bridge "
                    "adds itself",
                    f"set {setting} to {origin}{path.removesuffix(dialect.path)}",
                )
            ]
    if not all(d.under_base_path for d in spoken):
        return []  # pass-through finds `/v1/messages` under any base URL
    profile = providers.resolve(endpoint.provider, url, "")
    if profile.base_paths and not path.endswith(profile.base_paths):
        return [
            Finding(
                f"{_label(name)}'s base URL {origin}{path} lacks {profile.base_paths[0]}, which "
                f"{profile.label} serves its API under",
                f"set {setting} to {origin}{profile.base_paths[0]}",
            )
        ]
    return []


def _key_findings(name: str, endpoint: UpstreamSettings) -> list[Finding]:
    if any(key.key.get_secret_value() for key in endpoint.pool()):
        return []
    if urlsplit(endpoint.base_url).password:
        return []  # `user:password@` goes as HTTP Basic auth, instead of a key
    host = providers.host_of(endpoint.base_url)
    if is_local(host):
        return []
    if name == DEFAULT_UPSTREAM:
        fix = "set OPENAI_API_KEY (in the environment or .env)"
    elif endpoint.api_key_env:
        fix = f"set {endpoint.api_key_env} (in the environment or .env)"
    else:
        fix = f"set api_key_env under [upstreams.{name}] and that variable"
    return [Finding(f"no API key for {_label(name)} {host} (it will refuse every request)", fix)]


def _model_findings(settings: Settings) -> list[Finding]:
    """Claude model names that would go upstream as they are, by upstream."""
    rules = settings.rules()
    unchanged: dict[str, list[str]] = {}
    for family in CLAUDE_FAMILIES:
        name = f"claude-{family}-4-5"
        if matching_rule(name, rules) is not None:
            continue  # a rule chose this, keeping the name or not
        to = route(
            name, big_model=settings.big_model, small_model=settings.small_model, rules=rules
        )
        if to.model == name:
            unchanged.setdefault(to.upstream, []).append(family)
    findings = []
    for upstream, families in unchanged.items():
        endpoint = settings.endpoints()[upstream]
        host = providers.host_of(endpoint.base_url)
        if host.endswith("anthropic.com"):
            continue  # Claude's own names are right there
        if not providers.resolve(endpoint.provider, endpoint.base_url, "").picks_model:
            continue
        fix = "set BIG_MODEL" + (" and SMALL_MODEL" if "haiku" in families else "")
        findings.append(
            Finding(
                f"Claude model names ({', '.join(families)}) would reach {host} unchanged",
                f"{fix} to models it serves, or add [[routes]] rules",
            )
        )
    return findings
