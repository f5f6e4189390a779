"""Upstream and key health, and failover per request, as dashboard pieces (pure).

`upstreams_line` says how each upstream and key is doing (`ok`, `cooling 12s`, `open 25s`,
`probing`); `attempts_note` says after how many attempts a request was answered (the model
column already names the target that answered); `attempt_text` is one attempt of a recorded
exchange, for `replay show`.
"""

from __future__ import annotations

from collections.abc import Sequence

from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.journal.records import AttemptRecord
from claude_bridge.proxy.resilience.health import KeyReport, UpstreamReport

Piece = tuple[str, str]

_STYLES = {"ok": "green", "cooling": "yellow", "half-open": "yellow", "open": "bold red"}


def worth_showing(reports: Sequence[UpstreamReport]) -> bool:
    """One upstream with one key, serving: nothing to say (the header names it already)."""
    return len(reports) > 1 or any(len(r.keys) > 1 or r.state != "ok" for r in reports)


def upstreams_line(reports: Sequence[UpstreamReport]) -> list[Piece]:
    """`upstream  default ok  groq open 25s  openrouter ok (K1 cooling 12s, K2 ok)`."""
    line: list[Piece] = [("upstream", "dim")]
    for report in reports:
        line += [(f"  {report.name} ", ""), _state(report.state, report.until)]
        keys = report.keys
        if len(keys) > 1 or (keys and keys[0].state != "ok"):
            line.append((" (", "dim"))
            for number, key in enumerate(keys):
                line += [(", " if number else "", "dim"), *_key(key)]
            line.append((")", "dim"))
    return line


def attempts_note(exchange: Exchange) -> str:
    """` · 3 tries` when the request took more than one target or key; else nothing."""
    tries = len(exchange.attempts)
    return f" · {tries} tries" if tries > 1 else ""


def attempt_text(number: int, attempt: AttemptRecord) -> Piece:
    """`2. second:m-second (OPENROUTER_KEY_2) failed at 3.1 ms after 0.4 ms: 429
    rate_limit_error: Rate limit reached`."""
    head = f"{number}. {attempt.upstream}:{attempt.model} ({attempt.key}) {attempt.outcome}"
    head += f" at {attempt.offset_ms:.1f} ms after {attempt.ms:.1f} ms"
    if attempt.outcome == "ok":
        return head, "green"
    return f"{head}: {attempt.status} {attempt.error_type}: {attempt.error}", "yellow"


def _key(key: KeyReport) -> list[Piece]:
    return [(f"{key.label} ", "dim"), _state(key.state, key.until)]


def _state(state: str, until: float | None) -> Piece:
    shown = "probing" if state == "half-open" else state
    if until is not None and state != "ok":
        shown += f" {until:.0f}s"
    return shown, _STYLES.get(state, "")
