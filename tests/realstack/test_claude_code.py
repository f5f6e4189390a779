"""The real Claude Code, non-interactive, through claude-bridge to llama-server.

The model is the scripted one (see scripted_model.py): a plain prompt gets a text answer, a
prompt containing TOOL_TRIGGER gets one Bash call (`echo realstack-tool-ok`), and a tool result
gets a closing text answer. The tests check what a run must show - exit code, a result, the
tool result travelling back upstream, clean streams - never the wording.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from . import build
from .conftest import SCRIPTED, Bridge, Claude, ClaudeRun
from .scripted_model import TOOL_COMMAND, TOOL_MARKER, TOOL_TRIGGER
from .support import parse_sse, stream_problems

pytestmark = pytest.mark.realstack

ALLOW_ECHO = ("--allowedTools", "Bash(echo:*)")
TOOL_LOOP = (
    "-p",
    f"Run the marker command ({TOOL_TRIGGER}).",
    "--output-format",
    "stream-json",
    "--verbose",
    *ALLOW_ECHO,
    "--max-turns",
    "4",
)
"""Claude Code's arguments for one tool loop: the scripted Bash call and the answer after it."""


def assert_succeeded(run: ClaudeRun) -> dict[str, Any]:
    assert run.returncode == 0, run.report()
    result = run.result()
    assert result.get("subtype") == "success", run.report()
    assert result.get("is_error") is False, run.report()
    assert str(result.get("result", "")).strip(), f"empty answer\n{run.report()}"
    return result


def assert_streams_clean(run: ClaudeRun) -> None:
    """Every Messages call streamed (no fallback to a non-streaming retry), got a 200 and a
    well-formed Anthropic stream with no error event."""
    calls = run.messages_calls()
    assert calls, f"Claude Code made no /v1/messages call\n{run.report()}"
    for exchange in calls:
        request = exchange.request_json()
        assert request.get("stream") is True, (
            f"a non-streaming request: Claude Code fell back after a bad stream\n{run.report()}"
        )
        assert exchange.status == 200, exchange.describe()
        assert exchange.complete, exchange.describe()
        problems = stream_problems(parse_sse(exchange.response_body))
        assert not problems, f"{problems}\n{exchange.describe()}"


def tool_uses(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if block.get("type") == "tool_use"]


def tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if block.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def test_text_answer(claude: Claude) -> None:
    run = claude.run("-p", "Say hello.", "--output-format", "json")
    assert_succeeded(run)
    assert_streams_clean(run)
    assert run.upstream, "claude-bridge sent nothing upstream"
    for exchange in run.upstream:
        assert exchange.path.startswith(claude.bridge.upstream_path), exchange.describe()
        assert exchange.status == 200, exchange.describe()


@pytest.fixture(scope="module")
def tool_loop(claude_module: Claude) -> ClaudeRun:
    return claude_module.run(*TOOL_LOOP)


def test_tool_loop_completes(tool_loop: ClaudeRun) -> None:
    assert_succeeded(tool_loop)
    events = tool_loop.events()
    calls = [
        block
        for event in events
        if event.get("type") == "assistant"
        for block in tool_uses(event.get("message", {}))
    ]
    assert [(c["name"], c["input"].get("command")) for c in calls] == [("Bash", TOOL_COMMAND)], (
        tool_loop.report()
    )
    results = [
        block
        for event in events
        if event.get("type") == "user"
        for block in tool_results(event.get("message", {}))
    ]
    assert len(results) == 1, tool_loop.report()
    assert results[0]["tool_use_id"] == calls[0]["id"]
    assert not results[0].get("is_error"), tool_loop.report()
    assert TOOL_MARKER in result_text(results[0]), tool_loop.report()


def test_tool_loop_streams_are_clean(tool_loop: ClaudeRun) -> None:
    assert_streams_clean(tool_loop)


def test_tool_result_goes_back_in_the_second_request(tool_loop: ClaudeRun) -> None:
    """Anthropic side: the tool_use claude-bridge streamed comes back with its tool_result."""
    calls = tool_loop.messages_calls()
    first = next(
        (
            e
            for e in calls
            if any(
                ev.event == "content_block_start" and ev.data["content_block"]["type"] == "tool_use"
                for ev in parse_sse(e.response_body)
            )
        ),
        None,
    )
    assert first is not None, f"no streamed tool_use\n{tool_loop.report()}"
    start = next(
        ev.data["content_block"]
        for ev in parse_sse(first.response_body)
        if ev.event == "content_block_start" and ev.data["content_block"]["type"] == "tool_use"
    )
    later = calls[calls.index(first) + 1 :]
    assert later, f"no request after the tool call\n{tool_loop.report()}"
    messages = later[0].request_json()["messages"]
    assert [b["id"] for b in tool_uses(messages[-2])] == [start["id"]], messages[-2:]
    (result,) = tool_results(messages[-1])
    assert result["tool_use_id"] == start["id"]
    assert TOOL_MARKER in result_text(result)


def test_tool_result_reaches_the_upstream(claude_module: Claude, tool_loop: ClaudeRun) -> None:
    """OpenAI side, as recorded between claude-bridge and llama-server: the assistant turn's
    tool call and the tool message answering it, with matching ids. Passed through: each
    upstream request is one Claude Code sent, byte for byte but the model."""
    if claude_module.bridge.passthrough:
        sent = [e.request_json() for e in tool_loop.messages_calls()]
        for exchange in tool_loop.upstream:
            forwarded = exchange.request_json()
            assert forwarded["model"] == SCRIPTED, exchange.describe()
            assert any(forwarded == {**body, "model": SCRIPTED} for body in sent), (
                exchange.describe()
            )
        upstream_messages = [m for e in tool_loop.upstream for m in e.request_json()["messages"]]
        assert any(tool_results(m) for m in upstream_messages), tool_loop.report()
        return
    with_tool = [
        e
        for e in tool_loop.upstream
        if any(m.get("role") == "tool" for m in e.request_json().get("messages", []))
    ]
    assert with_tool, "no upstream request carried a tool message\n" + "\n".join(
        e.request_body.decode()[-2000:] for e in tool_loop.upstream
    )
    messages = with_tool[0].request_json()["messages"]
    index = next(i for i, m in enumerate(messages) if m.get("role") == "tool")
    assistant, tool = messages[index - 1], messages[index]
    assert assistant["role"] == "assistant", messages[index - 1 : index + 1]
    (call,) = assistant["tool_calls"]
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"])["command"] == TOOL_COMMAND
    assert tool["tool_call_id"] == call["id"]
    content = tool["content"]
    text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    assert TOOL_MARKER in text
    assert with_tool[0].status == 200, with_tool[0].describe()


def test_continue_with_that_history(claude_module: Claude, tool_loop: ClaudeRun) -> None:
    assert tool_loop.returncode == 0, "the tool loop it continues failed"
    run = claude_module.run(
        "--continue",
        "-p",
        f"Again, please ({TOOL_TRIGGER}).",
        "--output-format",
        "json",
        *ALLOW_ECHO,
        "--max-turns",
        "4",
    )
    assert_succeeded(run)
    assert_streams_clean(run)
    history = run.messages_calls()[0].request_json()["messages"]
    earlier_calls = [b["id"] for m in history for b in tool_uses(m)]
    earlier_results = [b["tool_use_id"] for m in history for b in tool_results(m)]
    assert earlier_calls, "the continued conversation lost the earlier tool call"
    assert earlier_calls == earlier_results


def test_context_counts_tokens(claude: Claude) -> None:
    run = claude.run("-p", "/context", "--output-format", "json")
    assert run.returncode == 0, run.report()
    counts = [e for e in run.exchanges if e.path.split("?")[0] == "/v1/messages/count_tokens"]
    assert counts, f"/context made no count_tokens call\n{run.report()}"
    for exchange in counts:
        assert exchange.status == 200, exchange.describe()
        tokens = exchange.response_json()["input_tokens"]
        assert isinstance(tokens, int) and tokens > 0, exchange.describe()
    assert "error" not in run.result().get("subtype", ""), run.report()


def test_prompt_too_long_is_understood(
    artefacts: build.Artefacts, small_bridge: Bridge, tmp_path: Path
) -> None:
    """llama-server's own context-overflow error, through claude-bridge, is the error Claude
    Code acts on ("prompt is too long"), reported once - not retried, not a generic failure."""
    claude = Claude(artefacts.claude, small_bridge, tmp_path / "home", tmp_path / "workspace")
    run = claude.run("-p", "Say hello.", "--output-format", "json")
    assert run.returncode != 0, run.report()
    result = run.result()
    assert result.get("is_error") is True, run.report()
    assert result.get("terminal_reason") == "prompt_too_long", run.report()
    calls = run.messages_calls()
    assert len(calls) == 1, f"retried a context overflow\n{run.report()}"
    assert calls[0].status == 400, calls[0].describe()
    error = calls[0].response_json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert error["message"].startswith("prompt is too long: "), error
