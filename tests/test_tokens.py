"""Input-token counts: the bundled cl100k_base BPE, offline, and the request walk around it."""

from __future__ import annotations

import base64
import json
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from claude_bridge.proxy import tokenizer
from claude_bridge.proxy.core.context import ReplyContext, message_start
from claude_bridge.proxy.core.dialects.base import reply_context
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.tokens import (
    IMAGE_DEFAULT_TOKENS,
    IMAGE_MAX_TOKENS,
    count_request_tokens,
    image_size,
    image_tokens,
)
from claude_bridge.proxy.core.usage import anthropic_usage
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models import anthropic as a


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def offline(no_network: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network and an empty tiktoken cache: any download attempt fails loudly."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(cache))
    # Load the encoding afresh under these conditions, not from an earlier test's cache.
    tokenizer.encoding.cache_clear()
    return cache


KNOWN_COUNTS = [
    ("hello world", 2),
    ("The quick brown fox jumps over the lazy dog.", 10),
    ("", 0),
    # Special-token text in a prompt is ordinary text, not a control token (nor an error).
    ("<|endoftext|>", 7),
]


def test_known_cl100k_counts_offline(offline: Path) -> None:
    for text, tokens in KNOWN_COUNTS:
        assert tokenizer.count_text(text) == tokens, text
    encoding = tokenizer.encoding()
    assert encoding.name == "cl100k_base"
    assert encoding.n_vocab == 100277
    assert encoding.encode("hello world") == [15339, 1917]
    assert encoding.decode(encoding.encode("naïve café ✓")) == "naïve café ✓"
    assert list(offline.iterdir()) == [], "nothing may be downloaded or cached"


def test_the_network_guard_works(no_network: None) -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as sock, pytest.raises(AssertionError, match="network access"):
        sock.connect(("127.0.0.1", 9))


# -- image headers -----------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\xf0\x00\x00"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 4) + b"\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + dqt + sof0 + b"\xff\xd9"


def webp_vp8x(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    chunk += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    frame = b"\x2f" + bits.to_bytes(4, "little")
    chunk = b"VP8L" + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


MAKERS = [png, gif, jpeg, webp_vp8x, webp_vp8, webp_vp8l]


@pytest.mark.parametrize("make", MAKERS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("width", "height"), [(200, 150), (1, 1), (1092, 1092), (37, 91)])
def test_image_sizes_from_headers(make: Any, width: int, height: int) -> None:
    assert image_size(make(width, height)) == (width, height)


def source(data: bytes, media_type: str = "image/png") -> a.Base64Source:
    return a.Base64Source(
        type="base64", media_type=media_type, data=base64.b64encode(data).decode()
    )


@pytest.mark.parametrize("make", MAKERS, ids=lambda m: m.__name__)
def test_image_tokens_are_width_times_height_over_750(make: Any) -> None:
    assert image_tokens(source(make(200, 150))) == 40  # 30000 / 750
    assert image_tokens(source(make(100, 100))) == 14  # 10000 / 750 = 13.3, rounded up
    assert image_tokens(source(make(1, 1))) == 1
    assert image_tokens(source(make(4000, 3000))) == IMAGE_MAX_TOKENS


def test_unreadable_images_count_the_default() -> None:
    assert image_tokens(source(b"not an image at all")) == IMAGE_DEFAULT_TOKENS
    # Validation refuses such data now; counting still copes with it.
    unreadable = a.Base64Source.model_construct(type="base64", media_type="image/png", data="@@@")
    assert image_tokens(unreadable) == IMAGE_DEFAULT_TOKENS
    assert image_tokens(a.UrlSource(type="url", url="https://example.com/a.png")) == (
        IMAGE_DEFAULT_TOKENS
    )
    assert image_size(b"\xff\xd8\xff\xe0") is None  # JPEG cut before its frame header
    assert image_size(b"RIFF\x00\x00\x00\x00WEBPVP8?") is None


# -- whole requests ----------------------------------------------------------------------


def words(text: str) -> int:
    """A transparent stand-in encoder: one token per word."""
    return len(text.split())


def request(**fields: Any) -> a.CountTokensRequest:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return parse_body(json.dumps(body).encode(), a.CountTokensRequest)


WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}


def test_system_messages_and_tools_all_count() -> None:
    base = count_request_tokens(request(), tokenizer.count_text)
    with_system = count_request_tokens(
        request(system="You are a meticulous assistant who answers in French."),
        tokenizer.count_text,
    )
    assert with_system - base == tokenizer.count_text(
        "You are a meticulous assistant who answers in French."
    )
    longer = count_request_tokens(
        request(messages=[{"role": "user", "content": "hi " * 50}]), tokenizer.count_text
    )
    assert longer > base + 40
    with_tool = count_request_tokens(request(tools=[WEATHER]), tokenizer.count_text)
    assert with_tool > base + tokenizer.count_text(WEATHER["description"])


def test_adding_a_tool_always_increases_the_count() -> None:
    tools: list[dict[str, Any]] = []
    previous = count_request_tokens(request(), tokenizer.count_text)
    for number in range(5):
        tools.append({**WEATHER, "name": f"tool_{number}"})
        current = count_request_tokens(request(tools=tools), tokenizer.count_text)
        assert current > previous
        previous = current
    builtin = count_request_tokens(
        request(tools=[*tools, {"type": "bash_20250124", "name": "bash"}]), tokenizer.count_text
    )
    assert builtin > previous


def test_images_count_by_their_size() -> None:
    def with_image(data: bytes) -> int:
        image = {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(data).decode(),
            },
        }
        return count_request_tokens(request(messages=[{"role": "user", "content": [image]}]), words)

    empty = count_request_tokens(request(messages=[{"role": "user", "content": []}]), words)
    assert with_image(png(750, 100)) - empty == 100
    assert with_image(png(375, 100)) - empty == 50
    assert with_image(jpeg(750, 200)) - empty == 200


def test_every_kind_of_block_counts() -> None:
    empty = count_request_tokens(request(messages=[{"role": "user", "content": []}]), words)
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": "one two three"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "four five"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a b"}},
        {"type": "document", "source": {"type": "content", "content": "c d e"}},
        {
            "type": "search_result",
            "source": "src",
            "title": "t",
            "content": [{"type": "text", "text": "f"}],
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "A" * 4000},
        },
    ]
    for block in blocks:
        counted = count_request_tokens(
            request(messages=[{"role": "user", "content": [block]}]), words
        )
        assert counted > empty, block["type"]
    assistant: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "let me see", "signature": "sig"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    for block in assistant:
        counted = count_request_tokens(
            request(messages=[{"role": "assistant", "content": [block]}]), words
        )
        assert counted > empty, block["type"]


def test_count_is_additive_over_messages() -> None:
    one = count_request_tokens(request(messages=[{"role": "user", "content": "a b c"}]), words)
    two = count_request_tokens(
        request(
            messages=[
                {"role": "user", "content": "a b c"},
                {"role": "assistant", "content": "d e"},
            ]
        ),
        words,
    )
    zero = count_request_tokens(request(messages=[]), words)
    assert two - one == one - zero - 1  # a message's framing plus its words


def test_long_text_is_counted_in_windows_exactly_for_prose() -> None:
    prose = " ".join(f"word{i}, and some more text." for i in range(20_000))
    assert len(prose) > 10 * tokenizer.WINDOW
    exact = len(tokenizer.encoding().encode(prose, disallowed_special=()))
    assert tokenizer.count_text(prose) == exact


def test_a_huge_piece_without_spaces_is_still_counted() -> None:
    blob = "QUJD" * (tokenizer.WINDOW // 2)  # base64-like, no space to cut at
    exact = len(tokenizer.encoding().encode(blob, disallowed_special=()))
    counted = tokenizer.count_text(blob)
    # Hard cuts cost at most a token or two at each window edge.
    assert exact <= counted <= exact + 2 * (len(blob) // tokenizer.WINDOW + 1)


def test_the_reply_contexts_input_estimate_is_counted_only_when_read_and_once() -> None:
    counted: list[int] = []

    def count() -> int:
        counted.append(1)
        return 57

    ctx = ReplyContext("m", "msg_1", input_count=count)
    reported = {"prompt_tokens": 10, "completion_tokens": 2}
    assert anthropic_usage(reported, ctx)["input_tokens"] == 10
    assert counted == []  # the upstream said: nothing to count
    assert anthropic_usage(None, ctx)["input_tokens"] == 57
    assert message_start(ctx)[0]["message"]["usage"]["input_tokens"] == 57
    assert counted == [1]


def test_a_pickled_reply_context_carries_its_count_not_the_request() -> None:
    """A worker process plans the biggest bodies: what comes back is the number."""
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi " * 500}]}
    asked = parse_body(json.dumps(body).encode(), a.MessagesRequest)
    ctx = reply_context(asked, translate_request(asked, RequestOptions("m")), "msg_1")
    again = pickle.loads(pickle.dumps(ctx))
    assert again.input_count == again.input_estimate == ctx.input_estimate > 100
    assert b"hi hi" not in pickle.dumps(ctx)
