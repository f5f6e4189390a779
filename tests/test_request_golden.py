"""Golden pairs: `tests/data/requests/<case>.anthropic.json` -> `<case>.openai.json`.

Each Anthropic request goes through the same validation and translation as `serve`, with
`RequestOptions(model="big-model")` unless `<case>.options.json` gives other options
(`"profile": "<name>"` picks a provider profile, see `providers.PROFILES`). Run with
`UPDATE_GOLDEN=1` to rewrite the expected files, then review every changed file by eye.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.ids import VALID_TOOL_NAME
from claude_bridge.proxy.core.providers import by_name
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest

DATA = Path(__file__).parent / "data" / "requests"
CASES = sorted(p.name.removesuffix(".anthropic.json") for p in DATA.glob("*.anthropic.json"))
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def options_for(case: str) -> RequestOptions:
    options_path = DATA / f"{case}.options.json"
    options: dict[str, Any] = {"model": "big-model"}
    if options_path.exists():
        options.update(_load(options_path))
    if "profile" in options:
        options["profile"] = by_name(options["profile"])
    return RequestOptions(**options)


def translate_case(case: str) -> dict[str, Any]:
    raw = (DATA / f"{case}.anthropic.json").read_bytes()
    request = parse_body(raw, MessagesRequest)
    return translate_request(request, options_for(case)).body


def test_cases_exist() -> None:
    assert len(CASES) >= 25
    for case in CASES:
        assert (DATA / f"{case}.openai.json").exists() or UPDATE, f"{case}: no expected file"


@pytest.mark.parametrize("case", CASES)
def test_request_golden(case: str) -> None:
    body = translate_case(case)
    expected_path = DATA / f"{case}.openai.json"
    if UPDATE:
        _dump(expected_path, body)
    assert body == _load(expected_path)


@pytest.mark.parametrize("case", CASES)
def test_request_invariants(case: str) -> None:
    """What every OpenAI request must satisfy, whatever the case (and its provider allows)."""
    body = translate_case(case)
    options = options_for(case)
    profile = options.profile
    cache_control = profile.forwards_cache_control(options.model)
    messages = body["messages"]
    roles = [m["role"] for m in messages]
    # At most one system message, and only first: strict chat templates reject the rest.
    assert "system" not in roles[1:]
    # Every tool call is answered by tool messages right after its assistant turn.
    for position, message in enumerate(messages):
        calls = [c["id"] for c in message.get("tool_calls") or ()]
        if calls:
            following = messages[position + 1 : position + 1 + len(calls)]
            assert [m["role"] for m in following] == ["tool"] * len(calls), case
            assert [m["tool_call_id"] for m in following] == calls, case
        if message["role"] == "tool":
            assert isinstance(message["content"], str) or cache_control
        for call in message.get("tool_calls") or ():
            if profile.tool_id_max:
                assert len(call["id"]) <= profile.tool_id_max, call["id"]
            if profile.tool_id_alnum:
                assert re.fullmatch(f"[a-zA-Z0-9]{{{profile.tool_id_alnum}}}", call["id"])
        if profile.strict_strings:
            content = message["content"]
            assert isinstance(content, str) or any(p["type"] != "text" for p in content)
        if message["role"] == "user" and isinstance(message["content"], list):
            assert message["content"], case
            for part in message["content"]:
                assert part["type"] != "text" or part["text"], f"{case}: empty text part"
    # No two consecutive user or assistant turns (tool messages may repeat).
    for before, after in itertools.pairwise(roles):
        assert not (before == after and before in ("user", "assistant")), case
    for tool in body.get("tools", ()):
        assert tool["type"] == "function"
        assert VALID_TOOL_NAME.match(tool["function"]["name"]), tool["function"]["name"]
        assert tool["function"]["parameters"].get("type") == "object"
    if "parallel_tool_calls" in body or "tool_choice" in body:
        assert body.get("tools"), f"{case}: tool options without tools"
    assert len(body.get("stop", ())) <= 4
    assert "top_k" not in body or profile.top_k
    assert "thinking" not in body or profile.reasoning == "deepseek"
    assert "metadata" not in body
    if profile.body_fields is not None:
        assert set(body) <= set(profile.body_fields)
    user = body.get("user")
    assert user is None or (isinstance(user, str) and len(user) <= 64)
    text = json.dumps(body)
    assert "x-anthropic-billing-header" not in text
    assert '"defer_loading"' not in text
    assert '"cache_control"' not in text or cache_control


def _request(**fields: Any) -> MessagesRequest:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, **fields}
    return parse_body(json.dumps(body).encode(), MessagesRequest)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"type": "image", "source": {"type": "file", "file_id": "file_011"}},
            "image source of type 'file'",
        ),
        (
            {"type": "document", "source": {"type": "file", "file_id": "file_011"}},
            "document source of type 'file'",
        ),
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/msword", "data": "AAAA"},
            },
            "document media_type 'application/msword'",
        ),
    ],
)
def test_unsupported_sources_are_rejected(block: dict[str, Any], message: str) -> None:
    request = _request(messages=[{"role": "user", "content": [block]}])
    with pytest.raises(InvalidRequest) as caught:
        translate_request(request, RequestOptions(model="big-model"))
    assert message in caught.value.message
    assert caught.value.status == 400


def test_dropped_fields_are_reported() -> None:
    raw = (DATA / "claude_code.anthropic.json").read_bytes()
    dropped = translate_request(
        parse_body(raw, MessagesRequest), RequestOptions(model="big-model")
    ).dropped
    assert "system billing header" in dropped
    assert "context_management" in dropped
    assert "assistant thinking block" in dropped
    sampling = translate_request(
        parse_body((DATA / "sampling_and_stops.anthropic.json").read_bytes(), MessagesRequest),
        RequestOptions(model="big-model"),
    ).dropped
    assert "top_k" in sampling
    assert "stop_sequences beyond the first 4" in sampling
    assert "service_tier" in sampling
    servers = translate_request(
        parse_body(
            (DATA / "tools_builtin_and_server.anthropic.json").read_bytes(), MessagesRequest
        ),
        RequestOptions(model="big-model"),
    ).dropped
    # web_search is offered as a function the proxy runs (tests/test_web_search.py).
    assert servers == ["server tool web_fetch_20250910"]


def test_long_tool_names_map_back() -> None:
    raw = (DATA / "tool_name_shortened.anthropic.json").read_bytes()
    request = parse_body(raw, MessagesRequest)
    upstream = translate_request(request, RequestOptions(model="big-model"))
    for tool in request.tools or ():
        sent = upstream.tool_names.to_upstream(tool.name)
        assert VALID_TOOL_NAME.match(sent)
        assert upstream.tool_names.to_client(sent) == tool.name
