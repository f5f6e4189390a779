"""`claude-bridge count-tokens`: a request's input tokens, offline."""

from __future__ import annotations

from claude_bridge.proxy.core.tokens import count_request_tokens
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import CountTokensRequest
from claude_bridge.proxy.tokenizer import count_text

from ..inputs import FILE_ARGUMENT, read_input, write_json


def count_tokens(file: str = FILE_ARGUMENT) -> None:
    """Count a request's input tokens, offline.

    The request is an Anthropic Messages (or count_tokens) body; the BPE encoding is the one
    shipped in the package.

    Example:

        claude-bridge count-tokens request.json      ->  {"input_tokens": 2095}
    """
    request = parse_body(read_input(file), CountTokensRequest)
    write_json({"input_tokens": count_request_tokens(request, count_text)})
