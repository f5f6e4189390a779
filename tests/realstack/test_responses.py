"""The real Claude Code through claude-bridge with `mode = "responses"`: translated to the
OpenAI Responses API, which the pinned llama-server serves at `POST /v1/responses`.

The scripted model (scripted_model.py) calls Bash once when asked for the marker command and
answers in text after the tool result: the whole loop has to cross the Responses dialect both
ways, streamed, as Claude Code sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import build
from .conftest import RESPONSES, SCRIPTED, Bridge, Claude, ClaudeRun, _bridge
from .scripted_model import TOOL_MARKER
from .support import Process

# The tier's checks of a tool loop, collected here again: they run on this module's
# `tool_loop`, the same Claude Code run through the Responses dialect.
from .test_claude_code import (  # noqa: F401
    TOOL_LOOP,
    test_tool_loop_completes,
    test_tool_loop_streams_are_clean,
    test_tool_result_goes_back_in_the_second_request,
)

pytestmark = pytest.mark.realstack


@pytest.fixture(scope="module")
def responses_bridge(workdir: Path, scripted_llama: Process) -> Iterator[Bridge]:
    yield from _bridge(workdir, scripted_llama, SCRIPTED, RESPONSES)


@pytest.fixture(scope="module")
def tool_loop(
    artefacts: build.Artefacts, responses_bridge: Bridge, tmp_path_factory: pytest.TempPathFactory
) -> ClaudeRun:
    base = tmp_path_factory.mktemp("claude-responses")
    claude = Claude(artefacts.claude, responses_bridge, base / "home", base / "workspace")
    return claude.run(*TOOL_LOOP)


def test_every_upstream_call_was_a_responses_request(tool_loop: ClaudeRun) -> None:
    calls = [e for e in tool_loop.upstream if e.method == "POST"]
    assert calls, tool_loop.report()
    for exchange in calls:
        assert exchange.path.split("?")[0] == "/v1/responses", exchange.describe()
        assert exchange.status == 200, exchange.describe()
        body = exchange.request_json()
        assert body["store"] is False and body["stream"] is True
        assert isinstance(body["input"], list) and "messages" not in body
    # The tool's output went back as a `function_call_output` item paired with its call.
    items = [item for e in calls for item in e.request_json()["input"]]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert any(TOOL_MARKER in str(o["output"]) for o in outputs), tool_loop.report()
    call_ids = {i["call_id"] for i in items if i.get("type") == "function_call"}
    assert {o["call_id"] for o in outputs} <= call_ids
