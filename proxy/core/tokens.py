"""Input-token counts of a request with an injected encoder (PROTOCOL.md 5).

OpenAI-compatible upstreams have no count_tokens; Claude Code uses the count to decide when
to compact, so under-counting is the costly error: system, tools and images all count.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterable
from typing import Any

from ..models import anthropic as a

Encoder = Callable[[str], int]
"""Text -> number of tokens."""

# Anthropic's per-message framing and per-tool overheads, approximated from the counts its
# count_tokens endpoint returns for empty messages and minimal tools.
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8
REQUEST_OVERHEAD = 3
# An image whose size cannot be read counts as Anthropic's cap for a 1.15 megapixel image.
IMAGE_DEFAULT_TOKENS = 1600
IMAGE_MAX_TOKENS = 1600
# `json.dumps(value, ensure_ascii=False)` without building an encoder for every call.
_UNESCAPED = json.JSONEncoder(ensure_ascii=False)


def count_request_tokens(request: a.CountTokensRequest, encode: Encoder) -> int:
    total = REQUEST_OVERHEAD
    for block in request.system or ():
        total += encode(block.text)
    for tool in request.tools or ():
        total += TOOL_OVERHEAD + encode(json.dumps(tool.model_dump(exclude_none=True)))
    for message in request.messages:
        total += MESSAGE_OVERHEAD + _blocks(message.content, encode)
    return total


def _blocks(blocks: Iterable[Any], encode: Encoder) -> int:
    total = 0
    for block in blocks:
        if isinstance(block, a.TextBlock):
            total += encode(block.text)
        elif isinstance(block, a.ImageBlock):
            total += image_tokens(block.source)
        elif isinstance(block, a.ThinkingBlock):
            total += encode(block.thinking)
        elif isinstance(block, a.ToolUseBlock):
            total += encode(block.name) + encode(_UNESCAPED.encode(block.input))
        elif isinstance(block, a.ToolResultBlock):
            total += MESSAGE_OVERHEAD + _blocks(block.content or (), encode)
        elif isinstance(block, a.DocumentBlock):
            total += _document(block, encode)
        elif isinstance(block, a.SearchResultBlock):
            total += encode(block.title) + encode(block.source) + _blocks(block.content, encode)
        else:
            total += encode(_UNESCAPED.encode(block.model_dump(exclude_none=True)))
    return total


def _document(block: a.DocumentBlock, encode: Encoder) -> int:
    source = block.source
    if isinstance(source, a.PlainTextSource):
        return encode(source.data)
    if isinstance(source, a.ContentSource):
        return _blocks(source.content, encode)
    if isinstance(source, a.Base64Source):
        # A PDF page costs about 1,500-3,000 tokens; its size in bytes is all we know offline.
        return max(len(source.data) * 3 // 4 // 1000, 1) * 100
    return IMAGE_DEFAULT_TOKENS


def image_tokens(source: Any) -> int:
    """Anthropic's formula, width * height / 750, capped; the size read from the image header."""
    if not isinstance(source, a.Base64Source):
        return IMAGE_DEFAULT_TOKENS
    try:
        head = base64.b64decode(source.data[:65536] + "=" * (-len(source.data[:65536]) % 4))
    except ValueError:
        return IMAGE_DEFAULT_TOKENS
    size = image_size(head)
    if size is None:
        return IMAGE_DEFAULT_TOKENS
    width, height = size
    return max(1, min(IMAGE_MAX_TOKENS, (width * height + 749) // 750))


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, JPEG or WebP file."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    if kind == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if kind == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 < len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        length = int.from_bytes(head[position + 2 : position + 4], "big")
        # Start-of-frame markers carry the dimensions; C4, C8 and CC are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(head[position + 5 : position + 7], "big")
            width = int.from_bytes(head[position + 7 : position + 9], "big")
            return width, height
        position += 2 + length
    return None
