"""The `web_search` server tool on translated upstreams (issue 17, PROTOCOL.md 12).

Unit tests of the pure core (`core/web_search.py`, `core/search_turns.py`), the backends against
a real loopback server speaking their APIs, and end to end with the `anthropic` SDK.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from upstream import FakeUpstream, JSONReply, RawReply

from claude_bridge.proxy.config import ConfigError, Settings, WebSearchSettings, load_settings
from claude_bridge.proxy.core import web_search as ws
from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.core.responses.request import translate_request as translate_responses
from claude_bridge.proxy.core.search_turns import SearchTurns
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import MessagesRequest
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
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}},
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
