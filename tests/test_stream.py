"""StreamTranslator: golden pairs, every split of every case, protocol checks, the real
Python SDK as client, the shared captures, and agreement with the non-streaming translation.

Golden pairs live in tests/data/stream: `<case>.openai.sse` (upstream) and
`<case>.anthropic.sse` (what the client gets). `UPDATE_GOLDEN=1 pytest tests/test_stream.py`
rewrites the second kind; read the diff before committing it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from shapes import content_blocks

from claude_bridge.proxy.core.checker import check_stream, check_wire
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.errors import UpstreamError
from claude_bridge.proxy.core.ids import ToolNames
from claude_bridge.proxy.core.jsonfix import RAW_ARGUMENTS_KEY, parse_arguments
from claude_bridge.proxy.core.reasoning import reasoning_text
from claude_bridge.proxy.core.response import translate_response
from claude_bridge.proxy.core.sse import SSEDecoder, SSEEvent, encode_event
from claude_bridge.proxy.core.stream import StreamTranslator, translate_sse
from claude_bridge.proxy.models.openai import ChatCompletion

DATA = Path(__file__).parent / "data" / "stream"
CASES = sorted(p.name.removesuffix(".openai.sse") for p in DATA.glob("*.openai.sse"))
# Cases whose upstream broke: they must end in an `error` event, never in a clean stop.
FAILING = {
    "finish_reason_error_only",
    "openai_cut_without_finish",
    "openai_midstream_error",
    "openrouter_finish_reason_error",
    "vllm_object_error",
}
LONG_TOOL = "mcp__github__create_or_update_file_contents_in_a_repository_branch"
CTX = ReplyContext(
    model="claude-sonnet-4-5",
    message_id="msg_01TESTSTREAM000000000000",
    tool_names=ToolNames([LONG_TOOL, "read_file", "bash"]),
    stop_sequences=("</answer>",),
    input_count=42,
)


def _upstream(case: str) -> bytes:
    return (DATA / f"{case}.openai.sse").read_bytes()


def _wire(events: list[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(event) for event in events)


def _decode(pieces: Iterable[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.decode(piece)]
    return events + decoder.flush()


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20
    assert FAILING.issubset(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    out = _wire(translate_sse(_upstream(case), CTX))
    golden = DATA / f"{case}.anthropic.sse"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(out)
    assert out == golden.read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_output_keeps_the_protocol(case: str) -> None:
    events = translate_sse(_upstream(case), CTX)
    assert check_stream(events) == []
    assert check_wire(_wire(events)) == []
    assert (events[-1]["type"] == "error") == (case in FAILING)


@pytest.mark.parametrize("case", CASES)
def test_every_split_gives_the_same_events(case: str) -> None:
    """The translator only sees decoded events, so equal events at every split point mean
    equal output; comparing events keeps this test fast enough to try every byte."""
    body = _upstream(case)
    whole = _decode([body])
    for cut in range(len(body) + 1):
        assert _decode([body[:cut], body[cut:]]) == whole, f"split at byte {cut}"


@pytest.mark.parametrize("case", CASES)
def test_one_byte_pieces_give_the_golden_output(case: str) -> None:
    body = _upstream(case)
    pieces = (body[i : i + 1] for i in range(len(body)))
    assert _wire(translate_sse(pieces, CTX)) == (DATA / f"{case}.anthropic.sse").read_bytes()


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("case", CASES)
def test_line_endings_do_not_matter(case: str, ending: bytes) -> None:
    body = _upstream(case).replace(b"\n", ending)
    assert _wire(translate_sse(body, CTX)) == (DATA / f"{case}.anthropic.sse").read_bytes()


# -- the real anthropic SDK as the client ----------------------------------------------------


def _sdk_final_message(body: bytes) -> anthropic.types.Message:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://bridge.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    with client.messages.stream(
        # Any name: the SDK warns (an error here) on the ones it knows are deprecated.
        model="claude-bridge-test",
        max_tokens=1024,
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("case", CASES)
def test_the_python_sdk_accumulates_the_output(case: str) -> None:
    body = (DATA / f"{case}.anthropic.sse").read_bytes()
    events = translate_sse(_upstream(case), CTX)
    if case in FAILING:
        with pytest.raises(anthropic.APIStatusError) as raised:
            _sdk_final_message(body)
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["error"] == events[-1]["error"]
        return
    message = _sdk_final_message(body)
    assert [block.model_dump(exclude_none=True) for block in message.content] == content_blocks(
        events
    )
    delta = next(e for e in events if e["type"] == "message_delta")
    assert message.stop_reason == delta["delta"]["stop_reason"]
    assert message.stop_sequence == delta["delta"]["stop_sequence"]
    assert message.usage.input_tokens == delta["usage"]["input_tokens"]
    assert message.usage.output_tokens == delta["usage"]["output_tokens"]
    assert message.usage.cache_read_input_tokens == delta["usage"]["cache_read_input_tokens"]


# -- the same reply, streamed or not, says the same thing ----------------------------------


def _accumulate(body: bytes) -> ChatCompletion:
    """The non-streaming completion equivalent to an upstream stream whose tool fragments all
    carry an index: what openai-python's accumulator builds."""
    content, refusal, reasoning = "", "", ""
    source: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    choice: dict[str, Any] = {}
    usage = timings = None
    details: list[Any] = []  # encrypted ones only: the text is in `reasoning`
    for event in _decode([body]):
        if event.data == "[DONE]":
            break
        if not event.data.startswith("{"):
            continue  # a keep-alive
        chunk = json.loads(event.data)
        if chunk.get("usage"):
            usage, timings = chunk["usage"], chunk.get("timings")
        if not chunk.get("choices"):
            continue
        upstream_choice = chunk["choices"][0]
        delta = upstream_choice.get("delta") or {}
        text, source = reasoning_text(delta, source)
        reasoning += text
        content += delta.get("content") or ""
        refusal += delta.get("refusal") or ""
        details += [
            d for d in delta.get("reasoning_details") or () if d["type"] == "reasoning.encrypted"
        ]
        for fragment in delta.get("tool_calls") or ():
            call = calls.setdefault(fragment["index"], {"id": "", "name": "", "arguments": ""})
            function = fragment.get("function") or {}
            call["id"] = call["id"] or fragment.get("id") or ""
            call["name"] = call["name"] or function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""
            call.setdefault("extra_content", fragment.get("extra_content"))
        for key in ("finish_reason", "native_finish_reason", "stop_reason"):
            choice[key] = upstream_choice.get(key) or choice.get(key)
    message = {
        "role": "assistant",
        "content": content or None,
        "refusal": refusal or None,
        "reasoning_content": reasoning or None,
        "reasoning_details": details or None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
                **({"extra_content": c["extra_content"]} if c.get("extra_content") else {}),
            }
            for _, c in sorted(calls.items())
        ]
        or None,
    }
    return ChatCompletion.model_validate(
        {
            "choices": [{"index": 0, "message": message, **choice}],
            "usage": usage,
            **({"timings": timings} if timings else {}),
        }
    )


def _indexed(case: str) -> bool:
    fragments = [
        fragment
        for event in _decode([_upstream(case)])
        if event.data.startswith("{")
        for choice in json.loads(event.data).get("choices") or ()
        for fragment in (choice.get("delta") or {}).get("tool_calls") or ()
    ]
    ids: dict[int, str] = {}
    for fragment in fragments:
        if "index" not in fragment:
            return False
        if ids.setdefault(fragment["index"], fragment.get("id") or "") != (
            fragment.get("id") or ids[fragment["index"]]
        ):
            return False  # an index reused for another call: the simple accumulator merges them
    return True


def _unrepairable(tool_input: dict[str, Any]) -> Any:
    """Arguments no repair can use come as `_raw_arguments`; streamed, the fields sent before
    the text broke precede it and cannot be taken back. Compare the raw text then."""
    return tool_input.get(RAW_ARGUMENTS_KEY, tool_input)


@pytest.mark.parametrize("case", [c for c in CASES if c not in FAILING and _indexed(c)])
def test_streaming_and_non_streaming_agree(case: str) -> None:
    events = translate_sse(_upstream(case), CTX)
    streamed = content_blocks(events)
    delta = next(e for e in events if e["type"] == "message_delta")
    completion = _accumulate(_upstream(case))
    whole = translate_response(completion, CTX, output_estimate=delta["usage"]["output_tokens"])

    def joined(blocks: list[dict[str, Any]], kind: str, field: str) -> str:
        return "".join(b[field] for b in blocks if b["type"] == kind)

    def tools(blocks: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
        return [
            (b["id"], b["name"], _unrepairable(b["input"]))
            for b in blocks
            if b["type"] == "tool_use"
        ]

    assert joined(streamed, "text", "text") == joined(whole["content"], "text", "text")
    assert joined(streamed, "thinking", "thinking") == joined(
        whole["content"], "thinking", "thinking"
    )
    assert tools(streamed) == tools(whole["content"])
    assert delta["delta"]["stop_reason"] == whole["stop_reason"]
    assert delta["delta"]["stop_sequence"] == whole["stop_sequence"]
    assert delta["usage"] == whole["usage"]


# -- the shared captures, when present ------------------------------------------------------

FIXTURES = Path(
    os.environ.get("CLAUDE_BRIDGE_FIXTURES")
    or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)
CAPTURES = sorted((FIXTURES / "openai_compat").glob("*.sse"))


def _structure(events: list[dict[str, Any]]) -> tuple[list[str], str | None]:
    types = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    stops = [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"]
    return types, stops[-1] if stops else None


@pytest.mark.parametrize(
    "capture",
    CAPTURES or [pytest.param(None, marks=pytest.mark.skip(reason=f"no captures in {FIXTURES}"))],
    ids=lambda p: p.stem if isinstance(p, Path) else "none",
)
def test_captures(capture: Path) -> None:
    body = capture.read_bytes()
    events = translate_sse(body, CTX)
    assert check_stream(events) == []
    assert check_wire(_wire(events)) == []
    assert translate_sse((body[i : i + 1] for i in range(len(body))), CTX) == events
    expected = FIXTURES / "expected_translations" / f"SYNTHETIC_from_{capture.name}"
    if expected.exists():
        decoded = _decode([expected.read_bytes()])
        assert _structure(events) == _structure([json.loads(e.data) for e in decoded])
    message = _sdk_final_message(_wire(events))
    assert [block.type for block in message.content] == _structure(events)[0]


# -- behaviour of the state machine through its API -----------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def _tool(index: int, arguments: str, **fields: Any) -> dict[str, Any]:
    return _chunk(
        {"tool_calls": [{"index": index, "function": {"arguments": arguments, **fields}}]}
    )


def test_start_comes_once_and_first() -> None:
    translator = StreamTranslator(CTX)
    assert not translator.started
    first = translator.start()
    assert [e["type"] for e in first] == ["message_start", "ping"]
    assert first[0]["message"]["usage"] == {
        "input_tokens": 42,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    assert translator.started
    assert translator.start() == []
    assert [e["type"] for e in translator.feed(_chunk({"content": "x"}))] == [
        "content_block_start",
        "content_block_delta",
    ]


def test_feed_starts_the_stream_when_start_was_not_called() -> None:
    events = StreamTranslator(CTX).feed(_chunk({"role": "assistant", "content": ""}))
    assert [e["type"] for e in events] == ["message_start", "ping"]


def test_nothing_follows_the_end() -> None:
    translator = StreamTranslator(CTX)
    translator.feed(_chunk({"content": "hi"}, "stop"))
    assert [e["type"] for e in translator.feed_data("[DONE]")][-1] == "message_stop"
    assert translator.done
    assert translator.feed(_chunk({"content": "late"})) == []
    assert translator.feed_data("[DONE]") == []
    assert translator.finish() == []
    assert translator.fail(UpstreamError("late")) == []


def test_fail_leaves_only_the_error_event() -> None:
    translator = StreamTranslator(CTX)
    translator.feed(_chunk({"content": "partial"}))
    events = translator.fail(UpstreamError("gone", type="overloaded_error", status=529))
    assert events == [{"type": "error", "error": {"type": "overloaded_error", "message": "gone"}}]
    assert translator.done
    assert translator.finish() == []


def test_fail_before_start_still_opens_the_message() -> None:
    events = StreamTranslator(CTX).fail(UpstreamError("boom"))
    assert [e["type"] for e in events] == ["message_start", "ping", "error"]


def test_an_empty_body_is_a_failure() -> None:
    events = translate_sse(b"", CTX)
    assert [e["type"] for e in events] == ["message_start", "ping", "error"]
    assert events[-1]["error"]["type"] == "api_error"


def test_keep_alive_data_is_ignored() -> None:
    translator = StreamTranslator(CTX)
    translator.start()
    assert translator.feed_data("keep-alive") == []
    assert translator.feed_data("[1, 2]") == []
    assert translator.feed_data("") == []
    assert not translator.done


def test_output_estimate_counts_characters() -> None:
    translator = StreamTranslator(CTX)
    translator.feed(_chunk({"reasoning_content": "abcd"}))
    translator.feed(_chunk({"content": "efgh"}))
    translator.feed(_tool(0, '{"a":1}', name="bash"))
    assert translator.output_estimate == (4 + 4 + 7 + 3) // 4
    end = translator.feed(_chunk({}, "stop")) + translator.finish()
    assert end[-2]["usage"]["output_tokens"] == translator.output_estimate


def _arguments(pieces: list[str], finish: str = "tool_calls") -> tuple[list[str], list[str]]:
    """(input_json_delta texts sent before the block closed, all of them)."""
    translator = StreamTranslator(CTX)
    live: list[str] = []
    first = {"index": 0, "id": "call_1", "function": {"name": "bash", "arguments": ""}}
    for event in translator.feed(_chunk({"tool_calls": [first]})):
        assert event["type"] != "content_block_delta"
    for piece in pieces:
        for event in translator.feed(_tool(0, piece)):
            live.append(event["delta"]["partial_json"])
    end = translator.feed(_chunk({}, finish)) + translator.finish()
    closing = [e["delta"]["partial_json"] for e in end if e["type"] == "content_block_delta"]
    return live, live + closing


SAMPLE = (
    '{"path": "caf\\u00e9/\\"x\\"", "n": -12.5e+3, "flags": [true, false, null], '
    '"nested": {"a": [1, {"b": []}], "c": {}}, "text": "line\\nnext 👋"}'
)


def test_arguments_stream_live_and_end_as_the_object() -> None:
    live, sent = _arguments([SAMPLE[i : i + 3] for i in range(0, len(SAMPLE), 3)])
    assert len(live) > 10
    assert "".join(sent) == SAMPLE


def test_whole_arguments_go_out_in_one_delta() -> None:
    live, sent = _arguments([SAMPLE])
    assert live == []
    assert sent == [SAMPLE]


def _cuts() -> list[Any]:
    known = pytest.mark.xfail(
        strict=True, reason="jsonfix.repair strips trailing whitespace inside a cut string"
    )
    return [
        pytest.param(cut, marks=known) if SAMPLE[:cut].endswith("next ") else cut
        for cut in range(len(SAMPLE) + 1)
    ]


@pytest.mark.parametrize("cut", _cuts())
def test_cut_arguments_are_repaired_like_the_non_streaming_path(cut: int) -> None:
    text = SAMPLE[:cut]
    _, sent = _arguments(list(text), finish="length")
    value = json.loads("".join(sent))
    assert isinstance(value, dict)
    assert value == parse_arguments(text)


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (['{"a": [1, 2, ], ', '"b": 3}'], {"a": [1, 2], "b": 3}),
        (["{}", '{"command": "ls"}'], {"command": "ls"}),
        (['{"a": 1', "} trailing"], {"a": 1, "_raw_arguments": '{"a": 1} trailing'}),
        (['{"a": "x\ny"}'], {"a": "x\ny"}),
        (["  ", ' {"a": 1}  '], {"a": 1}),
        (["[1, 2]"], {"value": [1, 2]}),
        (["not json"], {"_raw_arguments": "not json"}),
        (['{"a": tru', "th}"], {"a": None, "_raw_arguments": '{"a": truth}'}),
        (
            ['{"cmd": "rm -rf /tmp/', "x\\'y\"}"],
            {"cmd": "rm -rf /tmp/x", "_raw_arguments": '{"cmd": "rm -rf /tmp/x\\\'y"}'},
        ),
        ([""], {}),
        (['{"a": "cut after a space '], {"a": "cut after a space "}),
    ],
)
def test_broken_arguments_still_end_as_one_object(pieces: list[str], expected: Any) -> None:
    live, sent = _arguments(pieces)
    assert json.loads("".join(sent)) == expected
    assert "".join(sent).startswith("".join(live))


def test_raw_control_characters_are_sent_escaped() -> None:
    live, sent = _arguments(['{"a": "x\n', "y\t", '"}'])
    assert live == ['{"a": "x\\n', "y\\t"]
    assert "".join(sent) == '{"a": "x\\ny\\t"}'
