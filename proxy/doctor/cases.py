"""The cases of `doctor --claude`: what to ask Claude Code, and how to tell from what it printed
(and what reached the scripted upstream) whether the feature works.

Each prompt carries the scripted upstream's marker (`scripted.py`). A check passes on what Claude
Code itself reported: its result, the tool results it fed back, the thinking it showed; the
upstream's closing answers say whether a tool result, an image or a subagent's words came back
through the proxy. A failure quotes what Claude Code printed, so it names a real incompatibility.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import scripted, searxng


@dataclass
class Run:
    """What one Claude Code run did."""

    returncode: int
    stdout: str
    stderr: str
    seen: list[scripted.Seen] = field(default_factory=list)
    """The requests of this case that reached the upstream."""
    count_tokens: int = 0
    """count_tokens requests the proxy answered 200 during the run."""

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found

    def result(self) -> dict[str, Any]:
        results = [e for e in self.events() if e.get("type") == "result"]
        return results[-1] if results else {}

    def answer(self) -> str:
        return str(self.result().get("result") or "")

    def blocks(self, role: str, kind: str) -> list[dict[str, Any]]:
        """The content blocks of type `kind` in the messages Claude Code printed for `role`
        (`assistant`: what it got; `user`: the tool results it sent back)."""
        return [
            block
            for event in self.events()
            if event.get("type") == role
            for block in (event.get("message") or {}).get("content") or []
            if isinstance(block, dict) and block.get("type") == kind
        ]

    def tool_results(self) -> list[dict[str, Any]]:
        """Claude Code's own accounts of the tool calls it ran (stream-json's
        `tool_use_result`)."""
        return [
            e["tool_use_result"]
            for e in self.events()
            if isinstance(e.get("tool_use_result"), dict)
        ]

    def said(self) -> str:
        """What Claude Code printed, shortened, for a failure's detail."""
        result = self.result()
        if result:
            shown = result.get("result") or result.get("subtype")
            return f"exit {self.returncode}, result {str(shown)[:300]!r}"
        tail = (self.stderr.strip() or self.stdout.strip())[-300:]
        return f"exit {self.returncode}, no result; it printed {tail!r}"


Check = Callable[[Run], str | None]
"""What is wrong with a run (None: nothing)."""


@dataclass(frozen=True)
class Case:
    name: str
    """Its key: the JSON output's and the README table's."""
    label: str
    prompt: str
    check: Check
    about: str
    """What a pass shows."""
    env: Mapping[str, str] = field(default_factory=dict)
    alone: bool = False
    """Run with no other case at once: its check counts requests the proxy answered."""
    inner: str | None = None
    """The scripted case of the requests Claude Code makes on its own for this one (a
    subagent's, a search's), whose requests the check sees too."""


def _succeeded(run: Run, wanted: str) -> str | None:
    """Nothing, if the run ended well with `wanted` in its answer."""
    result = run.result()
    if run.returncode != 0 or result.get("is_error") or result.get("subtype") != "success":
        return f"Claude Code failed: {run.said()}"
    if wanted not in run.answer():
        return f"the answer lacks {wanted!r}: {run.said()}"
    return None


def _answer_is(wanted: str) -> Check:
    return lambda run: _succeeded(run, wanted)


def _tool_round_trip(prefix: str, *markers: str) -> Check:
    """The run ended with the upstream's confirmation that each tool result came back with
    its call's output; Claude Code reported no tool error."""

    def check(run: Run) -> str | None:
        errors = [b for b in run.blocks("user", "tool_result") if b.get("is_error")]
        if errors:
            return f"a tool call failed in Claude Code: {str(errors[0].get('content'))[:300]}"
        return _succeeded(run, prefix + " | ".join(markers))

    return check


def _plain(run: Run) -> str | None:
    if not any(not seen.body.get("stream") for seen in run.seen):
        return f"Claude Code did not ask again without streaming: {run.said()}"
    return _succeeded(run, scripted.TEXT)


def _thinking(run: Run) -> str | None:
    shown = " ".join(str(b.get("thinking", "")) for b in run.blocks("assistant", "thinking"))
    if scripted.THOUGHT not in shown:
        return f"Claude Code showed no thinking block with the upstream's reasoning: {run.said()}"
    return _tool_round_trip("Thought: ", scripted.THINK_MARKER)(run)


def _context(run: Run) -> str | None:
    if run.returncode != 0 or run.result().get("is_error"):
        return f"Claude Code failed: {run.said()}"
    if run.count_tokens == 0:
        return f"no count_tokens request reached the proxy: {run.said()}"
    return None


def _cut(run: Run) -> str | None:
    if len(run.seen) < 2:
        return f"Claude Code did not retry the cut stream: {run.said()}"
    return _succeeded(run, scripted.CUT_TEXT)


def _error(run: Run) -> str | None:
    result = run.result()
    if run.returncode == 0 or not result.get("is_error"):
        return f"the upstream's 400 did not end the run as an error: {run.said()}"
    if scripted.UPSTREAM_ERROR not in json.dumps(run.events()) + run.stderr:
        return f"Claude Code did not show the upstream's message: {run.said()}"
    return None


def _subagent(run: Run) -> str | None:
    if not run.seen or not any(s.case == scripted.SUBAGENT_INNER for s in run.seen):
        return f"no subagent request reached the upstream: {run.said()}"
    return _succeeded(run, f"Subagent said: {scripted.SUBAGENT_WORDS}")


def _web_search(run: Run) -> str | None:
    """One search counted by Claude Code (`webSearchRequests` in every release; 2.1 also reports
    the tool's `searchCount`), the backend's result among the links of its account of the call
    (from 2.0, which prints one), and the upstream's word that the result reached it."""
    if not any(s.case == scripted.WEB_SEARCH_INNER for s in run.seen):
        return f"no search request from Claude Code reached the upstream: {run.said()}"
    usage = run.result().get("modelUsage") or {}
    counted = [u.get("webSearchRequests") for u in usage.values() if isinstance(u, dict)]
    accounts = [r for r in run.tool_results() if "query" in r and "results" in r]
    reported = [r["searchCount"] for r in accounts if "searchCount" in r]
    if sum(c for c in counted if isinstance(c, int)) != 1 or reported not in ([], [1]):
        found = f"webSearchRequests {counted}, searchCount {reported}"
        return f"Claude Code did not count one search ({found}): {run.said()}"
    links = [
        link.get("url")
        for account in accounts
        for result in account["results"]
        if isinstance(result, dict)
        for link in result.get("content") or []
        if isinstance(link, dict)
    ]
    if accounts and searxng.RESULT_URL not in links:
        return f"Claude Code's search lacks the backend's result: {str(accounts)[:300]}"
    return _succeeded(run, f"{scripted.SEARCH_FOUND}: {searxng.RESULT_URL}")


IMAGE_FILE = "doctor.png"


def cases(workspace: Path) -> list[Case]:
    """The grid, in the order it is printed."""
    image = workspace / IMAGE_FILE
    return [
        Case(
            "text",
            "non-streamed text",
            "[doctor:text] Say the text.",
            _plain,
            "after a 404 on the stream, asked again without streaming, answered",
        ),
        Case(
            "stream",
            "streamed text",
            "[doctor:stream] Stream.",
            _answer_is(scripted.STREAMED),
            "24 pieces with multi-byte text, joined exactly",
        ),
        Case(
            "bash",
            "Bash tool round trip",
            "[doctor:bash] Run the marker command.",
            _tool_round_trip("Bash said: ", scripted.BASH_MARKER),
            "a streamed Bash call ran; its output reached the upstream",
        ),
        Case(
            "parallel",
            "parallel tools",
            "[doctor:parallel] Run both marker commands.",
            _tool_round_trip("Both ran: ", *scripted.PARALLEL_MARKERS),
            "two interleaved calls ran; each result came back under its call's id",
        ),
        # Older releases think only when asked to: the variable asks every release.
        Case(
            "thinking",
            "thinking",
            "[doctor:thinking] Think, then run the marker.",
            _thinking,
            "reasoning shown as a thinking block, then a tool call that completed",
            env={"MAX_THINKING_TOKENS": "2048"},
        ),
        Case(
            "image",
            "image",
            f"[doctor:image {image}] Look at the image.",
            _answer_is(scripted.IMAGE_SEEN + ": image/"),
            "a PNG read with the Read tool reached the upstream as an image",
        ),
        Case(
            "context",
            "/context (count_tokens)",
            "/context",
            _context,
            "/context counted tokens at the proxy",
            alone=True,
        ),
        Case(
            "cut",
            "cut stream",
            "[doctor:cut] Say the long text.",
            _cut,
            "a stream cut halfway was retried and answered whole",
        ),
        Case(
            "error",
            "upstream error",
            "[doctor:error] Fail.",
            _error,
            "the upstream's 400 and its message reached the user",
        ),
        Case(
            "subagent",
            "subagent",
            "[doctor:subagent] Ask a subagent.",
            _subagent,
            "a subagent's own request ran; its answer reached the main loop",
            inner=scripted.SUBAGENT_INNER,
        ),
        Case(
            "web_search",
            "WebSearch",
            "[doctor:web_search] Search the web.",
            _web_search,
            "one search, run by the proxy on its backend; the result reached the main loop",
            inner=scripted.WEB_SEARCH_INNER,
        ),
    ]


FEATURES = [(case.name, case.label) for case in cases(Path())]
"""Every feature of the grid: (key, label), in order."""


def png(width: int = 8, height: int = 8) -> bytes:
    """A small, valid, solid-coloured PNG (what Claude Code's Read tool turns into an image)."""

    def part(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    rows = b"".join(b"\x00" + b"\x30\x90\xe0" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + part(b"IHDR", header)
        + part(b"IDAT", zlib.compress(rows))
        + part(b"IEND", b"")
    )
