"""Anthropic errors, and the mapping of upstream failures onto them (PROTOCOL.md 4 and 8.7).

Hierarchy::

    BridgeError                 an Anthropic error: status, type, message
    +-- InvalidRequest          the client's request is malformed (400, never sent upstream)
    +-- UpstreamError           the upstream failed: built by `from_upstream_response`
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import untrusted


class BridgeError(Exception):
    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self.type, "message": self.message},
            "request_id": request_id,
        }

    def event(self) -> dict[str, Any]:
        """The payload of an SSE `error` event, for failures after the stream began."""
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


class InvalidRequest(BridgeError):
    status = 400
    type = "invalid_request_error"


class UpstreamError(BridgeError):
    pass


class NotFound(BridgeError):
    status = 404
    type = "not_found_error"


ErrorMap = Callable[[int, str, Mapping[str, str], str], "UpstreamError"]
"""(status, body text, headers, host) of an upstream's non-2xx answer -> the client's error:
what a dialect says its upstream's errors mean (`dialects.Dialect.error`)."""


STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_CONTEXT_PATTERNS = (
    # OpenAI: "maximum context length is 128000 tokens. However, your messages resulted in 130532"
    # vLLM: "... However, you requested 5000 tokens" or "... your request has 5000 input tokens"
    # OpenRouter: "This endpoint's maximum context length is ... you requested about 140000 tokens"
    re.compile(
        r"maximum context length is (\d+).*?(?:resulted in|requested|request has) (?:about )?(\d+)",
        re.S,
    ),
    # llama.cpp: "request (9000 tokens) exceeds the available context size (8192 tokens)"
    re.compile(r"\((\d+) tokens\) exceeds the available context size \((\d+)", re.S),
    # vLLM: "... maximum context length is 4096 tokens. However, you requested 5000 tokens"
    re.compile(r"(\d+) tokens? > (\d+)", re.S),
)
# vLLM when max_tokens is what overflows: "'max_tokens' or 'max_completion_tokens' is too large:
# 8000. This model's maximum context length is 4096 tokens and your request has 2778 input tokens
# (8000 > 4096 - 2778)"
_OUTPUT_OVERFLOW = re.compile(r"\((\d+) > (\d+) - (\d+)\)")
_CONTEXT_HINTS = (
    "context_length_exceeded",
    "maximum context length",
    "context size",
    "context window",
    "prompt is too long",
    "too many tokens",
)


def upstream_message(body: Any) -> tuple[str, str]:
    """(message, code) from an OpenAI, OpenRouter, vLLM or plain-text error body."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = untrusted.loads(body)
        except ValueError:
            text = re.sub(r"<[^>]+>", " ", body)
            return " ".join(text.split())[:500] or "upstream error", ""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or body.get("message")
            code = error.get("code") or error.get("type") or ""
            raw = (
                (error.get("metadata") or {}).get("raw")
                if isinstance(error.get("metadata"), dict)
                else None
            )
            if raw and isinstance(raw, str):
                message = f"{message}: {raw}"
            return str(message or json.dumps(body)[:500]), str(code)
        if isinstance(error, str):
            return error, ""
    return json.dumps(body)[:500], ""


def context_overflow(message: str, code: str) -> str | None:
    """The wording Claude Code acts on (`prompt is too long: N tokens > M maximum`) when the
    upstream says the prompt does not fit; None when it says something else."""
    lowered = message.lower()
    if code != "context_length_exceeded" and not any(h in lowered for h in _CONTEXT_HINTS):
        return None
    output = _OUTPUT_OVERFLOW.search(message)
    if output:
        # The prompt fits but not with max_tokens on top: say so in Anthropic's own wording
        # for that case (PROTOCOL 4.4), so the client lowers max_tokens instead of compacting.
        wanted, limit, used = (int(group) for group in output.groups())
        return (
            f"input length and `max_tokens` exceed context limit: {used} + {wanted} > {limit}, "
            "decrease input length or max_tokens and try again"
        )
    for index, pattern in enumerate(_CONTEXT_PATTERNS):
        match = pattern.search(message)
        if match:
            first, second = int(match.group(1)), int(match.group(2))
            used, limit = (second, first) if index == 0 else (first, second)
            return f"prompt is too long: {used} tokens > {limit} maximum"
    return f"prompt is too long: {message}"


def from_upstream_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None, host: str = ""
) -> UpstreamError:
    """Map an upstream non-2xx answer onto the Anthropic status and error type; `host` names
    the upstream in messages about its key."""
    message, code = upstream_message(body)
    if status in (401, 403):
        return key_refused(status, message, host)
    headers = headers or {}
    kept = {k: v for k, v in headers.items() if k.lower() in ("retry-after", "retry-after-ms")}
    lowered = f"{message} {code}".lower()
    if status in (400, 413, 422):
        overflow = context_overflow(message, code)
        if overflow:
            return UpstreamError(
                overflow,
                status=400,
                type="invalid_request_error",
                headers={"x-should-retry": "false"},
            )
    if status == 402 or (status == 429 and "insufficient_quota" in lowered):
        return UpstreamError(
            message, status=402, type="billing_error", headers={"x-should-retry": "false"}
        )
    if status == 503 or "overloaded" in lowered or "no provider" in lowered:
        return UpstreamError(message, status=529, type="overloaded_error", headers=kept)
    if status == 422:
        return UpstreamError(message, status=400, type="invalid_request_error")
    if status in (408, 504):
        return UpstreamError(message, status=504, type="timeout_error", headers=kept)
    if status == 429:
        return UpstreamError(message, status=429, type="rate_limit_error", headers=kept)
    if status >= 500:
        return UpstreamError(message, status=500, type="api_error", headers=kept)
    error_type = STATUS_TYPES.get(status, "invalid_request_error")
    return UpstreamError(message, status=status, type=error_type, headers=kept)


def key_refused(status: int, message: str, host: str = "") -> UpstreamError:
    """An upstream's 401 or 403: it refused the key claude-bridge sends it (the client's own
    key is never forwarded), so this is the proxy's configuration, not the client's.

    Not a 401 or 403 to the client: its key was fine, and Claude Code answers a 401 by asking
    the user to log in to Anthropic (an `apiKeyHelper` is re-run). A 502 `api_error`, like
    any gateway whose upstream failed it, with `x-should-retry: false`: retrying cannot help,
    and the SDKs and Claude Code show it at once instead of after their retries."""
    who = f"upstream {host}" if host else "the upstream"
    return UpstreamError(
        f"{who} refused the API key claude-bridge sends it (HTTP {status}: {message}); check "
        "OPENAI_API_KEY, or the upstream's api_key_env / api_keys_env (the client's own key "
        "is never forwarded)",
        status=502,
        type="api_error",
        headers={"x-should-retry": "false"},
    )


def is_error_status(status: int) -> bool:
    """A 4xx or 5xx answer: an error `from_upstream_response` maps. 2xx is an answer; any
    other status (1xx, 3xx, beyond 599) is neither and ends as `unexpected_status`."""
    return 400 <= status <= 599


def unexpected_status(status: int, host: str, location: str | None = None) -> UpstreamError:
    """A 502 for an answer that is neither a reply nor an error: a redirect (never followed:
    the request carries the key, and a client would take a 3xx for something else), a 304,
    an informational 1xx, a status no HTTP defines. `location` is the redirect's host ("" for
    one on the same host); its path and query are not repeated (they may carry tokens)."""
    message = f"upstream {host} answered HTTP {status}, which is not an API answer"
    if location is not None:
        target = f"host {location}" if location else "the same host"
        message = f"upstream {host} answered HTTP {status}, a redirect to {target}; redirects "
        message += "are not followed: check the upstream's base URL"
    return UpstreamError(message, status=502, type="api_error")


def from_stream_error(payload: Any) -> UpstreamError:
    """A mid-stream `error` object (OpenAI `server_error`, vLLM `object: error`, OpenRouter)."""
    message, code = upstream_message(payload)
    error = payload.get("error") if isinstance(payload, dict) else None
    # OpenRouter puts the HTTP status in `error.code`, vLLM in a top-level `code`.
    holder = error if isinstance(error, dict) else payload if isinstance(payload, dict) else {}
    status = holder.get("code")
    if isinstance(status, int) and 400 <= status < 600:
        return from_upstream_response(status, payload)
    lowered = f"{message} {code}".lower()
    if "rate" in lowered and "limit" in lowered:
        return UpstreamError(message, status=429, type="rate_limit_error")
    if "overload" in lowered:
        return UpstreamError(message, status=529, type="overloaded_error")
    return UpstreamError(message, status=500, type="api_error")


_UNSIZED = "prompt is too long: "
_SIZED = re.compile(r"^prompt is too long: \d+ tokens > \d+ maximum$")


def sized_overflow(message: str, window: int, tokens: int) -> str:
    """`prompt is too long: <the upstream's words>` (it gave no numbers) with the numbers, when
    the model's window is known: `tokens` is an estimate of the prompt, shown above the window
    since the upstream refused it. Any other message is returned as it is."""
    if not message.startswith(_UNSIZED) or _SIZED.match(message):
        return message
    return f"prompt is too long: {max(tokens, window + 1)} tokens > {window} maximum"
