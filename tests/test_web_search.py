"""The `web_search` server tool on translated upstreams (issue 17, PROTOCOL.md 12).

Unit tests of the pure core (`core/web_search.py`, `core/search_turns.py`), the backends against
a real loopback server speaking their APIs, and end to end with the `anthropic` SDK.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import (
    CitationsWebSearchResultLocation,
    ServerToolUseBlock,
    TextBlock,
    WebSearchToolResultBlock,
)
from conftest import CLIENT_TIMEOUT, Bridge, bridge_settings, make_client, make_http, start_bridge
from upstream import (
    DONE,
    FakeUpstream,
    JSONReply,
    RawReply,
    RecordedRequest,
    Reply,
    SSEReply,
    chunk,
    completion,
    error_body,
    openai_usage,
    rate_limited,
    text_stream,
    tool_call,
)

from claude_bridge.cli.render import exchange_line
from claude_bridge.cli.render import result as result_piece
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import ConfigError, Settings, WebSearchSettings, load_settings
from claude_bridge.proxy.core import web_search as ws
from claude_bridge.proxy.core.checker import check_stream, check_wire
from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.responses.request import translate_request as translate_responses
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM
from claude_bridge.proxy.core.search_turns import SearchTurns
from claude_bridge.proxy.core.sse import SSEDecoder
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.logs import exchange_record
from claude_bridge.proxy.models.anthropic import MessagesRequest
from claude_bridge.proxy.replay import ReplayTransport
from claude_bridge.proxy.websearch.searcher import NOT_CONFIGURED, Searcher

SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def searxng_answer(*urls: str) -> dict[str, Any]:
    """A SearXNG JSON answer (PROTOCOL.md 12.4) with one result per URL."""
    return {
        "query": "q",
        "number_of_results": len(urls),
        "results": [
            {
                "url": url,
                "title": f"Title {n}",
                "content": f"Snippet {n} about {url}",
                "engine": "fake",
                "publishedDate": "2026-11-30T00:00:00" if n == 1 else None,
            }
            for n, url in enumerate(urls, 1)
        ],
        "answers": [],
        "unresponsive_engines": [],
    }


def request_with(*messages: dict[str, Any], **tool: Any) -> MessagesRequest:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "tools": [{**SEARCH_TOOL, **tool}],
        "messages": list(messages) or [{"role": "user", "content": "news?"}],
    }
    return parse_body(json.dumps(body).encode(), MessagesRequest)


# -- the pure core ------------------------------------------------------------------------


def test_encrypted_content_round_trips_and_refuses_others() -> None:
    result = ws.Result("https://example.com/a", "A", "snippet é", "2 days ago")
    token = ws.encode_content(result)
    assert token.startswith(ws.CONTENT_PREFIX) and "example" not in token
    assert ws.decode_content(token) == result
    assert ws.decode_content("EqkCCioIBxgCIiQ...anthropic's") is None
    assert ws.decode_content(ws.CONTENT_PREFIX + "!!!") is None


@pytest.mark.parametrize(
    ("url", "domain", "matches"),
    [
        ("https://example.com/x", "example.com", True),
        ("https://docs.example.com/x", "example.com", True),
        ("https://notexample.com/x", "example.com", False),
        ("https://example.com/blog/post", "example.com/blog", True),
        ("https://example.com/shop", "example.com/blog", False),
        ("https://u:p@EXAMPLE.com:8443/blog?q=1", "example.com/blog", True),
        ("https://[::1]:80/x", "::1", True),
        ("ftp://example.com/x", "example.com", False),
        ("https://evil.com/?u=https://example.com/", "example.com", False),
    ],
)
def test_domain_matching(url: str, domain: str, matches: bool) -> None:
    assert ws.domain_matches(url, domain) is matches


def test_kept_filters_domains_caps_count_and_size() -> None:
    results = [
        ws.Result("https://a.com/1", "a", "x" * 5000),
        ws.Result("javascript:alert(1)", "bad"),
        ws.Result("https://b.com/2", "b"),
        ws.Result("https://a.com/3", ""),
    ]
    allowed = ws.kept(results, ws.SearchTool(allowed_domains=("a.com",)), limit=5)
    assert [r.url for r in allowed] == ["https://a.com/1", "https://a.com/3"]
    assert len(allowed[0].snippet) == ws.MAX_SNIPPET_CHARS
    assert allowed[1].title == "https://a.com/3"  # no title: the URL stands in
    blocked = ws.kept(results, ws.SearchTool(blocked_domains=("a.com",)), limit=5)
    assert [r.url for r in blocked] == ["https://b.com/2"]
    assert len(ws.kept(results, ws.SearchTool(), limit=1)) == 1


def test_tool_is_checked_like_the_api() -> None:
    with pytest.raises(InvalidRequest, match="cannot both be set"):
        translate_request(
            request_with(allowed_domains=["a.com"], blocked_domains=["b.com"]),
            RequestOptions(model="m"),
        )
    tool = ws.search_tool(
        request_with(user_location={"type": "approximate", "country": "DE"}).tools or []
    )
    assert tool is not None and tool.country == "DE" and tool.max_uses == 3


def test_both_dialects_offer_a_function_in_place_of_the_server_tool() -> None:
    request = request_with()
    chat = translate_request(request, RequestOptions(model="m"))
    assert chat.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "description": ws.DESCRIPTION,
                "parameters": ws.PARAMETERS,
            },
        }
    ]
    assert not chat.dropped
    responses = translate_responses(request, RequestOptions(model="m"))
    assert responses.body["tools"][0]["name"] == "web_search"
    assert responses.body["tools"][0]["type"] == "function"


def test_native_search_where_the_upstream_has_one() -> None:
    from claude_bridge.proxy.core.providers import by_name

    request = request_with(allowed_domains=["a.com"])
    router = RequestOptions(model="m", profile=by_name("openrouter"), native_web_search=True)
    assert translate_request(request, router).body["tools"] == [
        {"type": "openrouter:web_search", "parameters": {"allowed_domains": ["a.com"]}}
    ]
    responses = translate_responses(request, RequestOptions(model="m", native_web_search=True))
    assert responses.body["tools"] == [
        {"type": "web_search", "filters": {"allowed_domains": ["a.com"]}}
    ]
    # A server without search of its own still gets the function (the proxy searches).
    plain = translate_request(request, RequestOptions(model="m", native_web_search=True))
    assert plain.body["tools"][0]["function"]["name"] == "web_search"


HISTORY = (
    {"role": "user", "content": "Who won?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me search."},
            {
                "type": "server_tool_use",
                "id": "srvtoolu_01abc",
                "name": "web_search",
                "input": {"query": "winner"},
            },
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_01abc",
                "content": [
                    {
                        "type": "web_search_result",
                        "url": "https://news.example/win",
                        "title": "The winner",
                        "encrypted_content": ws.encode_content(
                            ws.Result("https://news.example/win", "The winner", "Team A won.", None)
                        ),
                        "page_age": None,
                    },
                    {
                        "type": "web_search_result",
                        "url": "https://other.example",
                        "title": "Other",
                        "encrypted_content": "anthropic-opaque",
                        "page_age": "1 day ago",
                    },
                ],
            },
            {
                "type": "server_tool_use",
                "id": "srvtoolu_01def",
                "name": "web_search",
                "input": {"query": "score"},
            },
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_01def",
                "content": {
                    "type": "web_search_tool_result_error",
                    "error_code": "too_many_requests",
                },
            },
            {"type": "text", "text": "Team A won."},
        ],
    },
    {"role": "user", "content": "Thanks"},
)


def test_history_becomes_calls_and_outputs_in_chat() -> None:
    messages = translate_request(request_with(*HISTORY), RequestOptions(model="m")).body["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant", "user"]
    first = messages[1]
    assert first["content"] == "Let me search."
    call = first["tool_calls"][0]
    assert call["function"] == {"name": "web_search", "arguments": '{"query": "winner"}'}
    assert messages[2]["tool_call_id"] == call["id"]
    assert "[1] The winner\nURL: https://news.example/win\nTeam A won." in messages[2]["content"]
    assert "[2] Other\nURL: https://other.example\nPublished: 1 day ago" in messages[2]["content"]
    assert (
        messages[3]["content"] is None
        and messages[4]["tool_call_id"] == messages[3]["tool_calls"][0]["id"]
    )
    assert "failed (too_many_requests)" in messages[4]["content"]
    assert messages[5]["content"] == "Team A won."


def test_history_becomes_calls_and_outputs_in_responses() -> None:
    items = translate_responses(request_with(*HISTORY), RequestOptions(model="m")).body["input"]
    kinds = [i["type"] if i["type"] != "message" else i["role"] for i in items]
    assert kinds == [
        "user",
        "assistant",
        "function_call",
        "function_call_output",
        "function_call",
        "function_call_output",
        "assistant",
        "user",
    ]
    assert items[2]["call_id"] == items[3]["call_id"]
    assert "Team A won." in items[3]["output"]


def test_a_search_without_its_result_is_left_out() -> None:
    history = (
        {"role": "user", "content": "Who won?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_x",
                    "name": "web_search",
                    "input": {"query": "w"},
                },
            ],
        },
        {"role": "user", "content": "go on"},
    )
    messages = translate_request(request_with(*history), RequestOptions(model="m")).body["messages"]
    assert [m["role"] for m in messages] == ["user", "user"] or "tool_calls" not in str(messages)


def test_side_request_is_recognised() -> None:
    side = request_with(
        {"role": "user", "content": "Perform a web search for the query: tokyo population"}
    )
    assert ws.side_request_query(side) == "tokyo population"
    assert ws.side_request_query(request_with()) is None


def _turn(*blocks: dict[str, Any], stop: str = "end_turn", output: int = 5) -> list[dict[str, Any]]:
    """A translated stream of one upstream turn, as `StreamTranslator` makes it."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {"id": "msg_1", "usage": {"input_tokens": 1, "output_tokens": 1}},
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(blocks):
        start = {k: v for k, v in block.items() if k not in ("text", "input")}
        if block["type"] == "text":
            start["text"] = ""
        else:
            start["input"] = {}
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if block["type"] == "text":
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    usage = {"input_tokens": 10, "output_tokens": output, "cache_read_input_tokens": 0}
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage,
        }
    )
    events.append({"type": "message_stop"})
    return events


def _call(query: str, call_id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "web_search", "input": {"query": query}}


def test_turns_join_into_one_message() -> None:
    turns = SearchTurns(ws.SearchTool())
    sent: list[dict[str, Any]] = []
    for event in _turn({"type": "text", "text": "Looking."}, _call("tokyo"), stop="tool_use"):
        sent += turns.feed(event)
    assert turns.searching and turns.continues
    ((search, query),) = turns.queries()
    assert query == "tokyo" and search.id == "srvtoolu_1"
    sent += turns.searched([(search, [ws.Result("https://t.example", "T", "big")])])
    turns.next_turn()
    for event in _turn({"type": "text", "text": "Big."}, output=7):
        sent += turns.feed(event)
    assert not turns.searching
    sent += turns.finish()
    kinds = [e["type"] for e in sent]
    assert kinds.count("message_start") == 1 and kinds.count("message_delta") == 1
    starts = [e for e in sent if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == [0, 1, 2, 3]
    assert [e["content_block"]["type"] for e in starts] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert starts[1]["content_block"]["id"] == starts[2]["content_block"]["tool_use_id"]
    final = sent[-2]
    assert final["usage"]["output_tokens"] == 12 and final["usage"]["input_tokens"] == 20
    assert final["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert final["delta"]["stop_reason"] == "end_turn"
    assert check_stream(sent) == []
    continued = turns.continuation()["content"]
    assert continued[1]["input"] == {"query": "tokyo"}


def test_max_uses_gives_the_error_code_without_searching() -> None:
    turns = SearchTurns(ws.SearchTool(max_uses=1))
    for event in _turn(_call("aa", "toolu_a"), _call("bb", "toolu_b"), stop="tool_use"):
        turns.feed(event)
    (first, query), (second, refused) = turns.queries()
    assert query == "aa"
    assert isinstance(refused, ws.SearchFailed) and refused.code == "max_uses_exceeded"
    events = turns.searched([(first, []), (second, refused)])
    assert events[2]["content_block"]["content"] == {
        "type": "web_search_tool_result_error",
        "error_code": "max_uses_exceeded",
    }
    # The model reads why; the client's block has only the code.
    assert "limit of 1 searches" in json.dumps(turns.continuation())
    assert turns.searches == 1


def test_turn_cap_ends_with_pause_turn() -> None:
    turns = SearchTurns(ws.SearchTool(), max_turns=1)
    for event in _turn(_call("a"), stop="tool_use"):
        turns.feed(event)
    assert not turns.searching
    assert turns.finish()[0]["delta"]["stop_reason"] == "pause_turn"


def test_a_client_tool_beside_a_search_ends_with_tool_use() -> None:
    turns = SearchTurns(ws.SearchTool())
    bash = {"type": "tool_use", "id": "toolu_2", "name": "bash", "input": {"command": "ls"}}
    for event in _turn(_call("a"), bash, stop="tool_use"):
        turns.feed(event)
    ((search, _),) = turns.queries()
    turns.searched([(search, [])])
    assert not turns.continues
    assert turns.finish()[0]["delta"]["stop_reason"] == "tool_use"


# -- configuration ------------------------------------------------------------------------


def test_config_table_keys_and_secrets(tmp_path: Any) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[web_search]\nbackend = "brave"\napi_key_env = "BRAVE_KEY"\n')
    settings = load_settings(
        config_path=path, env={"BRAVE_KEY": "brv-secret-0123456789"}, dotenv_path=None
    )
    assert settings.web_search is not None and settings.web_search.backend == "brave"
    assert "brv-secret-0123456789" in settings.secrets()
    assert "brv-secret-0123456789" not in json.dumps(settings.public())
    with pytest.raises(ConfigError, match=r"web_search\.api_key_env: BRAVE_KEY is not set"):
        load_settings(config_path=path, env={}, dotenv_path=None)
    path.write_text('[web_search]\nbackend = "searxng"\n')
    with pytest.raises(ConfigError, match="needs `url`"):
        load_settings(config_path=path, env={}, dotenv_path=None)
    path.write_text('[web_search]\nbackend = "searxng"\nurll = "http://x"\n')
    with pytest.raises(ConfigError, match="did you mean 'url'"):
        load_settings(config_path=path, env={}, dotenv_path=None)


# -- backends, against a real loopback server ----------------------------------------------


def _search(
    settings: WebSearchSettings | None, query: str = "tokyo", tool: ws.SearchTool | None = None
) -> list[ws.Result] | ws.SearchFailed:
    async def run() -> list[ws.Result] | ws.SearchFailed:
        searcher = Searcher(settings)
        try:
            return await searcher.search(query, tool or ws.SearchTool())
        except ws.SearchFailed as failed:
            return failed
        finally:
            await searcher.aclose()

    return asyncio.run(run())


def test_searxng_backend(second_upstream: FakeUpstream) -> None:
    second_upstream.reply(JSONReply(searxng_answer("https://a.example/1", "https://b.example/2")))
    settings = WebSearchSettings(backend="searxng", url=second_upstream.base_url, max_results=1)
    found = _search(settings, tool=ws.SearchTool(blocked_domains=("b.example",)))
    assert found == [
        ws.Result(
            "https://a.example/1",
            "Title 1",
            "Snippet 1 about https://a.example/1",
            "2026-11-30T00:00:00",
        )
    ]
    sent = second_upstream.last
    assert sent.method == "GET" and sent.path.endswith("/search")
    assert "format=json" in sent.target and "-site%3Ab.example" in sent.target


@pytest.mark.parametrize(
    ("backend", "answer", "key_header"),
    [
        (
            "brave",
            {
                "web": {
                    "results": [
                        {
                            "url": "https://a.example",
                            "title": "A",
                            "description": "d",
                            "page_age": "2026-01-01",
                        }
                    ]
                }
            },
            "x-subscription-token",
        ),
        (
            "tavily",
            {
                "results": [
                    {
                        "url": "https://a.example",
                        "title": "A",
                        "content": "d",
                        "published_date": "2026-01-01",
                    }
                ]
            },
            "authorization",
        ),
        (
            "exa",
            {
                "results": [
                    {
                        "url": "https://a.example",
                        "title": "A",
                        "text": "d",
                        "publishedDate": "2026-01-01",
                    }
                ]
            },
            "x-api-key",
        ),
    ],
)
def test_keyed_backends(
    second_upstream: FakeUpstream, backend: Any, answer: dict[str, Any], key_header: str
) -> None:
    second_upstream.reply(JSONReply(answer))
    settings = WebSearchSettings(
        backend=backend, url=second_upstream.base_url + "/api", api_key="key-0123456789abcdef"
    )
    found = _search(settings, tool=ws.SearchTool(allowed_domains=("a.example",), country="DE"))
    assert found == [ws.Result("https://a.example", "A", "d", "2026-01-01")]
    sent = second_upstream.last
    assert "key-0123456789abcdef" in sent.headers[key_header]
    assert sent.path.endswith("/api")
    if backend != "brave":
        body = sent.json
        assert "a.example" in json.dumps(body)
    else:
        assert "country=de" in sent.target


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (JSONReply({"error": "slow down"}, status=429), "too_many_requests"),
        (JSONReply({"error": "bad"}, status=400), "invalid_tool_input"),
        (RawReply(b"<html>forbidden</html>", status=403), "unavailable"),
        (RawReply(b"not json"), "unavailable"),
        (
            JSONReply({}, status=302, headers={"location": "http://elsewhere.example/"}),
            "unavailable",
        ),
    ],
)
def test_backend_failures_become_error_codes(
    second_upstream: FakeUpstream, reply: Any, code: str
) -> None:
    second_upstream.reply(reply)
    failed = _search(WebSearchSettings(backend="searxng", url=second_upstream.base_url))
    assert isinstance(failed, ws.SearchFailed) and failed.code == code
    assert len(second_upstream.requests) == 1  # never a redirect followed


def test_no_backend_says_what_to_configure() -> None:
    failed = _search(None)
    assert isinstance(failed, ws.SearchFailed) and failed.code == "unavailable"
    assert failed.detail == NOT_CONFIGURED and "[web_search]" in NOT_CONFIGURED


def test_settings_without_table_have_no_backend() -> None:
    assert Settings().web_search is None


# -- end to end: the anthropic SDK, claude-bridge, a scripted upstream, a fake SearXNG ------

ANSWER = "Tokyo has about 14 million people [1]."


def scripted_model(request: RecordedRequest, cost: float | None = None) -> Reply:
    """Calls `web_search` until the last message is its output, then answers; streamed when
    asked to. `cost`: each turn's, in its usage (as OpenRouter reports it)."""
    body = request.json
    last = body["messages"][-1]
    stream = body.get("stream", False)
    if last["role"] == "tool":
        usage = openai_usage(cost=cost)
        if stream:
            return SSEReply(
                text_stream(["Tokyo has about ", "14 million people [1]."], usage=usage)
            )
        return JSONReply(completion(ANSWER, usage=usage))
    call = tool_call("call_ws1", "web_search", {"query": "tokyo population"})
    if stream:
        fragment = {"index": 0, **call}
        return SSEReply(
            [
                chunk({"role": "assistant", "content": "Let me check."}),
                chunk({"tool_calls": [fragment]}),
                chunk(finish_reason="tool_calls"),
                chunk(usage=openai_usage(100, 10, cost=cost), choices=False),
                DONE,
            ]
        )
    return JSONReply(
        completion(
            "Let me check.",
            tool_calls=[call],
            finish_reason="tool_calls",
            usage=openai_usage(100, 10, cost=cost),
        )
    )


@pytest.fixture
def search_bridge(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> Bridge:
    upstream.always(scripted_model)
    second_upstream.always(
        JSONReply(searxng_answer("https://tokyo.example/pop", "https://b.example/x"))
    )
    return make_bridge(web_search={"backend": "searxng", "url": second_upstream.base_url})


def ask(client: anthropic.Anthropic, stream: bool, **tool: Any) -> Any:
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "tools": [{**SEARCH_TOOL, **tool}],
        "messages": [{"role": "user", "content": "How many people live in Tokyo?"}],
    }
    if not stream:
        return client.messages.create(**params)
    with client.messages.stream(**params) as events:
        seen = [event.type for event in events]
        message = events.get_final_message()
    assert seen.count("message_start") == 1 and seen[-1] == "message_stop"
    return message


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_sdk_sees_one_message_with_the_search(
    search_bridge: Bridge,
    upstream: FakeUpstream,
    second_upstream: FakeUpstream,
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="claude_bridge.websearch")
    with make_client(search_bridge) as client:
        message = ask(client, stream)
    kinds = (TextBlock, ServerToolUseBlock, WebSearchToolResultBlock, TextBlock)
    assert len(message.content) == len(kinds)
    assert all(isinstance(b, kind) for b, kind in zip(message.content, kinds, strict=True))
    use, result = message.content[1], message.content[2]
    assert use.name == "web_search" and use.input == {"query": "tokyo population"}
    assert use.id.startswith("srvtoolu_") and result.tool_use_id == use.id
    assert isinstance(result.content, list) and len(result.content) == 2
    first = result.content[0]
    assert (first.url, first.title, first.page_age) == (
        "https://tokyo.example/pop",
        "Title 1",
        "2026-11-30T00:00:00",
    )
    assert ws.decode_content(first.encrypted_content) is not None
    assert message.content[-1].text == ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 1
    assert message.usage.input_tokens == 112 and message.usage.output_tokens == 15  # both turns
    # The second upstream turn had the call and its output; the search went to the backend.
    second = upstream.requests[-1].json["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "web_search"
    assert "[1] Title 1\nURL: https://tokyo.example/pop" in second[-1]["content"]
    assert "q=tokyo+population" in second_upstream.last.target
    assert any(r.getMessage().startswith("web search: 2 results") for r in caplog.records)


def test_history_goes_back_to_the_model(search_bridge: Bridge, upstream: FakeUpstream) -> None:
    with make_client(search_bridge) as client:
        message = ask(client, stream=False)
        upstream.always(JSONReply(completion("You're welcome.")))
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=100,
            tools=[SEARCH_TOOL],
            messages=[
                {"role": "user", "content": "How many people live in Tokyo?"},
                {"role": "assistant", "content": message.content},
                {"role": "user", "content": "Thanks"},
            ],
        )
    sent = upstream.last.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert "Snippet 1 about https://tokyo.example/pop" in sent[2]["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_backend_failure_is_an_error_block(
    search_bridge: Bridge, second_upstream: FakeUpstream, stream: bool
) -> None:
    second_upstream.always(JSONReply({"error": "busy"}, status=429))
    with make_client(search_bridge) as client:
        message = ask(client, stream)
    result = message.content[2]
    assert isinstance(result, WebSearchToolResultBlock)
    assert result.content.error_code == "too_many_requests"
    assert message.content[-1].text == ANSWER
    assert message.usage.server_tool_use.web_search_requests == 0


def test_domain_filters_reach_the_backend_and_the_results(
    search_bridge: Bridge, second_upstream: FakeUpstream
) -> None:
    with make_client(search_bridge) as client:
        message = ask(client, stream=False, allowed_domains=["tokyo.example"])
    assert [r.url for r in message.content[2].content] == ["https://tokyo.example/pop"]
    assert "site%3Atokyo.example" in second_upstream.last.target


def test_max_uses_exceeded(search_bridge: Bridge, upstream: FakeUpstream) -> None:
    def always_search(request: RecordedRequest) -> Reply:
        calls = sum(1 for m in request.json["messages"] if m["role"] == "tool")
        if calls >= 2:
            return JSONReply(completion("Done."))
        call = tool_call(f"call_{calls}", "web_search", {"query": f"query {calls}"})
        return JSONReply(completion(None, tool_calls=[call], finish_reason="tool_calls"))

    upstream.always(always_search)
    with make_client(search_bridge) as client:
        message = ask(client, stream=False, max_uses=1)
    results = [b for b in message.content if isinstance(b, WebSearchToolResultBlock)]
    assert isinstance(results[0].content, list)
    assert results[1].content.error_code == "max_uses_exceeded"
    assert message.usage.server_tool_use.web_search_requests == 1
    assert "limit of 1 searches" in upstream.last.json["messages"][-1]["content"]


def test_bad_tool_is_a_400_that_never_reaches_the_upstream(
    search_bridge: Bridge, upstream: FakeUpstream
) -> None:
    with (
        make_client(search_bridge) as client,
        pytest.raises(anthropic.BadRequestError, match="cannot both be set"),
    ):
        ask(client, stream=False, allowed_domains=["a.example"], blocked_domains=["b.example"])
    assert not upstream.requests


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_no_backend_tells_claude_code_what_to_configure(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, stream: bool
) -> None:
    bridge = make_bridge()
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
        "messages": [{"role": "user", "content": "Perform a web search for the query: tokyo"}],
    }
    with make_client(bridge) as client:
        if stream:
            with client.messages.stream(**params) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(**params)
    use, result, text = message.content
    assert isinstance(use, ServerToolUseBlock) and use.input == {"query": "tokyo"}
    assert (
        isinstance(result, WebSearchToolResultBlock) and result.content.error_code == "unavailable"
    )
    assert "[web_search]" in text.text and "backend" in text.text
    assert not upstream.requests  # nothing to ask the model


def test_no_backend_tells_the_model_otherwise(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    upstream.always(scripted_model)
    bridge = make_bridge()
    with make_client(bridge) as client:
        message = ask(client, stream=False)
    assert message.content[2].content.error_code == "unavailable"
    told = upstream.last.json["messages"][-1]["content"]
    assert "failed (unavailable)" in told and "[web_search]" in told


def test_stream_is_clean_and_pings_while_searching(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    """One stream: a clean event sequence by the protocol checker, and pings while the backend
    is still searching (it answers only once the client has seen one)."""
    released = threading.Event()

    def slow_backend(request: RecordedRequest) -> Reply:
        released.wait(CLIENT_TIMEOUT)
        return JSONReply(searxng_answer("https://tokyo.example/pop"))

    upstream.always(scripted_model)
    second_upstream.always(slow_backend)
    bridge = make_bridge(
        web_search={"backend": "searxng", "url": second_upstream.base_url}, ping_interval=0.05
    )
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "stream": True,
        "tools": [SEARCH_TOOL],
        "messages": [{"role": "user", "content": "How many people live in Tokyo?"}],
    }
    raw = b""
    events: list[dict[str, Any]] = []
    with make_http(bridge) as http, http.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 200
        decoder = SSEDecoder()
        for piece in response.iter_bytes():
            raw += piece
            for sse in decoder.decode(piece):
                events.append(json.loads(sse.data))
                searching = any(
                    e.get("content_block", {}).get("type") == "server_tool_use" for e in events
                )
                if searching and events[-1]["type"] == "ping":
                    released.set()
    assert released.is_set()
    assert check_wire(raw) == []
    assert [e["type"] for e in events].count("message_start") == 1
    final = [e for e in events if e["type"] == "message_delta"]
    assert len(final) == 1 and final[0]["usage"]["server_tool_use"]["web_search_requests"] == 1


def ask_once(settings: Settings, stream: bool, **app: Any) -> Any:
    """`ask` on a bridge of its own, made with `create_app(settings, **app)`."""
    bridge = start_bridge(settings, create_app(settings, **app))
    try:
        with make_client(bridge) as client:
            return ask(client, stream)
    finally:
        bridge.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_journal_has_every_turn_and_upstream_replay_answers_the_searches(
    upstream: FakeUpstream, second_upstream: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    upstream.always(scripted_model)
    second_upstream.always(JSONReply(searxng_answer("https://tokyo.example/pop")))
    settings = bridge_settings(
        upstream.base_url,
        record_dir=str(tmp_path / "journal"),
        web_search={"backend": "searxng", "url": second_upstream.base_url},
    )
    recorder = Recorder.from_settings(settings)
    first = ask_once(settings, stream, recorder=recorder)
    (record,) = load(recorder.path).records
    assert len(record.turns) == 1 and record.upstream is not None
    assert record.turns[0].request.body["messages"][-1]["role"] == "user"
    assert record.upstream.request.body["messages"][-1]["role"] == "tool"
    assert record.usage.input_tokens == 112
    # No upstream, no backend, no key: the journal answers both turns and the search.
    upstream.reset()
    second_upstream.reset()
    replayed = bridge_settings(upstream.base_url, openai_api_key=None)
    transport = ReplayTransport(load(recorder.path).records)
    again = ask_once(replayed, stream, transport=transport)
    assert not upstream.requests and not second_upstream.requests
    assert transport.hits == 2 and transport.misses == 0
    assert again.content[2].model_dump() == first.content[2].model_dump()
    assert again.content[-1].text == ANSWER


def test_upstream_annotations_become_citations(
    search_bridge: Bridge, upstream: FakeUpstream
) -> None:
    """A final answer with `url_citation` annotations (OpenRouter, the search models): the cited
    span is a text block of its own with a `web_search_result_location` citation."""
    cited = "14 million people"
    start = ANSWER.index(cited)

    def citing(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1]["role"] != "tool":
            return scripted_model(request)
        body = completion(ANSWER)
        body["choices"][0]["message"]["annotations"] = [
            {
                "type": "url_citation",
                "url_citation": {
                    "url": "https://tokyo.example/pop",
                    "title": "Title 1",
                    "start_index": start,
                    "end_index": start + len(cited),
                },
            }
        ]
        return JSONReply(body)

    upstream.always(citing)
    with make_client(search_bridge) as client:
        message = ask(client, stream=False)
    texts = [b for b in message.content[3:] if isinstance(b, TextBlock)]
    assert "".join(t.text for t in texts) == ANSWER
    (quoted,) = [t for t in texts if t.citations]
    (citation,) = quoted.citations
    assert isinstance(citation, CitationsWebSearchResultLocation)
    assert (citation.url, citation.title, citation.cited_text) == (
        "https://tokyo.example/pop",
        "Title 1",
        cited,
    )
    assert quoted.text == cited and citation.encrypted_index


def test_searches_show_in_the_request_line_and_json_logs() -> None:
    exchange = Exchange(id="req_1", route="/v1/messages", status=200, stop_reason="end_turn")
    exchange.searches, exchange.search_failures = 2, 1
    assert "end_turn (2 web searches, 1 failed)" in exchange_line(exchange).plain
    fields = exchange_record("finish", exchange)
    assert (fields["web_searches"], fields["web_search_failures"]) == (2, 1)
    assert result_piece(exchange) == ("end_turn (2 web searches, 1 failed)", "")


RESPONSES_SEARCHED = Path(__file__).parent / "data/openai_responses/stream"
SEARCHED_STREAM = RESPONSES_SEARCHED / "text_only_in_done_with_unknown_events.responses.sse"


def test_upstream_backend_shows_the_responses_apis_own_search(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """`backend = "upstream"` on the Responses API: its `web_search` tool is asked for, and the
    search it ran (a `web_search_call` item) reaches the client as the API's blocks."""
    upstream.always(SSEReply([SEARCHED_STREAM.read_text()]))
    bridge = make_bridge(mode="responses", web_search={"backend": "upstream"})
    with make_client(bridge) as client:
        message = ask(client, stream=True, allowed_domains=["example.org"])
    sent = upstream.last.json
    assert {"type": "web_search", "filters": {"allowed_domains": ["example.org"]}} in sent["tools"]
    assert "web_search_call.action.sources" in sent["include"]
    use, result, text = message.content
    assert isinstance(use, ServerToolUseBlock) and use.input == {"query": "tokyo population"}
    assert isinstance(result, WebSearchToolResultBlock) and result.tool_use_id == use.id
    assert text.text == "About 14 million people live in Tokyo."
    assert message.usage.server_tool_use.web_search_requests == 1
    assert len(upstream.requests) == 1  # the proxy ran no search and asked no second turn


def test_upstream_searches_wait_for_an_open_block() -> None:
    turns = SearchTurns(ws.SearchTool())
    events = _turn({"type": "text", "text": "Hi"})
    sent = [out for event in events[:3] for out in turns.feed(event)]  # the text block is open
    assert (
        turns.upstream_search({"id": "ws_1", "status": "completed", "action": {"query": "q"}}) == []
    )
    sent += [out for event in events[3:] for out in turns.feed(event)]
    assert check_stream(sent + turns.finish()) == []
    kinds = [e["content_block"]["type"] for e in sent if e["type"] == "content_block_start"]
    assert kinds == ["text", "server_tool_use", "web_search_tool_result"]


def test_a_broken_search_is_an_error_block_too(
    search_bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Searcher, query: str, tool: ws.SearchTool) -> list[ws.Result]:
        raise RuntimeError("bug")

    monkeypatch.setattr(Searcher, "search", broken)
    with make_client(search_bridge) as client:
        message = ask(client, stream=True)
    assert message.content[2].content.error_code == "unavailable"
    assert message.content[-1].text == ANSWER


FIXTURES = Path(__file__).parent.parent.parent / "shared/fixtures/anthropic"


def test_claude_codes_captured_side_request() -> None:
    """Claude Code 2.1.332's real WebSearch side request (PROTOCOL.md 12.2), when present."""
    path = FIXTURES / "cc_2.1.332_websearch_side.request.json"
    if not path.exists():
        pytest.skip("shared fixtures not present")
    body = json.loads(path.read_text())["body"]
    request = parse_body(json.dumps(body).encode(), MessagesRequest)
    assert ws.side_request_query(request) == "tokyo population 2026"
    tool = ws.search_tool(request.tools or [])
    assert tool is not None and tool.max_uses == 8
    chat = translate_request(request, RequestOptions(model="m"))
    assert [t["function"]["name"] for t in chat.body["tools"]] == ["web_search"]
    assert chat.body["tool_choice"] == "auto"


# -- failover: the first turn along the chain, the later ones on the target that answered ----

SECOND_KEY = "sk-second-upstream-0123456789"
POOL = ["sk-pool-key-one-000000", "sk-pool-key-two-000000"]


def model_and_backend(
    model: Callable[[RecordedRequest], Reply],
) -> Callable[[RecordedRequest], Reply]:
    """One fake server as both a model and a SearXNG instance (its `/search`)."""

    def serve(request: RecordedRequest) -> Reply:
        if request.path.endswith("/search"):
            return JSONReply(searxng_answer("https://tokyo.example/pop"))
        return model(request)

    return serve


def model_requests(server: FakeUpstream) -> list[RecordedRequest]:
    return [r for r in server.requests if not r.path.endswith("/search")]


SearchChain = tuple[Bridge, "queue.Queue[Exchange]"]


@pytest.fixture
def make_search_chain(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> Iterator[Callable[..., SearchChain]]:
    """A bridge whose big model is `m-first` on `upstream`, then `m-second` on `second` (unless
    told otherwise), searching with the SearXNG on `second`; and the exchanges it finishes."""
    started: list[Bridge] = []

    def make(
        second: dict[str, Any] | None = None,
        big_model: tuple[str, ...] = ("m-first", "second:m-second"),
    ) -> SearchChain:
        settings = bridge_settings(
            upstream.base_url,
            upstreams={"second": {"base_url": second_upstream.base_url, **(second or {})}},
            big_model=list(big_model),
            web_search={"backend": "searxng", "url": second_upstream.base_url},
        )
        bus = Bus()
        finished: queue.Queue[Exchange] = queue.Queue()
        bus.subscribe(lambda kind, exchange: finished.put(exchange) if kind == "finish" else None)
        bridge = start_bridge(settings, create_app(settings, bus=bus))
        started.append(bridge)
        return bridge, finished

    yield make
    for bridge in started:
        bridge.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_searching_answer_fails_over_before_its_first_byte(
    make_search_chain: Callable[..., SearchChain],
    upstream: FakeUpstream,
    second_upstream: FakeUpstream,
    stream: bool,
) -> None:
    """The first target answers 429: the answer's first turn goes to the second target (its
    key, its model) through the failover loop, and its later turn stays there. The attempts
    are recorded; the cost the upstream reported is both turns'."""
    upstream.always(rate_limited("7"))
    second_upstream.always(model_and_backend(lambda request: scripted_model(request, cost=0.25)))
    bridge, finished = make_search_chain(second={"api_key": SECOND_KEY})
    with make_client(bridge) as client:
        message = ask(client, stream)
    kinds = (TextBlock, ServerToolUseBlock, WebSearchToolResultBlock, TextBlock)
    assert all(isinstance(b, kind) for b, kind in zip(message.content, kinds, strict=True))
    assert message.content[-1].text == ANSWER
    assert message.usage.server_tool_use.web_search_requests == 1
    assert [r.json["model"] for r in upstream.requests] == ["m-first"]
    turns = model_requests(second_upstream)
    assert [t.json["model"] for t in turns] == ["m-second", "m-second"]
    assert {t.headers["authorization"] for t in turns} == {f"Bearer {SECOND_KEY}"}
    done = finished.get(timeout=CLIENT_TIMEOUT)
    assert (done.upstream, done.upstream_model, done.status) == ("second", "m-second", 200)
    assert [(a.upstream, a.outcome, a.status) for a in done.attempts] == [
        (DEFAULT_UPSTREAM, "failed", 429),
        ("second", "ok", None),
    ]
    assert done.upstream_cost == 0.5 and done.input_tokens == 112


def test_a_later_turn_tries_its_targets_other_keys_never_another_target(
    make_search_chain: Callable[..., SearchChain],
    upstream: FakeUpstream,
    second_upstream: FakeUpstream,
) -> None:
    limited: list[RecordedRequest] = []

    def later_turn_limited_once(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1]["role"] == "tool" and not limited:
            limited.append(request)
            return rate_limited()
        return scripted_model(request)

    second_upstream.always(model_and_backend(later_turn_limited_once))
    upstream.always(JSONReply(completion("never asked")))
    bridge, finished = make_search_chain(
        second={"api_keys": POOL}, big_model=("second:m-second", "m-first")
    )
    with make_client(bridge) as client:
        assert ask(client, stream=False).content[-1].text == ANSWER
    _, refused, served = model_requests(second_upstream)
    assert refused.headers["authorization"] != served.headers["authorization"]
    done = finished.get(timeout=CLIENT_TIMEOUT)
    assert [(a.upstream, a.outcome, a.status) for a in done.attempts] == [
        ("second", "ok", None),  # the first turn
        ("second", "failed", 429),  # the later turn, on the other key next
        ("second", "ok", None),
    ]

    # The later turn's upstream is down: the message ends with an `error` event; the chain's
    # next target is never asked for the rest of a message another model began.
    def later_turn_down(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1]["role"] == "tool":
            return JSONReply(error_body("upstream down", "server_error"), 503)
        return scripted_model(request)

    second_upstream.always(model_and_backend(later_turn_down))
    with make_client(bridge) as client, pytest.raises(anthropic.APIStatusError) as raised:
        ask(client, stream=True)
    assert raised.value.status_code == 200  # committed: the failure is the `error` event
    assert upstream.requests == []


def test_a_searching_answer_reads_the_clients_body_once(
    search_bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from claude_bridge.proxy import plan

    reads: list[bytes] = []
    parse_object = plan.parse_object

    def counted(raw: bytes) -> dict[str, Any]:
        reads.append(raw)
        return parse_object(raw)

    monkeypatch.setattr(plan, "parse_object", counted)
    with make_client(search_bridge) as client:
        assert ask(client, stream=False).content[-1].text == ANSWER
    assert len(reads) == 1  # two upstream turns planned from one reading


# -- streamed citations ----------------------------------------------------------------------

CITED = "14 million people"
CITED_AT = ANSWER.index(CITED)


def test_streamed_citations_go_to_the_open_text_block_once_their_text_is_sent() -> None:
    turns = SearchTurns(ws.SearchTool())
    start, *_ = _turn({"type": "text", "text": ""})
    opened = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }

    def text(part: str) -> dict[str, Any]:
        return {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": part},
        }

    span = (CITED_AT, CITED_AT + len(CITED), "https://tokyo.example/pop", "T")
    sent = turns.feed(start) + turns.feed(opened) + turns.feed(text(ANSWER[:20]))
    assert turns.cite([span]) == []  # its text is not all sent yet
    sent += turns.feed(text(ANSWER[20:]))
    assert sent[-1]["delta"]["type"] == "citations_delta"
    assert sent[-1]["delta"]["citation"]["cited_text"] == CITED
    assert turns.cite([span]) == []  # upstreams repeat them: once is enough
    sent += turns.cite([(0, 5, "https://tokyo.example/a", None)])  # sent already: at once
    assert sent[-1]["delta"]["citation"]["cited_text"] == "Tokyo"
    sent += turns.cite([(0, 999, "https://beyond.example", None)])  # waits for text to come
    sent += turns.feed({"type": "content_block_stop", "index": 0})
    sent += [out for event in _turn()[2:] for out in turns.feed(event)] + turns.finish()
    assert check_stream(sent) == []
    assert [c["url"] for c in turns.content[0]["citations"]] == [
        "https://tokyo.example/pop",
        "https://tokyo.example/a",
    ]


def citing_model(request: RecordedRequest) -> Reply:
    """`scripted_model`, its answer citing the first result (OpenRouter's annotations, after
    the text they cite, with the finish chunk)."""
    if request.json["messages"][-1]["role"] != "tool":
        return scripted_model(request)
    cited = {
        "url": "https://tokyo.example/pop",
        "title": "Title 1",
        "start_index": CITED_AT,
        "end_index": CITED_AT + len(CITED),
    }
    annotations = [{"type": "url_citation", "url_citation": cited}]
    if not request.json.get("stream"):
        body = completion(ANSWER)
        body["choices"][0]["message"]["annotations"] = annotations
        return JSONReply(body)
    return SSEReply(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": ANSWER[:20]}),
            chunk({"content": ANSWER[20:]}),
            chunk({"annotations": annotations}, finish_reason="stop"),
            chunk(usage=openai_usage(), choices=False),
            DONE,
        ]
    )


def test_streamed_annotations_become_citations(
    search_bridge: Bridge, upstream: FakeUpstream
) -> None:
    """Streamed, the cited span cannot be a block of its own (its text went out before the
    annotation came): the block holding it carries the citation, the same one the whole answer
    gives."""
    upstream.always(citing_model)
    with make_client(search_bridge) as client:
        streamed = ask(client, stream=True)
        whole = ask(client, stream=False)
    answer = streamed.content[-1]
    assert isinstance(answer, TextBlock) and answer.text == ANSWER
    (citation,) = answer.citations or []
    assert isinstance(citation, CitationsWebSearchResultLocation)
    assert (citation.url, citation.title, citation.cited_text) == (
        "https://tokyo.example/pop",
        "Title 1",
        CITED,
    )
    (quoted,) = [b for b in whole.content if isinstance(b, TextBlock) and b.citations]
    assert quoted.citations == [citation]


def test_a_real_responses_stream_cites_its_source(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    """OpenAI's captured web search stream (`response.output_text.annotation.added` right
    after the text it cites), when the shared fixtures are present."""
    path = FIXTURES.parent / "openai_responses/real_gpt41_web_search_stream.sse"
    if not path.exists():
        pytest.skip("shared fixtures not present")
    upstream.always(SSEReply([path.read_text()]))
    bridge = make_bridge(mode="responses", web_search={"backend": "upstream"})
    with make_client(bridge) as client:
        message = ask(client, stream=True)
    use, result, text = message.content
    assert isinstance(use, ServerToolUseBlock) and isinstance(result, WebSearchToolResultBlock)
    assert isinstance(text, TextBlock)
    (citation,) = text.citations or []
    assert isinstance(citation, CitationsWebSearchResultLocation)
    assert citation.cited_text == text.text[239:333]
    assert citation.url.startswith("https://www.toukei.metro.tokyo.lg.jp/")
