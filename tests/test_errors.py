"""Upstream failures onto Anthropic errors (PROTOCOL 8.7), as a pure function of status and body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_bridge.proxy.core.errors import (
    BridgeError,
    InvalidRequest,
    UpstreamError,
    from_stream_error,
    from_upstream_response,
    upstream_message,
)


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def openrouter_error(status: int, message: str, **metadata: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message}
    if metadata:
        error["metadata"] = metadata
    return {"error": error}


def vllm_error(message: str, status: int, type_: str = "BadRequestError") -> dict[str, Any]:
    return {"object": "error", "message": message, "type": type_, "param": None, "code": status}


NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
    "</body>\r\n</html>\r\n"
)

# (upstream status, body) -> (Anthropic status, error type): the PROTOCOL 8.7 table.
TABLE = [
    (
        400,
        openai_error("Invalid value for 'temperature'.", "invalid_request_error"),
        400,
        "invalid_request_error",
    ),
    (
        422,
        {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
        400,
        "invalid_request_error",
    ),
    (
        422,
        vllm_error("Unprocessable", 422, "UnprocessableEntityError"),
        400,
        "invalid_request_error",
    ),
    (
        401,
        openai_error(
            "Incorrect API key provided: sk-abc***.", "invalid_request_error", "invalid_api_key"
        ),
        502,  # the proxy's key was refused, not the client's: `key_refused`
        "api_error",
    ),
    (401, openrouter_error(401, "No auth credentials found"), 502, "api_error"),
    (
        402,
        openrouter_error(402, "Insufficient credits. Add more using https://openrouter.ai"),
        402,
        "billing_error",
    ),
    (
        429,
        openai_error(
            "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"
        ),
        402,
        "billing_error",
    ),
    (
        403,
        openai_error(
            "Project does not have access to model gpt-5",
            "invalid_request_error",
            "model_not_found",
        ),
        502,
        "api_error",
    ),
    (
        404,
        openai_error(
            "The model `gpt-9` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        404,
        "not_found_error",
    ),
    (
        404,
        vllm_error("The model `qwen3` does not exist.", 404, "NotFoundError"),
        404,
        "not_found_error",
    ),
    (408, openrouter_error(408, "Request timed out"), 504, "timeout_error"),
    (504, "upstream request timeout", 504, "timeout_error"),
    (413, "Request Entity Too Large", 413, "request_too_large"),
    (
        429,
        openai_error(
            "Rate limit reached for gpt-4o in organization org-1 on tokens per min.",
            "tokens",
            "rate_limit_exceeded",
        ),
        429,
        "rate_limit_error",
    ),
    (
        429,
        openrouter_error(
            429, "Rate limit exceeded: free-models-per-day", headers={"X-RateLimit-Limit": "50"}
        ),
        429,
        "rate_limit_error",
    ),
    (
        500,
        openai_error("The server had an error while processing your request.", "server_error"),
        500,
        "api_error",
    ),
    (
        500,
        vllm_error("CUDA error: an illegal memory access", 500, "InternalServerError"),
        500,
        "api_error",
    ),
    (502, NGINX_502, 500, "api_error"),
    (
        502,
        openrouter_error(
            502, "Provider returned error", raw="upstream connect error", provider_name="Together"
        ),
        500,
        "api_error",
    ),
    (
        503,
        openai_error("The engine is currently overloaded, please try again later", "server_error"),
        529,
        "overloaded_error",
    ),
    (503, "Service Unavailable", 529, "overloaded_error"),
    (
        404,
        openrouter_error(404, "No provider available for this model with tool support"),
        529,
        "overloaded_error",
    ),
    (
        500,
        {"error": {"message": "Model is overloaded", "type": "server_error"}},
        529,
        "overloaded_error",
    ),
    (409, openai_error("Conflict", "invalid_request_error"), 409, "invalid_request_error"),
    (418, "I'm a teapot", 418, "invalid_request_error"),
]


@pytest.mark.parametrize(("status", "body", "anthropic_status", "anthropic_type"), TABLE)
def test_status_table(status: int, body: Any, anthropic_status: int, anthropic_type: str) -> None:
    raw = json.dumps(body) if not isinstance(body, str) else body
    for given in (body, raw, raw.encode()):
        error = from_upstream_response(status, given)
        assert isinstance(error, UpstreamError)
        assert (error.status, error.type) == (anthropic_status, anthropic_type), given
        assert error.message


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_the_proxys_not_the_clients(status: int) -> None:
    body = openai_error("Incorrect API key provided: ****", "invalid_request_error")
    error = from_upstream_response(status, body, host="api.openai.com")
    # Not 401: Claude Code would ask the user to log in to Anthropic; not retried either.
    assert (error.status, error.type) == (502, "api_error")
    assert error.headers == {"x-should-retry": "false"}
    assert error.message.startswith("upstream api.openai.com refused the API key claude-bridge")
    assert f"HTTP {status}: Incorrect API key provided: ****" in error.message
    assert "the client's own key is never forwarded" in error.message


def test_messages_are_kept() -> None:
    error = from_upstream_response(
        400, openai_error("Invalid value for 'temperature': 3 > 2.", "invalid_request_error")
    )
    assert error.message == "Invalid value for 'temperature': 3 > 2."
    vllm = from_upstream_response(400, vllm_error("Field 'messages' is required", 400))
    assert vllm.message == "Field 'messages' is required"
    fastapi = from_upstream_response(404, {"detail": "Not Found"})
    assert fastapi.message == "Not Found"
    plain = from_upstream_response(400, {"error": "bad things"})
    assert plain.message == "bad things"


def test_openrouter_raw_provider_message_is_appended() -> None:
    body = openrouter_error(
        400,
        "Provider returned error",
        raw='{"message":"tools.0.name: String should match pattern"}',
        provider_name="Anthropic",
    )
    error = from_upstream_response(400, body)
    assert error.type == "invalid_request_error"
    assert error.message.startswith("Provider returned error: ")
    assert "tools.0.name: String should match pattern" in error.message


def test_html_body_is_reduced_to_text() -> None:
    error = from_upstream_response(502, NGINX_502)
    assert "<" not in error.message and "502 Bad Gateway" in error.message
    assert "\n" not in error.message
    assert from_upstream_response(500, "").message == "upstream error"
    long = from_upstream_response(500, "x" * 5000)
    assert len(long.message) <= 500


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        # OpenAI
        (
            400,
            openai_error(
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130532 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            "prompt is too long: 130532 tokens > 128000 maximum",
        ),
        # vLLM, chat completions with the completion counted in
        (
            400,
            vllm_error(
                "This model's maximum context length is 32768 tokens. However, you requested "
                "40000 tokens (39000 in the messages, 1000 in the completion). Please reduce the "
                "length of the messages or completion.",
                400,
            ),
            "prompt is too long: 40000 tokens > 32768 maximum",
        ),
        # vLLM, the prompt alone
        (
            400,
            vllm_error(
                "This model's maximum context length is 1536 tokens. However, your request has "
                "4176 input tokens. Please reduce the length of the input messages.",
                400,
            ),
            "prompt is too long: 4176 tokens > 1536 maximum",
        ),
        # vLLM wrapped the OpenAI way
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens. However, you "
                    "requested 9000 tokens (8000 in the messages, 1000 in the completion).",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
            "prompt is too long: 9000 tokens > 8192 maximum",
        ),
        # llama.cpp server
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "request (9000 tokens) exceeds the available context size "
                    "(8192 tokens), try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 9000,
                    "n_ctx": 8192,
                }
            },
            "prompt is too long: 9000 tokens > 8192 maximum",
        ),
        # OpenRouter
        (
            400,
            openrouter_error(
                400,
                "This endpoint's maximum context length is 131072 tokens. However, you "
                "requested about 140000 tokens (130000 of text input, 10000 in the output). "
                "Please reduce the length of either one.",
            ),
            "prompt is too long: 140000 tokens > 131072 maximum",
        ),
        # An upstream that already speaks Anthropic's wording (OpenRouter -> Claude)
        (
            400,
            openrouter_error(400, "prompt is too long: 205429 tokens > 200000 maximum"),
            "prompt is too long: 205429 tokens > 200000 maximum",
        ),
        # 413 and 422 carrying the same news
        (
            413,
            openai_error(
                "This model's maximum context length is 4096 tokens. However, your messages "
                "resulted in 5000 tokens.",
                "invalid_request_error",
            ),
            "prompt is too long: 5000 tokens > 4096 maximum",
        ),
        # vLLM, when max_tokens on top of the prompt is what does not fit
        (
            400,
            vllm_error(
                "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's "
                "maximum context length is 4096 tokens and your request has 2778 input tokens "
                "(8000 > 4096 - 2778). None",
                400,
            ),
            "input length and `max_tokens` exceed context limit: 2778 + 8000 > 4096, "
            "decrease input length or max_tokens and try again",
        ),
    ],
)
def test_context_overflow_is_reworded(status: int, body: Any, message: str) -> None:
    error = from_upstream_response(status, body)
    assert (error.status, error.type) == (400, "invalid_request_error")
    assert error.message == message
    assert error.headers == {"x-should-retry": "false"}


def test_context_overflow_without_numbers_keeps_the_prefix() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }
    }
    error = from_upstream_response(400, body)
    assert error.message.startswith("prompt is too long: ")
    assert "available context size" in error.message
    by_code = from_upstream_response(
        400, openai_error("Input too long.", "invalid_request_error", "context_length_exceeded")
    )
    assert by_code.message == "prompt is too long: Input too long."


def test_unrelated_numbers_are_not_context_errors() -> None:
    error = from_upstream_response(
        400, openai_error("max_tokens: 32000 > 16384, the model's output limit", "invalid")
    )
    assert error.message == "max_tokens: 32000 > 16384, the model's output limit"


@pytest.mark.parametrize("status", [429, 503, 500, 504])
def test_retry_after_is_kept(status: int) -> None:
    headers = {"Retry-After": "7", "retry-after-ms": "6500", "x-request-id": "abc", "Server": "x"}
    error = from_upstream_response(status, openai_error("slow down", "server_error"), headers)
    assert error.headers == {"Retry-After": "7", "retry-after-ms": "6500"}


def test_billing_errors_say_do_not_retry() -> None:
    error = from_upstream_response(
        402, openrouter_error(402, "Insufficient credits"), {"retry-after": "5"}
    )
    assert error.headers == {"x-should-retry": "false"}


def test_error_bodies() -> None:
    error = from_upstream_response(429, openai_error("Rate limit reached", "requests"))
    assert error.body("req_011CV5Jab6gR3ZNs9Sj6apiD") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached"},
        "request_id": "req_011CV5Jab6gR3ZNs9Sj6apiD",
    }
    assert error.body()["request_id"] is None
    assert error.event() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached"},
    }
    assert isinstance(error, BridgeError)
    invalid = InvalidRequest("messages: Field required")
    assert (invalid.status, invalid.type) == (400, "invalid_request_error")


@pytest.mark.parametrize(
    ("payload", "status", "type_"),
    [
        (
            {
                "error": {
                    "message": "The server had an error while processing your request. Sorry "
                    "about that!",
                    "type": "server_error",
                }
            },
            500,
            "api_error",
        ),
        (
            {"object": "error", "message": "Internal server error", "type": "InternalServerError"},
            500,
            "api_error",
        ),
        (
            {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error"}},
            429,
            "rate_limit_error",
        ),
        (
            {"error": {"message": "Upstream overloaded", "type": "server_error"}},
            529,
            "overloaded_error",
        ),
        (
            {"error": {"code": 502, "message": "Provider disconnected"}, "choices": []},
            500,
            "api_error",
        ),
        ({"error": {"code": 429, "message": "Provider rate limited"}}, 429, "rate_limit_error"),
        ({"error": {"code": 503, "message": "No instances available"}}, 529, "overloaded_error"),
        ({"error": "something broke"}, 500, "api_error"),
    ],
)
def test_from_stream_error(payload: dict[str, Any], status: int, type_: str) -> None:
    error = from_stream_error(payload)
    assert (error.status, error.type) == (status, type_)
    assert error.event()["error"]["type"] == type_
    assert error.message


def test_stream_error_keeps_the_message() -> None:
    payload = {"error": {"message": "The server had an error", "type": "server_error"}}
    assert from_stream_error(payload).message == "The server had an error"


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            openai_error("Bad key", "invalid_request_error", "invalid_api_key"),
            "Bad key",
            "invalid_api_key",
        ),
        (openai_error("Bad", "invalid_request_error"), "Bad", "invalid_request_error"),
        (vllm_error("Too long", 400), "Too long", "400"),
        (b'{"error": {"message": "bytes"}}', "bytes", ""),
        ("[1, 2]", "[1, 2]", ""),
    ],
)
def test_upstream_message(body: Any, message: str, code: str) -> None:
    assert upstream_message(body) == (message, code)
