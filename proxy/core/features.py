"""What a request holds, for routing rules that match on more than the model name.

* thinking: extended or adaptive thinking is on;
* input tokens: an estimate from the body's size, four bytes a token, base64 payloads (images,
  PDFs) left out: free, and close enough to pick a long-context model;
* images: an image anywhere in the conversation (tool results included);
* request class: Claude Code's own `x-claude-code-request-class` when it sends gateway hints
  (`main`, `subagent`, `workflow`, `compaction`, `auxiliary`; `claude-bridge code` turns them
  on), else `subagent` when the request carries an agent id, else `main` (PROTOCOL.md 11.2).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..models import anthropic as a
from .session import AGENT_HEADER, header

CLASS_HEADER = "x-claude-code-request-class"
BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class Features:
    thinking: bool = False
    input_tokens: int = 0
    images: bool = False
    request_class: str = "main"


PLAIN = Features()
"""A request with nothing a feature rule asks for."""


def request_features(
    request: a.MessagesRequest, body_size: int, headers: Mapping[str, str]
) -> Features:
    thinking = request.thinking is not None and request.thinking.type != "disabled"
    payload = 0
    images = False
    for block in _media(request):
        source = block.source
        if isinstance(source, a.Base64Source):
            payload += len(source.data)
        images = images or isinstance(block, a.ImageBlock)
    hinted = header(headers, CLASS_HEADER).strip().lower()
    kind = hinted or ("subagent" if header(headers, AGENT_HEADER).strip() else "main")
    return Features(thinking, max(0, body_size - payload) // BYTES_PER_TOKEN, images, kind)


def _media(request: a.MessagesRequest) -> Iterator[Any]:
    """Every image and document block, in messages and in tool results."""
    for message in request.messages:
        for block in message.content:
            if isinstance(block, (a.ImageBlock, a.DocumentBlock)):
                yield block
            elif isinstance(block, a.ToolResultBlock):
                for part in block.content or ():
                    if isinstance(part, (a.ImageBlock, a.DocumentBlock)):
                        yield part
