"""The OpenAI Responses dialect (proxy/core/responses): golden pairs as data, every stream split
at every byte with the checker on every output, the shared captures replayed, and the thinking
signature carried across two turns.

Data in tests/data/openai_responses (the chat dialect's pairs live in tests/data/requests,
responses and stream):
* `requests/<case>.anthropic.json` -> `<case>.responses.json`, with `RequestOptions(model="gpt-5",
  profile="openai")` unless `<case>.options.json` says otherwise;
* `replies/<case>.responses.json` -> `<case>.anthropic.json`;
* `stream/<case>.responses.sse` -> `<case>.anthropic.sse`.
A reply or stream case may have `<case>.request.json` (an Anthropic request): the reply context
then comes from translating it (tool names, strict schemas). `UPDATE_GOLDEN=1` rewrites the
expected files; review every change by eye.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import pytest
from shapes import content_blocks, follow_up
from test_stream import _decode, _sdk_final_message, _wire

from claude_bridge.proxy.core.checker import check_stream, check_wire
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.errors import UpstreamError
from claude_bridge.proxy.core.ids import VALID_TOOL_NAME, ToolNames, tool_id_to_upstream
from claude_bridge.proxy.core.nulls import AddedNulls
from claude_bridge.proxy.core.providers import by_name
from claude_bridge.proxy.core.request import OpenAIRequest, RequestOptions
from claude_bridge.proxy.core.responses import carrier
from claude_bridge.proxy.core.responses.reply import translate_reply
from claude_bridge.proxy.core.responses.request import translate_request
from claude_bridge.proxy.core.responses.stream import ResponsesStreamTranslator
from claude_bridge.proxy.core.responses.upstreams import (
    azure_deployment,
    default_dialect,
    responses_url,
)
from claude_bridge.proxy.core.stream import run_sse
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest

DATA = Path(__file__).parent / "data" / "openai_responses"
REQUESTS, REPLIES, STREAMS = DATA / "requests", DATA / "replies", DATA / "stream"
REQUEST_CASES = sorted(
    p.name.removesuffix(".anthropic.json") for p in REQUESTS.glob("*.anthropic.json")
)
REPLY_CASES = sorted(
    p.name.removesuffix(".responses.json") for p in REPLIES.glob("*.responses.json")
)
STREAM_CASES = sorted(
    p.name.removesuffix(".responses.sse") for p in STREAMS.glob("*.responses.sse")
)
FAILING = {"cut_without_terminal_event", "error_event_nested", "failed_midstream"}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SCOPE = "openai"
MODEL = "claude-sonnet-4-5"
MESSAGE_ID = "msg_01TESTRESPONSES0000000000"
LONG_TOOL = "mcp__github__create_or_update_file_contents_in_a_repository_branch"
DEFAULT_TOOLS = ToolNames([LONG_TOOL, "read_file", "bash", "weather", "add", "multiply"])
STOP_REASONS = {"end_turn", "max_tokens", "tool_use", "refusal"}
FIXTURES = (
    Path(
        os.environ.get("CLAUDE_BRIDGE_FIXTURES")
        or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    )
    / "openai_responses"
)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _options(case: str | None = None) -> RequestOptions:
    options: dict[str, Any] = {"model": "gpt-5", "profile": "openai"}
    path = REQUESTS / f"{case}.options.json"
    if case and path.exists():
        options.update(_load(path))
    options["profile"] = by_name(options["profile"])
    return RequestOptions(**options)


def _translate(
    body: dict[str, Any] | bytes, options: RequestOptions | None = None
) -> OpenAIRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return translate_request(parse_body(raw, MessagesRequest), options or _options())


def _context(folder: Path, case: str) -> ReplyContext:
    path = folder / f"{case}.request.json"
    names, nulls = DEFAULT_TOOLS, AddedNulls()
    if path.exists():
        translated = _translate(path.read_bytes())
        names, nulls = translated.tool_names, translated.added_nulls
    return ReplyContext(
        model=MODEL, message_id=MESSAGE_ID, tool_names=names, input_count=42, added_nulls=nulls
    )


def _stream(body: bytes | Iterable[bytes], ctx: ReplyContext) -> list[dict[str, Any]]:
    return run_sse(ResponsesStreamTranslator(ctx, scope=SCOPE), body)


def _terminal(body: bytes) -> dict[str, Any] | None:
    """The final response object a stream's terminal event carries."""
    for event in reversed(_decode([body])):
        data = json.loads(event.data) if event.data.endswith("}") else {}
        if data.get("type") in ("response.completed", "response.incomplete"):
            response: dict[str, Any] = data["response"]
            return response
    return None


def _comparable(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks with each carried reasoning named by its item id: OpenAI re-encrypts the blob for
    the terminal event, so the stream's (from `output_item.done`) differs from it."""
    out = []
    for block in blocks:
        key = "signature" if block["type"] == "thinking" else "data"
        carried = carrier.unpack(block.get(key, ""), SCOPE)
        out.append({**block, key: carried.id} if carried else block)
    return out


def _check_message(message: dict[str, Any]) -> None:
    """What every Anthropic message must satisfy, whatever the upstream sent."""
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["stop_reason"] in STOP_REASONS
    assert message["stop_sequence"] is None
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens"):
        assert type(message["usage"][key]) is int and message["usage"][key] >= 0, key
    for block in message["content"]:
        if block["type"] == "thinking":
            assert block["thinking"] and block["signature"]
        elif block["type"] == "redacted_thinking":
            assert block["data"].startswith(carrier.PREFIX)
        elif block["type"] == "text":
            assert block["text"]
        else:
            assert block["type"] == "tool_use" and isinstance(block["input"], dict)
            assert re.fullmatch(r"[a-zA-Z0-9_-]+", block["id"]), block["id"]
    if any(b["type"] == "tool_use" for b in message["content"]):
        assert message["stop_reason"] in ("tool_use", "max_tokens")


def test_there_are_enough_cases() -> None:
    assert len(REQUEST_CASES) >= 10 and len(REPLY_CASES) >= 10 and len(STREAM_CASES) >= 15
    assert FAILING.issubset(STREAM_CASES)


# -- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_request_golden(case: str) -> None:
    body = _translate((REQUESTS / f"{case}.anthropic.json").read_bytes(), _options(case)).body
    expected = REQUESTS / f"{case}.responses.json"
    if UPDATE:
        _dump(expected, body)
    assert body == _load(expected)


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_request_invariants(case: str) -> None:
    """What the Responses API requires of every request (PROTOCOL.md 10.3-10.5)."""
    body = _translate((REQUESTS / f"{case}.anthropic.json").read_bytes(), _options(case)).body
    assert body["store"] is False
    reasoning_model = _options(case).profile.takes_effort(body["model"])
    assert body.get("include") == (["reasoning.encrypted_content"] if reasoning_model else None)
    assert body["max_output_tokens"] >= 16
    assert not {"messages", "stop", "stop_sequences", "top_k", "reasoning_effort"} & set(body)
    calls: set[str] = set()
    items = body["input"]
    for position, item in enumerate(items):
        kind = item["type"]
        if kind == "function_call":
            calls.add(item["call_id"])
            assert isinstance(json.loads(item["arguments"]), dict)
        elif kind == "function_call_output":
            assert item["call_id"] in calls, f"{case}: output before its call"
        elif kind == "reasoning":
            # Never by id alone (store is off), never without the item it produced.
            assert item["encrypted_content"] and isinstance(item["summary"], list)
            assert items[position + 1]["type"] in ("message", "function_call"), case
        else:
            assert kind == "message" and item["content"], case
            for part in item["content"]:
                expected = "output_text" if item["role"] == "assistant" else "input_"
                assert part["type"].startswith(expected), part
    for tool in body.get("tools", ()):
        assert tool["type"] == "function" and VALID_TOOL_NAME.match(tool["name"])
        assert isinstance(tool["strict"], bool) and tool["parameters"].get("type") == "object"
    if "tool_choice" in body or "parallel_tool_calls" in body:
        assert body.get("tools"), case
    assert len(body.get("safety_identifier", "")) <= 64
    text = json.dumps(body)
    assert "cache_control" not in text and "x-anthropic-billing-header" not in text


def test_dropped_fields_are_reported() -> None:
    def dropped(case: str) -> list[str]:
        path = REQUESTS / f"{case}.anthropic.json"
        return _translate(path.read_bytes(), _options(case)).dropped

    assert dropped("system_metadata_sampling") == [
        "system billing header",
        "temperature (not accepted by gpt-5)",
        "top_p (not accepted by gpt-5)",
        "top_k",
        "stop_sequences (the Responses API has no stop sequences)",
    ]
    assert dropped("gpt4o_sampling_kept_thinking_dropped") == ["reasoning (not accepted by gpt-4o)"]
    assert dropped("thinking_carried_back") == [
        "assistant thinking block (not from this upstream)",
        "assistant thinking block (not from this upstream)",
        "assistant thinking block (not from this upstream)",
        "assistant thinking block with nothing after it",
    ]
    assert "strict mode for tool set_env (an object with open properties)" in dropped(
        "structured_output_and_strict_tools"
    )
    assert dropped("tool_reference_and_choice_none") == [
        "context_management",
        "service_tier",
        "unknown field speed",
    ]


# -- JSON replies ----------------------------------------------------------------------------


def _reply(case: str) -> dict[str, Any]:
    return translate_reply(
        _load(REPLIES / f"{case}.responses.json"), _context(REPLIES, case), scope=SCOPE
    )


@pytest.mark.parametrize("case", REPLY_CASES)
def test_reply_golden(case: str) -> None:
    message = _reply(case)
    expected = REPLIES / f"{case}.anthropic.json"
    if UPDATE:
        _dump(expected, message)
    assert message == _load(expected)
    _check_message(message)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            {"code": "rate_limit_exceeded", "message": "Please try again in 11.054s."},
            429,
            "rate_limit_error",
        ),
        ({"code": "server_error", "message": "The model failed."}, 500, "api_error"),
        (
            {"code": "invalid_prompt", "message": "Invalid prompt: flagged."},
            400,
            "invalid_request_error",
        ),
        ({"code": "invalid_image_url", "message": "Bad image."}, 400, "invalid_request_error"),
        ({"code": "ERR_SOMETHING", "message": "Something went wrong"}, 500, "api_error"),
        (
            {"code": "ERR_X", "message": "The engine is currently overloaded"},
            529,
            "overloaded_error",
        ),
        (None, 500, "api_error"),
    ],
)
def test_failed_reply_is_an_anthropic_error(error: Any, status: int, kind: str) -> None:
    body = {"id": "resp_f", "object": "response", "status": "failed", "error": error, "output": []}
    ctx = _context(REPLIES, "none")
    with pytest.raises(UpstreamError) as raised:
        translate_reply(body, ctx, scope=SCOPE)
    assert (raised.value.status, raised.value.type) == (status, kind)
    events = _stream(_sse([{"type": "response.failed", "response": body}]), ctx)
    assert events[-1] == raised.value.event()


def test_rate_limit_wait_becomes_retry_after() -> None:
    body = {
        "status": "failed",
        "error": {"code": "rate_limit_exceeded", "message": "Please try again in 11.054s."},
    }
    with pytest.raises(UpstreamError) as raised:
        translate_reply(body, _context(REPLIES, "none"))
    assert raised.value.headers == {"retry-after": "12"}


def test_context_overflow_reads_as_prompt_too_long() -> None:
    error = {
        "code": "context_length_exceeded",
        "message": "Your input exceeds the context window of this model: maximum context length "
        "is 400000 tokens. However, your messages resulted in 412345 tokens.",
    }
    with pytest.raises(UpstreamError) as raised:
        translate_reply({"status": "failed", "error": error}, _context(REPLIES, "none"))
    assert raised.value.message == "prompt is too long: 412345 tokens > 400000 maximum"


@pytest.mark.parametrize(
    "body", [[], {"status": "completed"}, {"status": "in_progress", "output": []}]
)
def test_a_reply_that_is_not_one_is_a_502(body: Any) -> None:
    with pytest.raises(UpstreamError) as raised:
        translate_reply(body, _context(REPLIES, "none"))
    assert (raised.value.status, raised.value.type) == (502, "api_error")


# -- streams ---------------------------------------------------------------------------------


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_golden(case: str) -> None:
    body = (STREAMS / f"{case}.responses.sse").read_bytes()
    out = _wire(_stream(body, _context(STREAMS, case)))
    golden = STREAMS / f"{case}.anthropic.sse"
    if UPDATE:
        golden.write_bytes(out)
    assert out == golden.read_bytes()


@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_keeps_the_protocol(case: str) -> None:
    events = _stream((STREAMS / f"{case}.responses.sse").read_bytes(), _context(STREAMS, case))
    assert check_stream(events) == []
    assert check_wire(_wire(events)) == []
    assert (events[-1]["type"] == "error") == (case in FAILING)


@pytest.mark.parametrize("case", STREAM_CASES)
def test_every_split_gives_the_same_output(case: str) -> None:
    """Every split point gives the same decoded events (so the same translation); one-byte
    pieces through the translator give the golden bytes, each output checked."""
    body = (STREAMS / f"{case}.responses.sse").read_bytes()
    whole = _decode([body])
    for cut in range(len(body) + 1):
        assert _decode([body[:cut], body[cut:]]) == whole, f"split at byte {cut}"
    ctx = _context(STREAMS, case)
    events = _stream((body[i : i + 1] for i in range(len(body))), ctx)
    assert check_stream(events) == []
    assert _wire(events) == (STREAMS / f"{case}.anthropic.sse").read_bytes()


@pytest.mark.parametrize("case", sorted(set(STREAM_CASES) - FAILING))
def test_stream_and_reply_agree(case: str) -> None:
    """The blocks, stop reason and usage a stream gives equal the JSON translation of the
    response its terminal event carries."""
    body = (STREAMS / f"{case}.responses.sse").read_bytes()
    ctx = _context(STREAMS, case)
    events = _stream(body, ctx)
    delta = next(e for e in events if e["type"] == "message_delta")
    terminal = _terminal(body)
    assert terminal is not None
    whole = translate_reply(terminal, ctx, delta["usage"]["output_tokens"], scope=SCOPE)
    assert content_blocks(events) == whole["content"]
    assert delta["delta"]["stop_reason"] == whole["stop_reason"]
    assert delta["usage"] == whole["usage"]


@pytest.mark.parametrize("case", STREAM_CASES)
def test_the_python_sdk_accumulates_the_stream(case: str) -> None:
    events = _stream((STREAMS / f"{case}.responses.sse").read_bytes(), _context(STREAMS, case))
    if case in FAILING:
        with pytest.raises(anthropic.APIStatusError) as raised:
            _sdk_final_message(_wire(events))
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["error"] == events[-1]["error"]
        return
    message = _sdk_final_message(_wire(events))
    assert [b.model_dump(exclude_none=True) for b in message.content] == content_blocks(events)


def test_arguments_from_done_events_are_not_doubled() -> None:
    """Deltas, then `.done` and `output_item.done` repeating the whole text: sent once. A
    `.done` that extends the deltas sends the rest; one that contradicts text already sent
    cannot take it back, so what was sent is completed instead."""

    def run(done: str) -> str:
        item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "bash"}
        events = [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "arguments": ""},
            },
            {
                "type": "response.function_call_arguments.delta",
                "output_index": 0,
                "delta": '{"command":"ls',
            },
            {"type": "response.function_call_arguments.done", "output_index": 0, "arguments": done},
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {**item, "arguments": done},
            },
            {"type": "response.completed", "response": {"status": "completed", "output": []}},
        ]
        blocks = content_blocks(_stream(_sse(events), _context(STREAMS, "none")))
        return json.dumps(blocks[0]["input"])

    assert run('{"command":"ls"}') == '{"command": "ls"}'
    assert run('{"command":"ls -la","timeout":5}') == '{"command": "ls -la", "timeout": 5}'
    assert run('{"cmd":"pwd"}') == '{"command": "ls"}'


def test_the_translator_api() -> None:
    ctx = _context(STREAMS, "none")
    translator = ResponsesStreamTranslator(ctx, scope=SCOPE)
    assert [e["type"] for e in translator.start()] == ["message_start", "ping"]
    assert translator.start() == [] and translator.started
    assert translator.feed_data("not json") == [] and translator.feed_data("[1]") == []
    deep = "[" * 200 + "]" * 200
    assert translator.feed_data('{"type":"x","a":' + deep + "}")[-1]["type"] == "error"
    assert translator.done
    assert translator.feed_data('{"type":"response.completed","response":{}}') == []
    assert translator.finish() == [] and translator.fail(UpstreamError("late")) == []
    failed = ResponsesStreamTranslator(ctx).fail(
        UpstreamError("boom", status=529, type="overloaded_error")
    )
    assert [e["type"] for e in failed] == ["message_start", "ping", "error"]
    assert [e["type"] for e in run_sse(ResponsesStreamTranslator(ctx), b"")][-1] == "error"


def test_error_events_flat_and_nested() -> None:
    ctx = _context(STREAMS, "none")
    flat = {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None}
    nested = {
        "type": "error",
        "error": {"type": "server_error", "code": "server_error", "message": "Oops"},
    }
    assert _stream(_sse([flat]), ctx)[-1]["error"] == {
        "type": "rate_limit_error",
        "message": "Slow down",
    }
    assert _stream(_sse([nested]), ctx)[-1]["error"] == {"type": "api_error", "message": "Oops"}


def test_usage_is_reported_in_chat_shape() -> None:
    """The relay's accounting reads `upstream_usage` as it reads every upstream's."""
    translator = ResponsesStreamTranslator(_context(STREAMS, "none"), scope=SCOPE)
    run_sse(translator, (STREAMS / "reasoning_summaries_then_call.responses.sse").read_bytes())
    usage = translator.upstream_usage
    assert usage is not None
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (1200, 96)
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 64}
    assert translator.output_estimate > 0


# -- thinking across two turns ---------------------------------------------------------------


def _second_turn(blocks: list[dict[str, Any]], profile: str = "openai") -> OpenAIRequest:
    request = follow_up(blocks, [], model=MODEL, max_tokens=1000)
    return _translate(request, RequestOptions(model="gpt-5", profile=by_name(profile)))


def test_thinking_is_carried_across_two_turns_streamed() -> None:
    """The stream's thinking block carries the reasoning item in its signature; the next
    request sends it back with the blob from `output_item.done` (not the incomplete one of
    `.added`), before the call it produced, and the call's id is the upstream's again."""
    body = (STREAMS / "reasoning_summaries_then_call.responses.sse").read_bytes()
    blocks = content_blocks(_stream(body, _context(STREAMS, "none")))
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"]
    items = _second_turn(blocks).body["input"]
    assert [i["type"] for i in items] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    reasoning = items[1]
    assert reasoning["id"] == "rs_1b2c3d4e5f607182aa0000000000000000001"
    assert reasoning["encrypted_content"] == "gAAAAABdoneBLOBfinal_0123456789-abcdef=="
    assert reasoning["summary"] == [{"type": "summary_text", "text": blocks[0]["thinking"]}]
    assert items[2]["call_id"] == items[3]["call_id"] == "call_Rk3v9QpW2mXe7LtY0aBcDeF1"


def test_thinking_is_carried_across_two_turns_json() -> None:
    blocks = _reply("reasoning_encrypted_only")["content"]
    assert blocks[0]["type"] == "redacted_thinking"
    items = _second_turn(blocks).body["input"]
    assert items[1] == {
        "type": "reasoning",
        "id": "rs_r3a",
        "summary": [],
        "encrypted_content": "gAAAAABr3ONLY==",
    }
    assert items[2]["type"] == "function_call"


def test_clear_reasoning_goes_back_as_reasoning_text() -> None:
    blocks = _reply("incomplete_reasoning_only")["content"] + [{"type": "text", "text": "ok"}]
    item = _second_turn(blocks).body["input"][1]
    assert item["content"] == [{"type": "reasoning_text", "text": blocks[0]["thinking"]}]
    assert item["encrypted_content"] == "8c4f0b52-3d9a-4e1f-9b7c-2a6d5e8f1c30-0"


def test_reasoning_never_goes_to_another_upstream() -> None:
    blocks = _reply("reasoning_summaries_encrypted_then_text")["content"]
    translated = _second_turn(blocks, profile="azure")
    assert [i["type"] for i in translated.body["input"]] == ["message", "message"]
    assert translated.dropped == ["assistant thinking block (not from this upstream)"]


def test_carrier_rejects_what_it_did_not_make() -> None:
    signature = carrier.pack("openai", "rs_1", "blob.with.dots")
    assert carrier.unpack(signature, "openai") == carrier.Reasoning("rs_1", "blob.with.dots")
    assert carrier.unpack(signature, "azure") is None
    for other in ("", "EqQBCkgIARAB", "cb1.0123", carrier.PREFIX + "x.s.y", signature[:24]):
        assert carrier.unpack(other, "openai") is None


# -- the shared captures -----------------------------------------------------------------------

CAPTURED_STREAMS = sorted(FIXTURES.glob("*.sse"))
CAPTURED_REPLIES = sorted(
    p for p in FIXTURES.glob("*.json") if not p.name.endswith(".request.json")
)
CAPTURED_REQUESTS = sorted(FIXTURES.glob("*.request.json"))


def _captures(paths: list[Path]) -> list[Any]:
    skip = pytest.mark.skip(reason=f"no captures in {FIXTURES}")
    return paths or [pytest.param(None, marks=skip)]


@pytest.mark.parametrize(
    "capture", _captures(CAPTURED_STREAMS), ids=lambda p: getattr(p, "stem", "none")
)
def test_captured_streams(capture: Path) -> None:
    body = capture.read_bytes()
    ctx = _context(STREAMS, "none")
    events = _stream(body, ctx)
    assert check_stream(events) == [] and check_wire(_wire(events)) == []
    assert _stream((body[i : i + 1] for i in range(len(body))), ctx) == events
    terminal = _terminal(body)
    if terminal is None:
        assert events[-1]["type"] == "error"
        return
    delta = next(e for e in events if e["type"] == "message_delta")
    whole = translate_reply(terminal, ctx, delta["usage"]["output_tokens"], scope=SCOPE)
    assert _comparable(content_blocks(events)) == _comparable(whole["content"])
    assert delta["delta"]["stop_reason"] == whole["stop_reason"]
    message = _sdk_final_message(_wire(events))
    assert [b.type for b in message.content] == [b["type"] for b in whole["content"]]


@pytest.mark.parametrize(
    "capture", _captures(CAPTURED_REPLIES), ids=lambda p: getattr(p, "stem", "none")
)
def test_captured_replies_round_trip(capture: Path) -> None:
    """Each captured reply translates to a valid message, and that message sent back as
    history gives the upstream its own call ids, names and reasoning items again."""
    reply = _load(capture)
    message = translate_reply(reply, _context(STREAMS, "none"), scope=SCOPE)
    _check_message(message)
    items = _second_turn(message["content"]).body["input"]
    sent = [(i["call_id"], i["name"]) for i in items if i["type"] == "function_call"]
    calls = [o for o in reply["output"] if o["type"] == "function_call"]
    assert sent == [(c["call_id"], c["name"]) for c in calls]
    for block in message["content"]:
        if block["type"] == "tool_use":
            assert tool_id_to_upstream(block["id"]) in {c["call_id"] for c in calls}
    carried = [(i["id"], i["encrypted_content"]) for i in items if i["type"] == "reasoning"]
    expected = [
        (o["id"], o["encrypted_content"])
        for o in reply["output"]
        if o["type"] == "reasoning" and o.get("encrypted_content")
    ]
    assert carried == expected


def _as_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic request a captured Responses request stands for (the subset they use)."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": role, "content": [block]})

    for item in body["input"]:
        kind = item.get("type", "message")
        if kind == "message" and item["role"] in ("system", "developer"):
            system.append(item["content"])
        elif kind == "message":
            for part in item["content"]:
                add(item["role"], {"type": "text", "text": part["text"]})
        elif kind == "function_call":
            block = {"type": "tool_use", "id": item["call_id"], "name": item["name"]}
            add("assistant", {**block, "input": json.loads(item["arguments"])})
        else:
            add(
                "user",
                {"type": "tool_result", "tool_use_id": item["call_id"], "content": item["output"]},
            )
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": body.get("max_output_tokens", 4096),
        "system": "\n\n".join(system),
        "messages": messages,
        "stream": body.get("stream", False),
    }
    tools = body.get("tools", ())
    if tools:
        request["tools"] = [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            if t["type"] == "function"
            else {"type": "web_search_20250305", "name": "web_search"}  # the upstream's search
            for t in tools
        ]
        request["tool_choice"] = {"type": body.get("tool_choice", "auto")}
    if "reasoning" in body:
        request["thinking"] = {"type": "enabled", "budget_tokens": 10000}
    fmt = body.get("text", {}).get("format")
    if fmt:
        request["output_config"] = {"format": {"type": "json_schema", "schema": fmt["schema"]}}
    return request


@pytest.mark.parametrize(
    "capture", _captures(CAPTURED_REQUESTS), ids=lambda p: getattr(p, "stem", "none")
)
def test_captured_requests_are_what_we_send(capture: Path) -> None:
    """A request the real API accepted, said in Anthropic terms and translated back, gives the
    same items, tools and options (plus what a stateless bridge always adds)."""
    captured = _load(capture)["body"]
    # A web search tool goes as the Responses API's own (`backend = "upstream"`).
    options = replace(_options(), native_web_search=True)
    ours = _translate(_as_anthropic(captured), options).body
    assert ours.get("instructions") == next(
        (i["content"] for i in captured["input"] if i.get("role") in ("system", "developer")), None
    )

    def shape(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (i.get("type", "message"), i.get("role"), i.get("call_id"), i.get("output"))
            for i in items
            if i.get("role") not in ("system", "developer")
        ]

    assert shape(ours["input"]) == [
        ("message", *s[1:]) if s[0] == "message" else s for s in shape(captured["input"])
    ]
    for key in ("tools", "tool_choice", "stream"):
        assert ours.get(key) == captured.get(key), key
    assert ours["max_output_tokens"] == captured.get("max_output_tokens", 4096)
    if "reasoning" in captured:
        assert ours["reasoning"] == captured["reasoning"]
        assert ours["include"] == captured["include"]
    if "text" in captured:
        assert ours["text"]["format"]["schema"] == captured["text"]["format"]["schema"]


# -- where the dialect is served ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "profile", "url"),
    [
        ("https://api.openai.com/v1", "openai", "https://api.openai.com/v1/responses"),
        ("http://localhost:11434/v1/", "ollama", "http://localhost:11434/v1/responses"),
        (
            "https://r.openai.azure.com/openai/v1",
            "azure",
            "https://r.openai.azure.com/openai/v1/responses",
        ),
        ("https://r.openai.azure.com", "azure", "https://r.openai.azure.com/openai/v1/responses"),
        (
            "https://r.openai.azure.com/openai",
            "azure",
            "https://r.openai.azure.com/openai/v1/responses",
        ),
        (
            "https://r.openai.azure.com/openai/deployments/gpt5",
            "azure",
            "https://r.openai.azure.com/openai/responses?api-version=2025-04-01-preview",
        ),
        (
            "https://r.openai.azure.com/openai/deployments/gpt5?api-version=2025-05-01-preview",
            "azure",
            "https://r.openai.azure.com/openai/responses?api-version=2025-05-01-preview",
        ),
    ],
)
def test_responses_url(base_url: str, profile: str, url: str) -> None:
    assert responses_url(base_url, profile) == url


def test_responses_only_models_and_deployments() -> None:
    for model in (
        "gpt-5-codex",
        "gpt-5.1-codex-max",
        "o3-pro-2025-06-10",
        "gpt-5-pro",
        "codex-mini-latest",
    ):
        assert default_dialect("openai", model) == "responses", model
    for model in ("gpt-5", "gpt-4o", "o3", "gpt-5.1"):
        assert default_dialect("openai", model) == "openai", model
    assert default_dialect("generic", "gpt-5-codex") == "openai"
    assert azure_deployment("https://r.openai.azure.com/openai/deployments/gpt5?x=1") == "gpt5"
    assert azure_deployment("https://r.openai.azure.com/openai/v1") is None
