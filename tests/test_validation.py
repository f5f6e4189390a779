"""Client bodies -> validated requests, or one `invalid_request_error` naming the bad spot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.validation import MAX_DEPTH, parse_body, parse_object
from claude_bridge.proxy.models import anthropic as a

BASE: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 1024}
HELLO = [{"role": "user", "content": "Hello"}]


def parse(body: dict[str, Any] | bytes, model: type[Any] = a.MessagesRequest) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_body(raw, model)


def error_of(body: dict[str, Any] | bytes, model: type[Any] = a.MessagesRequest) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(body, model)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value.message


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, "messages": [{"role": "user", "content": list(blocks)}]}


TEXT = {"type": "text", "text": "Look:"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (user(TEXT, {"type": "image"}), "messages.0.content.1.source: Field required"),
        (
            user(TEXT, {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}),
            "messages.0.content.1.source.data: Field required",
        ),
        (
            user({"type": "document", "source": {"type": "zip", "data": "x"}}),
            "messages.0.content.0.source.type: unknown type 'zip'",
        ),
        (
            user({"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text"}]}),
            "messages.0.content.0.content.0.text: Field required",
        ),
        (
            user({"type": "search_result", "source": "s", "content": []}),
            "messages.0.content.0.title: Field required",
        ),
        (
            {**BASE, "messages": HELLO, "tools": [{"name": "get_weather"}]},
            "tools.0.input_schema: Field required",
        ),
        (
            {**BASE, "messages": HELLO, "tool_choice": {"type": "tool"}},
            "tool_choice.name: Field required",
        ),
        (
            {**BASE, "messages": HELLO, "thinking": {"type": "enabled"}},
            "thinking.budget_tokens: Field required",
        ),
        ({"model": "claude-sonnet-4-5", "messages": HELLO}, "max_tokens: Field required"),
        ({**BASE, "max_tokens": -1, "messages": HELLO}, "max_tokens: Input should be greater"),
        ({**BASE}, "messages: Field required"),
        ({**BASE, "messages": [{"role": "user"}]}, "messages.0.content: Field required"),
    ],
)
def test_dotted_paths(body: dict[str, Any], message: str) -> None:
    assert error_of(body).startswith(message)


def test_more_errors_are_counted() -> None:
    message = error_of(user({"type": "image"}, {"type": "image"}))
    assert message == "messages.0.content.0.source: Field required (and 1 more)"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"type": "video", "url": "x"}, "messages.0.content.1.type: unknown type 'video'"),
        ({"text": "no type"}, "messages.0.content.1.type: missing `type`"),
    ],
)
def test_unknown_block_type(block: dict[str, Any], message: str) -> None:
    assert error_of(user(TEXT, block)) == message


def test_unknown_tool_choice_and_thinking_types() -> None:
    assert (
        error_of({**BASE, "messages": HELLO, "tool_choice": {"type": "maybe"}})
        == "tool_choice.type: unknown type 'maybe'"
    )
    assert (
        error_of({**BASE, "messages": HELLO, "thinking": {"type": "sometimes"}})
        == "thinking.type: unknown type 'sometimes'"
    )


def test_unknown_role() -> None:
    message = error_of({**BASE, "messages": [{"role": "tool", "content": "42"}]})
    assert message.startswith("messages.0.role: Input should be 'user', 'assistant' or 'system'")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"model": "m",', "request body is not valid JSON: "),
        (b"", "request body is not valid JSON: "),
        (b"\xff\xfe\x00", "request body is not valid JSON: "),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"a string"', "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
        (b"42", "request body must be a JSON object"),
    ],
)
def test_malformed_and_non_object_bodies(raw: bytes, message: str) -> None:
    assert error_of(raw).startswith(message)


def test_long_json_errors_are_shortened() -> None:
    message = error_of(b"[" * 100_000 + b"]" * 100_000)
    assert message.startswith("request body is not valid JSON")
    assert len(message) < 300


def test_deep_nesting_is_refused_before_validation() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(MAX_DEPTH + 5):
        inner["a"] = {}
        inner = inner["a"]
    message = error_of({**BASE, "messages": HELLO, "extra": nested})
    assert message == f"request body nests deeper than {MAX_DEPTH} levels"
    shallow: dict[str, Any] = {}
    inner = shallow
    for _ in range(20):
        inner["a"] = {}
        inner = inner["a"]
    assert parse({**BASE, "messages": HELLO, "extra": shallow}).model_extra["extra"] == shallow


def test_unknown_top_level_fields_are_tolerated() -> None:
    body = {
        **BASE,
        "messages": HELLO,
        "speed": "fast",
        "fallbacks": [{"model": "claude-haiku-4-5"}],
        "brand_new_field_2027": {"anything": [1, 2, 3]},
    }
    request = parse(body)
    assert request.model_extra == {
        "speed": "fast",
        "fallbacks": [{"model": "claude-haiku-4-5"}],
        "brand_new_field_2027": {"anything": [1, 2, 3]},
    }


def test_unknown_fields_inside_blocks_are_tolerated() -> None:
    request = parse(user({"type": "text", "text": "hi", "citations": [], "future": True}))
    block = request.messages[0].content[0]
    assert isinstance(block, a.TextBlock) and block.text == "hi"


def test_role_system_messages_are_accepted() -> None:
    body = {
        **BASE,
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "system", "content": [{"type": "text", "text": "<env>cwd: /</env>"}]},
            {"role": "system", "content": "A plain string works too."},
        ],
    }
    request = parse(body)
    assert [m.role for m in request.messages] == ["user", "system", "system"]
    assert isinstance(request.messages[2].content[0], a.TextBlock)


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "adaptive"},
        {"type": "adaptive", "display": "omitted"},
        {"type": "enabled", "budget_tokens": 2048, "display": "summarized"},
        {"type": "disabled"},
    ],
)
def test_thinking_variants_are_accepted(thinking: dict[str, Any]) -> None:
    body = {**BASE, "messages": HELLO, "thinking": thinking, "output_config": {"effort": "xhigh"}}
    request = parse(body)
    assert request.thinking is not None and request.thinking.type == thinking["type"]
    assert request.output_config is not None and request.output_config.effort == "xhigh"


def test_strings_become_text_blocks() -> None:
    request = parse({**BASE, "system": "Be brief.", "messages": HELLO})
    assert request.system == [a.SystemText(text="Be brief.")]
    assert request.messages[0].content == [a.TextBlock(text="Hello")]
    called = {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}
    result = parse(
        {
            **BASE,
            "messages": [
                *HELLO,
                {"role": "assistant", "content": [called]},
                {"role": "user", "content": [answer]},
            ],
        }
    )
    tool_result = result.messages[2].content[0]
    assert isinstance(tool_result, a.ToolResultBlock)
    assert tool_result.content == [a.TextBlock(text="42")]


def test_tools_custom_and_builtin() -> None:
    body = {
        **BASE,
        "messages": HELLO,
        "tools": [
            {"name": "get_weather", "input_schema": {"type": "object"}, "defer_loading": True},
            {"type": "custom", "name": "calc", "input_schema": {"type": "object"}},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
    }
    tools = parse(body).tools
    assert [type(t) for t in tools] == [a.CustomTool, a.CustomTool, a.BuiltinTool, a.BuiltinTool]
    assert tools[0].model_extra == {"defer_loading": True}


def test_count_tokens_requests_need_no_max_tokens() -> None:
    request = parse({"model": "claude-sonnet-4-5", "messages": HELLO}, a.CountTokensRequest)
    assert isinstance(request, a.CountTokensRequest)
    assert error_of({"messages": HELLO}, a.CountTokensRequest) == "model: Field required"


# orjson reads bodies where it reads them as Python's parser does; elsewhere Python's parser.
REQUESTS = Path(__file__).parent / "data" / "requests"
EDGES = [
    b'{"n": 18446744073709551615, "m": -9223372036854775808}',  # orjson's own range: exact
    b'{"n": 18446744073709551616}',  # past 64 bits: a float in orjson, an int in Python
    b'{"n": -9223372036854775809, "s": "9999999999999999999 in a string"}',
    b'{"f": [1.0, 1e16, 1.5e-7, -0.0, 5e-324, 1.7976931348623157e308, 0.1e-400]}',
    b'{"a": 1, "b": 2, "a": 3}',  # duplicate keys: the last wins, at the first one's place
    '{"t": "caf\u00e9 \U0001f44b \u2028 \\ud83d\\ude00 \\u0000"}'.encode(),
    b' {"ws": [ ] } ',
]


@pytest.mark.parametrize(
    "raw",
    [*(p.read_bytes() for p in sorted(REQUESTS.glob("*.anthropic.json"))), *EDGES],
    ids=[*(p.name for p in sorted(REQUESTS.glob("*.anthropic.json"))), *map(str, range(7))],
)
def test_bodies_read_as_pythons_parser_reads_them(raw: bytes) -> None:
    """Values and types both: an integer past 64 bits stays an exact int."""
    expected = json.loads(raw)
    parsed = parse_object(raw)
    assert parsed == expected
    assert repr(parsed) == repr(expected)  # 1 == 1.0 for ==, not for repr


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"n": 1e999}', "request body has a number JSON cannot carry (NaN or Infinity)"),
        (b'{"n": -1E400}', "request body has a number JSON cannot carry (NaN or Infinity)"),
        (b'{"n": NaN}', "request body is not valid JSON: NaN is not a JSON number"),
        (b'{"t": "\\udc00"}', "t: the string holds a lone UTF-16 surrogate (\\udc00)"),
        (b'{"n": 18446744073709551616, "t": "\\ud800"}', "t: the string holds a lone"),
        (
            b'{"x": ' + b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH + b"}",
            "request body nests deeper than 128",
        ),
        (b"[" * 1100 + b"]" * 1100, "request body is not valid JSON: maximum recursion"),
        (b'{"a": 1} x', "request body is not valid JSON: Extra data"),
        (b"null", "request body must be a JSON object"),
    ],
)
def test_what_either_parser_refuses_is_worded_as_before(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_object(raw)
    assert caught.value.message.startswith(message)
