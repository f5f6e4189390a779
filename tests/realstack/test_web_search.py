"""Claude Code's WebSearch tool through claude-bridge, on a model without web search.

The real Claude Code asks a scripted upstream (tests/upstream.py's FakeUpstream, a real HTTP
server) something that needs a search. The script calls Claude Code's `WebSearch` tool; Claude
Code then makes its side request with Anthropic's `web_search` server tool (PROTOCOL.md 12.2),
which claude-bridge answers by offering the model a `web_search` function, running the search
against a fake SearXNG (another FakeUpstream), and sending the `server_tool_use` and
`web_search_tool_result` blocks. Claude Code must report one search, and the main model must
get the fake backend's results in its `WebSearch` tool result. With no backend configured, it
must report one search that failed and give its main model what to configure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from upstream import (
    DONE,
    FakeUpstream,
    JSONReply,
    RecordedRequest,
    Reply,
    SSEReply,
    chunk,
    openai_usage,
    text_stream,
)

from claude_bridge.proxy.core.checker import check_wire

from . import build
from .conftest import Bridge, Claude, ClaudeRun, serve_bridge
from .support import Recorder

pytestmark = pytest.mark.realstack

TRIGGER = "realstack-websearch"
QUERY = "claude-bridge web search marker"
RESULT_URL = "https://results.example/marker-page"
RESULT_TITLE = "Marker page found by the fake SearXNG"
SUMMARY = "The fake backend found the marker page."
FINAL = "Searched and found the marker page."


def searxng(request: RecordedRequest) -> Reply:
    return JSONReply(
        {
            "query": QUERY,
            "results": [
                {"url": RESULT_URL, "title": RESULT_TITLE, "content": "marker snippet"},
                {"url": "https://results.example/second", "title": "Second", "content": "more"},
            ],
        }
    )


def _call(name: str, arguments: dict[str, Any]) -> SSEReply:
    call = {
        "index": 0,
        "id": f"call_{name.lower()}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return SSEReply(
        [
            chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            chunk({}, finish_reason="tool_calls"),
            chunk(choices=False, usage=openai_usage()),
            DONE,
        ]
    )


def _text(text: str) -> SSEReply:
    return SSEReply(text_stream([text]))


def model(request: RecordedRequest) -> Reply:
    """The scripted model: what it answers depends only on the request."""
    body = request.json or {}
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or []]
    messages = body.get("messages") or []
    called = [
        call["function"]["name"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or []
    ]
    if "web_search" in tools:  # Claude Code's side request, its server tool made a function
        if "web_search" in called:
            return _text(SUMMARY)
        return _call("web_search", {"query": QUERY})
    if TRIGGER not in json.dumps(messages):
        return _text("ok")  # Claude Code's other requests (titles, ...)
    if "WebSearch" in called:  # its tool result is back in the main loop
        return _text(FINAL)
    if "WebSearch" in tools:
        return _call("WebSearch", {"query": QUERY})
    # WebSearch is a deferred tool: loaded by name first (PROTOCOL.md 11.3).
    return _call("ToolSearch", {"query": "select:WebSearch", "max_results": 1})


@pytest.fixture(scope="module", params=["searxng", "none"])
def bridge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridge]:
    """claude-bridge `serve` on the scripted upstream, with the fake SearXNG as its backend, or
    (`none`) with no `[web_search]` table."""
    work = tmp_path_factory.mktemp("websearch")
    with FakeUpstream() as upstream, FakeUpstream() as search:
        upstream.always(model)
        search.always(searxng)
        home = work / "home-bridge"
        home.mkdir()
        config = home / "config.toml"
        table = {"web_search": {"backend": "searxng", "url": search.base_url}}
        config.write_text(tomli_w.dumps(table if request.param == "searxng" else {}))
        back = Recorder(upstream.base_url)
        env = {
            "CLAUDE_BRIDGE_CONFIG": str(config),
            "OPENAI_BASE_URL": back.url,
            "OPENAI_API_KEY": "sk-realstack-not-a-key",
            "BIG_MODEL": "scripted",
            "SMALL_MODEL": "scripted",
            "CLAUDE_BRIDGE_LOG_LEVEL": "debug",
        }
        label = f"websearch-{request.param}"
        yield from serve_bridge(home, label, env, back, upstream.base_url)


def search_run(
    artefacts: build.Artefacts, bridge: Bridge, tmp_path: Path
) -> tuple[ClaudeRun, dict[str, Any], str]:
    """Claude Code asked for a search: the run, its own account of the WebSearch call (its
    stream-json `tool_use_result`) and the tool result its main model read."""
    claude = Claude(artefacts.claude, bridge, tmp_path / "home", tmp_path / "workspace")
    run = claude.run(
        "-p",
        f"{TRIGGER}: search the web for the marker",
        "--allowedTools",
        "WebSearch",
        "--output-format",
        "stream-json",
        "--verbose",
    )
    assert run.returncode == 0, f"{run.report()}\n{bridge.logs()}"
    events = run.events()
    results = [e["tool_use_result"] for e in events if isinstance(e.get("tool_use_result"), dict)]
    searches = [r for r in results if r.get("query") == QUERY]
    assert len(searches) == 1, run.report()
    (read,) = [
        json.dumps(block)
        for e in events
        if e.get("type") == "user"
        for block in e["message"]["content"]
        if isinstance(block, dict)
        and block.get("type") == "tool_result"
        and QUERY in json.dumps(block)
    ]
    assert run.result()["result"] == FINAL
    return run, searches[0], read


def test_claude_code_web_search(artefacts: build.Artefacts, bridge: Bridge, tmp_path: Path) -> None:
    run, search, read = search_run(artefacts, bridge, tmp_path)
    assert search["searchCount"] == 1
    # The side request's answer, as claude-bridge sent it: a clean stream with the search.
    (side,) = [
        e
        for e in run.messages_calls()
        if any(t.get("type", "").startswith("web_search_") for t in e.request_json()["tools"])
    ]
    assert check_wire(side.response_body) == []
    if "none" in bridge.process.name:
        # What Claude Code shows with no backend: one search, its error, and what to set up,
        # which its main model reads; the upstream is not asked to make results up.
        assert search["results"][0] == "Web search error: unavailable"
        assert "[web_search]" in read and "Web search error: unavailable" in read
        offered = [
            t["function"]["name"] for e in run.upstream for t in e.request_json().get("tools") or []
        ]
        assert "web_search" not in offered
        return
    assert {"title": RESULT_TITLE, "url": RESULT_URL} in search["results"][0]["content"]
    # What the main model read: the fake backend's results in the WebSearch tool result.
    assert RESULT_URL in read and SUMMARY in read
    assert b'"web_search_requests": 1' in side.response_body.replace(b'":1', b'": 1')
