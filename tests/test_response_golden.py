"""Golden pairs: `tests/data/responses/<case>.openai.json` -> `<case>.anthropic.json`.

The OpenAI chat completion is translated with a fixed reply context: message id
`msg_01TESTTESTTESTTESTTESTTE`, model `claude-sonnet-4-5`, and the tool names and stop
sequences of `<case>.request.json` (an Anthropic request) when there is one. An optional
`<case>.context.json` gives `input_estimate` / `output_estimate` (what the pipeline would have
counted). Run with `UPDATE_GOLDEN=1` to rewrite the expected files, then review them by eye.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from shapes import follow_up

from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.errors import UpstreamError
from claude_bridge.proxy.core.ids import PROXY_SIGNATURE_PREFIX, ToolNames, tool_id_to_upstream
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.response import translate_response
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.models.openai import ChatCompletion

DATA = Path(__file__).parent / "data" / "responses"
CASES = sorted(p.name.removesuffix(".openai.json") for p in DATA.glob("*.openai.json"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
MESSAGE_ID = "msg_01TESTTESTTESTTESTTESTTE"
MODEL = "claude-sonnet-4-5"
ANTHROPIC_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def context_for(case: str) -> tuple[ReplyContext, int]:
    names = ToolNames()
    stops: tuple[str, ...] = ()
    request_path = DATA / f"{case}.request.json"
    if request_path.exists():
        request = parse_body(request_path.read_bytes(), MessagesRequest)
        names = ToolNames([t.name for t in request.tools or ()])
        stops = tuple(request.stop_sequences or ())
    extra: dict[str, int] = {}
    context_path = DATA / f"{case}.context.json"
    if context_path.exists():
        extra = _load(context_path)
    ctx = ReplyContext(
        model=MODEL,
        message_id=MESSAGE_ID,
        tool_names=names,
        stop_sequences=stops,
        input_count=extra.get("input_estimate", 0),
    )
    return ctx, extra.get("output_estimate", 0)


def translate_case(case: str) -> dict[str, Any]:
    completion = ChatCompletion.model_validate(_load(DATA / f"{case}.openai.json"))
    ctx, output_estimate = context_for(case)
    return translate_response(completion, ctx, output_estimate=output_estimate)


def test_cases_exist() -> None:
    assert len(CASES) >= 25
    for case in CASES:
        assert (DATA / f"{case}.anthropic.json").exists() or UPDATE, f"{case}: no expected file"


@pytest.mark.parametrize("case", CASES)
def test_response_golden(case: str) -> None:
    message = translate_case(case)
    expected_path = DATA / f"{case}.anthropic.json"
    if UPDATE:
        _dump(expected_path, message)
    assert message == _load(expected_path)


@pytest.mark.parametrize("case", CASES)
def test_response_invariants(case: str) -> None:
    """What every Anthropic message must satisfy, whatever the upstream sent."""
    message = translate_case(case)
    assert message["id"] == MESSAGE_ID and message["model"] == MODEL
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["stop_reason"] in STOP_REASONS
    assert (message["stop_sequence"] is not None) == (message["stop_reason"] == "stop_sequence")
    usage = message["usage"]
    for key in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ):
        assert type(usage[key]) is int and usage[key] >= 0, key
    kinds = [block["type"] for block in message["content"]]
    # Thinking first, then text, then tool calls (PROTOCOL 8.2).
    order = {"thinking": 0, "redacted_thinking": 0, "text": 1, "tool_use": 2}
    assert kinds == sorted(kinds, key=order.__getitem__), kinds
    for block in message["content"]:
        if block["type"] == "thinking":
            assert block["thinking"] and block["signature"]
        if block["type"] == "text":
            assert block["text"]
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict)
            assert ANTHROPIC_TOOL_ID.match(block["id"]), block["id"]
    if "tool_use" in kinds and message["stop_reason"] != "max_tokens":
        assert message["stop_reason"] in ("tool_use", "refusal", "pause_turn")


@pytest.mark.parametrize("case", CASES)
def test_tool_ids_map_back_to_the_upstream(case: str) -> None:
    """The client sends our tool_use ids back; the upstream must get its own ids again."""
    completion = _load(DATA / f"{case}.openai.json")
    calls = completion["choices"][0]["message"].get("tool_calls") or []
    blocks = [b for b in translate_case(case)["content"] if b["type"] == "tool_use"]
    assert len(blocks) == len(calls)
    for call, block in zip(calls, blocks, strict=True):
        if call.get("id"):
            assert tool_id_to_upstream(block["id"]) == call["id"]
    assert len({b["id"] for b in blocks}) == len(blocks), "tool_use ids must be unique"


def test_proxy_signatures_are_marked() -> None:
    message = translate_case("reasoning_content_deepseek")
    thinking = message["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["signature"].startswith(PROXY_SIGNATURE_PREFIX)
    # The same text gets the same signature: a replayed conversation stays byte-identical.
    assert translate_case("reasoning_content_deepseek")["content"][0] == thinking


@pytest.mark.parametrize("body", [{"choices": []}, {"choices": [{"index": 0}]}])
def test_no_choices_is_an_api_error(body: dict[str, Any]) -> None:
    ctx, _ = context_for("text_plain")
    with pytest.raises(UpstreamError) as caught:
        translate_response(ChatCompletion.model_validate(body), ctx)
    assert (caught.value.status, caught.value.type) == (502, "api_error")


@pytest.mark.parametrize(
    "case", ["tool_ids_invalid_for_anthropic", "tool_name_shortened", "tool_id_missing"]
)
def test_reply_round_trips_into_the_next_request(case: str) -> None:
    """Claude Code sends the reply back as history: the upstream must see its own ids and
    names again, each call answered by a tool message."""
    completion = _load(DATA / f"{case}.openai.json")
    calls = completion["choices"][0]["message"]["tool_calls"]
    blocks = translate_case(case)["content"]
    uses = [b for b in blocks if b["type"] == "tool_use"]
    request_path = DATA / f"{case}.request.json"
    tools = _load(request_path)["tools"] if request_path.exists() else []
    next_request = follow_up(blocks, tools, model=MODEL, max_tokens=100)
    body = translate_request(
        parse_body(json.dumps(next_request).encode(), MessagesRequest),
        RequestOptions(model="big-model"),
    ).body
    assistant = body["messages"][1]
    sent = [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]]
    expected = [
        (call.get("id") or use["id"], call["function"]["name"])
        for call, use in zip(calls, uses, strict=True)
    ]
    assert sent == expected
    answers = [m["tool_call_id"] for m in body["messages"][2:]]
    assert answers == [call_id for call_id, _ in expected]
