"""Malformed client input (issue 13): a 400 `invalid_request_error` naming the field, before
anything is paid for; and 5xx answers that say `connection: close`.

End to end over real loopback servers: claude-bridge on uvicorn in front of the scripted
upstream, which must see no request at all (it would answer 200 if it did). The official SDK
sends what it can; it cannot encode a lone surrogate (httpx writes UTF-8 strictly), so those
go as raw bytes, the way a JavaScript client such as Claude Code writes them (`JSON.stringify`
escapes a lone surrogate as `\\ud800`). The rules themselves are checked on `parse_body`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import pytest
from conftest import CLIENT_KEY, CLIENT_TIMEOUT, Bridge
from upstream import FakeUpstream, JSONReply, completion, error_body

from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models import anthropic as a
from claude_bridge.proxy.pipeline import Pipeline

MODEL = "claude-sonnet-4-6"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
HI: dict[str, Any] = {"role": "user", "content": "Hi"}
HELLO: dict[str, Any] = {"role": "assistant", "content": "Hello"}


def image(data: str = PNG, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def tool_use(tool_id: str, name: str = "Bash") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {"command": "ls"}}


def tool_result(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "ok"}


def called(*tool_ids: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [tool_use(i) for i in tool_ids]}


def answered(*tool_ids: str) -> dict[str, Any]:
    return {"role": "user", "content": [tool_result(i) for i in tool_ids]}


def unpaired(where: str, ids: str) -> str:
    """Anthropic's own wording [ISSUE:anthropics/claude-code#13460]."""
    return (
        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {ids}. Each "
        "`tool_result` block must have a corresponding `tool_use` block in the previous message."
    )


MEDIA_TYPES = "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"

# What the SDK can send: (messages, the error message).
SDK_CASES: dict[str, tuple[list[dict[str, Any]], str]] = {
    "no messages": ([], "messages: at least one message is required"),
    "bmp image": (
        [{"role": "user", "content": [image(media_type="image/bmp")]}],
        f"messages.0.content.0.source.media_type: {MEDIA_TYPES}",
    ),
    "data URL as base64": (
        [HI, HELLO, {"role": "user", "content": [image("data:image/png;base64," + PNG)]}],
        "messages.2.content.0.source.data: invalid base64 data",
    ),
    "bad base64 in a tool result": (
        [
            HI,
            called("toolu_1"),
            {
                "role": "user",
                "content": [{**tool_result("toolu_1"), "content": [image(PNG[:-1] + "*")]}],
            },
        ],
        "messages.2.content.0.content.0.source.data: invalid base64 data",
    ),
    "empty image": (
        [{"role": "user", "content": [image("")]}],
        "messages.0.content.0.source.data: image cannot be empty",
    ),
    "tool result first": ([answered("toolu_1")], unpaired("messages.0.content.0", "toolu_1")),
    "tool result for an older turn": (
        [HI, called("toolu_1"), answered("toolu_1"), called("toolu_2"), answered("toolu_1")],
        unpaired("messages.4.content.0", "toolu_1"),
    ),
}


@pytest.mark.parametrize(("messages", "message"), SDK_CASES.values(), ids=SDK_CASES.keys())
def test_sdk_requests_refused_before_the_upstream(
    client: anthropic.Anthropic,
    upstream: FakeUpstream,
    messages: list[dict[str, Any]],
    message: str,
) -> None:
    upstream.always(JSONReply(completion("paid for")))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    body: Any = caught.value.body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == message
    assert upstream.requests == []


def body_with(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [HI], **fields}


SURROGATE = "\ud800"
CALC = {"name": "calc", "input_schema": {"type": "object"}}
# Lone surrogates wherever clients put strings: (body, the field named).
SURROGATE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "model": (body_with(model=SURROGATE), "model"),
    "model, streamed": (body_with(model="claude" + SURROGATE, stream=True), "model"),
    "history tool_use name": (
        body_with(messages=[HI, {"role": "assistant", "content": [tool_use("t", SURROGATE)]}]),
        "messages.1.content.0.name",
    ),
    "tool_choice name": (
        body_with(tools=[CALC], tool_choice={"type": "tool", "name": SURROGATE}),
        "tool_choice.name",
    ),
    "system text": (body_with(system=[{"type": "text", "text": "a" + SURROGATE}]), "system.0.text"),
    "tool input": (
        body_with(
            messages=[
                HI,
                {
                    "role": "assistant",
                    "content": [{**tool_use("t"), "input": {"a": ["x" + SURROGATE]}}],
                },
            ]
        ),
        "messages.1.content.0.input.a.0",
    ),
    "metadata": (body_with(metadata={"user_id": SURROGATE}), "metadata.user_id"),
    "a schema key": (
        body_with(tools=[{**CALC, "input_schema": {"properties": {SURROGATE: {}}}}]),
        "tools.0.input_schema.properties",
    ),
    "stop sequence, low half": (body_with(stop_sequences=["ok", "\udc00"]), "stop_sequences.1"),
}


def js_json(body: dict[str, Any]) -> bytes:
    """What `JSON.stringify` sends: UTF-8, with lone surrogates escaped."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


def post_raw(bridge: Bridge, raw: bytes, path: str = "/v1/messages") -> httpx.Response:
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    return httpx.post(bridge.url + path, content=raw, headers=headers, timeout=CLIENT_TIMEOUT)


def assert_refused(response: httpx.Response, message_start: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message_start), error["message"]
    return str(error["message"])


@pytest.mark.parametrize(("body", "field"), SURROGATE_CASES.values(), ids=SURROGATE_CASES.keys())
def test_lone_surrogates_anywhere_are_a_400_naming_the_field(
    bridge: Bridge, upstream: FakeUpstream, body: dict[str, Any], field: str
) -> None:
    upstream.always(JSONReply(completion("paid for")))
    raw = js_json(body)
    assert b"\\ud" in raw or b"\\udc" in raw  # really sent as an escape
    message = assert_refused(post_raw(bridge, raw), f"{field}: ")
    assert "lone UTF-16 surrogate" in message
    assert upstream.requests == []


def test_surrogates_encoded_as_utf8_bytes_are_refused_too(
    bridge: Bridge, upstream: FakeUpstream
) -> None:
    # ED A0 80 is U+D800 written as UTF-8: invalid UTF-8 that Python's JSON reader lets through.
    upstream.always(JSONReply(completion("paid for")))
    raw = js_json(
        body_with(messages=[{"role": "user", "content": [{"type": "text", "text": "A"}]}])
    )
    raw = raw.replace(b'"text":"A"', b'"text":"A\xed\xa0\x80"')
    assert b"\xed" in raw
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        assert_refused(post_raw(bridge, raw, path), "messages.0.content.0.text: ")
    assert upstream.requests == []


def test_real_text_passes(
    client: anthropic.Anthropic, bridge: Bridge, upstream: FakeUpstream
) -> None:
    """Pairs (escaped or not), Hangul (ED 80-9F lead bytes), emoji: all fine."""
    upstream.always(JSONReply(completion("ok")))
    text = "한국어 😀 ✓ — done"
    escaped = json.dumps(body_with(messages=[{"role": "user", "content": text}])).encode()
    assert b"\\ud83d\\ude00" in escaped
    assert post_raw(bridge, escaped).status_code == 200
    reply = client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}]
    )
    assert reply.content
    assert [r.json["messages"][-1]["content"] for r in upstream.requests] == [text, text]


# -- a 5xx ends the connection, and says so ------------------------------------------------


def test_the_next_request_after_a_5xx_succeeds_on_a_one_connection_client(
    bridge: Bridge, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug of ours")

    upstream.reply(JSONReply(error_body("down for maintenance", "api_error"), status=503))
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"x-api-key": CLIENT_KEY, "content-type": "application/json"}
    body = json.dumps(body_with()).encode()
    with httpx.Client(base_url=bridge.url, limits=limits, headers=headers) as keep_alive:
        assert keep_alive.get("/").status_code == 200  # the one connection is open
        mapped = keep_alive.post("/v1/messages", content=body)  # the upstream's 503
        assert mapped.status_code >= 500 and mapped.headers["connection"] == "close"
        assert keep_alive.get("/").status_code == 200
        monkeypatch.setattr(Pipeline, "prepare", bug)
        crashed = keep_alive.post("/v1/messages", content=body)
        assert crashed.status_code == 500
        assert crashed.json()["error"] == {"type": "api_error", "message": "internal proxy error"}
        assert crashed.headers["connection"] == "close"
        assert keep_alive.get("/").status_code == 200


def test_a_4xx_keeps_the_connection(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.url, headers={"x-api-key": CLIENT_KEY}) as keep_alive:
        refused = keep_alive.post("/v1/messages", json=body_with(messages=[]))
        assert refused.status_code == 400 and "connection" not in refused.headers


# -- the rules, on parse_body ---------------------------------------------------------------


def parse(messages: list[dict[str, Any]]) -> a.MessagesRequest:
    return parse_body(json.dumps(body_with(messages=messages)).encode(), a.MessagesRequest)


def refusal(messages: list[dict[str, Any]]) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(messages)
    return caught.value.message


SYSTEM = {"role": "system", "content": "<env>cwd: /</env>"}
PAIRED: dict[str, list[dict[str, Any]]] = {
    "parallel calls": [HI, called("a", "b"), answered("b", "a")],
    "results then text, as Claude Code sends them": [
        HI,
        called("a"),
        {"role": "user", "content": [tool_result("a"), {"type": "text", "text": "go on"}]},
    ],
    "one assistant turn over two messages": [
        HI,
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
        called("a"),
        called("b"),
        answered("a", "b"),
    ],
    "results over two user messages": [HI, called("a", "b"), answered("a"), answered("b")],
    "a system message in between": [HI, SYSTEM, called("a"), SYSTEM, answered("a")],
    "a long tool loop": [HI, called("a"), answered("a"), called("b"), answered("b"), HELLO],
    "a call not answered yet (prefill)": [HI, called("a")],
}


@pytest.mark.parametrize("messages", PAIRED.values(), ids=PAIRED.keys())
def test_paired_tool_results_pass(messages: list[dict[str, Any]]) -> None:
    parse(messages)


def test_unpaired_results_are_listed_with_the_first_ones_place() -> None:
    messages = [HI, called("a"), {"role": "user", "content": [{"type": "text", "text": "x"}]}]
    messages[2]["content"] += [tool_result("a"), tool_result("b"), tool_result("c")]
    # The user message after the first one is the same turn: "a" is answered there.
    assert refusal(messages) == unpaired("messages.2.content.2", "b, c")


def test_count_tokens_does_not_check_pairing() -> None:
    # Counted locally: nothing is paid for, and a client may count a fragment of history.
    body = json.dumps({"model": MODEL, "messages": [answered("toolu_1")]}).encode()
    assert parse_body(body, a.CountTokensRequest).messages


@pytest.mark.parametrize(
    "data", ["QQ==", "QUI=", "QUJD", PNG, base64.b64encode(bytes(range(256)) * 40).decode()]
)
@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png", "image/gif", "image/webp"])
def test_valid_base64_images_pass(data: str, media_type: str) -> None:
    parse([{"role": "user", "content": [image(data, media_type)]}])


@pytest.mark.parametrize(
    "data",
    ["QQ", "QQ=", "Q===", "=QUJ", "QUJD\n", "QU JD", "QUJD-_==", "QUJDé===", "[elided base64]"],
)
def test_invalid_base64_is_refused(data: str) -> None:
    message = refusal([{"role": "user", "content": [image(data)]}])
    assert message == "messages.0.content.0.source.data: invalid base64 data"
    pdf = {"type": "base64", "media_type": "application/pdf", "data": data}
    message = refusal([{"role": "user", "content": [{"type": "document", "source": pdf}]}])
    assert message == "messages.0.content.0.source.data: invalid base64 data"


def test_image_urls_and_files_are_not_base64_checked() -> None:
    sources = [
        {"type": "url", "url": "https://example.com/a.png"},
        {"type": "file", "file_id": "f"},
    ]
    parse([{"role": "user", "content": [{"type": "image", "source": s} for s in sources]}])
