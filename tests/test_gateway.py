"""The gateway protocol Claude Code and the SDKs speak besides Messages (PROTOCOL.md 11.1, 11.4):
`GET /v1/models` and `GET /v1/models/{id}` in Anthropic's shape, the warm-up probe, and gateway
ids that route to the model they name. Real servers on loopback, the real `anthropic` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from conftest import (
    BIG_MODEL,
    CLIENT_KEY,
    SMALL_MODEL,
    Bridge,
    bridge_settings,
    make_client,
    make_http,
)
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.proxy.app import error_response
from claude_bridge.proxy.core import catalog
from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM, Route, gateway_id, gateway_route
from claude_bridge.proxy.models_api import REFRESH, ModelsApi
from claude_bridge.proxy.upstream import Upstreams
from claude_bridge.proxy.windows import Windows

HI: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hi"}]
BIG_ID = f"{BIG_MODEL}@claude-bridge"
SMALL_ID = f"{SMALL_MODEL}@claude-bridge"
LOCAL_ID = "local/qwen3-coder@claude-bridge"


@pytest.fixture
def gateway(make_bridge: Callable[..., Bridge], second_upstream: FakeUpstream) -> Bridge:
    return make_bridge(
        upstreams={"local": {"base_url": second_upstream.base_url, "api_key": "sk-local"}},
        routes=[
            {
                "pattern": "claude-sonnet-*",
                "model": "qwen3-coder",
                "upstream": "local",
                "context_window": 262144,
            },
            {"pattern": "*-mini", "model": "tiny"},
        ],
        models={BIG_MODEL: {"context_window": 131072, "max_output_tokens": 16384}},
        auth_token=CLIENT_KEY,
    )


def test_models_list_pages_with_the_sdk(gateway: Bridge, second_upstream: FakeUpstream) -> None:
    port = second_upstream.port
    with make_client(gateway) as sdk:
        everything = list(sdk.models.list(limit=1))  # the SDK follows `last_id` page by page
        first = sdk.models.list(limit=2)
        back = sdk.models.list(limit=2, before_id="tiny@claude-bridge")
    ids = [m.id for m in everything]
    # Tiers first, the big model before the small one, then the rules' other targets.
    assert ids == [BIG_ID, LOCAL_ID, SMALL_ID, "tiny@claude-bridge"]
    assert [m.id for m in first.data] == ids[:2]
    assert (first.has_more, first.first_id, first.last_id) == (True, BIG_ID, LOCAL_ID)
    assert [m.id for m in back.data] == ids[1:3] and back.has_more
    big, local, small, tiny = everything
    assert big.display_name == f"{BIG_MODEL} on 127.0.0.1:{upstream_port(gateway)}"
    assert (big.max_input_tokens, big.max_tokens) == (131072, 16384)
    assert local.display_name == f"qwen3-coder on local (127.0.0.1:{port})"
    assert local.max_input_tokens == 262144
    assert big.type == "model" and big.created_at.year == 1970 and big.lifecycle == "active"
    extra: dict[str, Any] = big.model_extra or {}
    assert "opus, fable" in extra["description"] and "sonnet" in str(local.model_extra)
    assert "haiku" in str(small.model_extra) and "rule *-mini" in str(tiny.model_extra)


def upstream_port(bridge: Bridge) -> int:
    return int(bridge.settings.openai_base_url.split(":")[2].split("/")[0])


def test_every_id_passes_claude_codes_filter_without_passing_for_claude(gateway: Bridge) -> None:
    """Claude Code keeps ids containing `claude` or `anthropic`, and gives ids starting with
    `claude-` Claude's own window (PROTOCOL.md 11.4, 11.5)."""
    with make_client(gateway) as sdk:
        ids = [m.id for m in sdk.models.list(limit=1000)]
    assert ids and all("claude" in i and not i.startswith("claude-") for i in ids)


def test_models_retrieve_and_unknown_ids(gateway: Bridge) -> None:
    with make_client(gateway) as sdk:
        local = sdk.models.retrieve(LOCAL_ID)  # its `/` is percent-encoded by the SDK
        assert local.id == LOCAL_ID
        with pytest.raises(anthropic.NotFoundError) as caught:
            sdk.models.retrieve("claude-opus-4-6")
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert caught.value.response.headers["request-id"]


def test_models_need_the_auth_token(gateway: Bridge) -> None:
    with make_client(gateway, api_key="not-the-token") as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            sdk.models.list()
        with pytest.raises(anthropic.AuthenticationError):
            sdk.models.retrieve(BIG_ID)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after_id=nope", "after_id"),
        (f"after_id={BIG_ID}&before_id={SMALL_ID}", "one cursor"),
    ],
)
def test_bad_list_parameters_are_400(gateway: Bridge, query: str, problem: str) -> None:
    with make_http(gateway) as http:
        response = http.get(f"/v1/models?{query}")
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]


def test_discovery_request_as_claude_code_sends_it(gateway: Bridge) -> None:
    """`GET /v1/models?limit=1000` with a bearer token, `?beta=true` style extras ignored."""
    headers = {
        "authorization": f"Bearer {CLIENT_KEY}",
        "anthropic-version": "2023-06-01",
        "user-agent": "claude-code/2.1.332",
    }
    response = httpx.get(f"{gateway.url}/v1/models?limit=1000&beta=true", headers=headers)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"data", "has_more", "first_id", "last_id"} and not data["has_more"]


def test_head_probes_answer_200_without_a_token(gateway: Bridge) -> None:
    for path in ("/", "/api/hello"):
        response = httpx.head(gateway.url + path)
        assert response.status_code == 200, path


def test_a_gateway_id_reaches_the_model_it_names(
    gateway: Bridge, upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    upstream.reply(JSONReply(completion("default")), JSONReply(completion("default")))
    second_upstream.reply(JSONReply(completion("local")))
    with make_client(gateway) as sdk:
        sdk.messages.create(model=LOCAL_ID, max_tokens=8, messages=HI)
        # Not a listed model, but an address all the same; the rules do not see it.
        sdk.messages.create(model="gpt-4.1-mini@claude-bridge", max_tokens=8, messages=HI)
        sdk.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
    (local,) = second_upstream.requests
    assert local.json["model"] == "qwen3-coder"
    assert [r.json["model"] for r in upstream.requests] == ["gpt-4.1-mini", SMALL_MODEL]


def test_big_models_max_output_lowers_max_tokens(gateway: Bridge, upstream: FakeUpstream) -> None:
    """Claude Code asks for 128000; the configured 16384 goes upstream, no max_tokens_cap."""
    upstream.reply(JSONReply(completion("ok")))
    with make_client(gateway) as sdk:
        sdk.messages.create(model="claude-opus-4-6", max_tokens=128000, messages=HI)
    assert upstream.requests[0].json["max_tokens"] == 16384


# -- the pure parts ---------------------------------------------------------------------------


def test_gateway_ids_round_trip() -> None:
    assert gateway_id(DEFAULT_UPSTREAM, "openai/gpt-5") == "openai/gpt-5@claude-bridge"
    # `openai` is no upstream of ours: OpenRouter's model name on the default upstream.
    openrouter = Route(DEFAULT_UPSTREAM, "openai/gpt-5")
    assert gateway_route("openai/gpt-5@claude-bridge", {"local"}) == openrouter
    assert gateway_route("local/qwen3@Claude-Bridge", {"local"}) == Route("local", "qwen3")
    assert gateway_route("@claude-bridge") is None
    assert gateway_route("claude-opus-4-6") is None


def test_pages_backwards_and_forwards() -> None:
    models = [{"id": str(n)} for n in range(5)]
    assert catalog.page(models, limit=2)["has_more"]
    last = catalog.page(models, limit=2, after_id="3")
    assert [m["id"] for m in last["data"]] == ["4"] and not last["has_more"]
    start = catalog.page(models, limit=2, before_id="1")
    assert [m["id"] for m in start["data"]] == ["0"] and not start["has_more"]
    empty = catalog.page([], limit=2)
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    with pytest.raises(InvalidRequest):
        catalog.page(models, before_id="9")


def test_the_upstreams_own_models_join_the_list_in_the_background(upstream: FakeUpstream) -> None:
    """Never awaited by a request: the first list may lack them, a later one has them."""
    upstream.models = ["upstream-only", BIG_MODEL]
    settings = bridge_settings(upstream.base_url)
    now = [0.0]

    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        upstreams = Upstreams(settings)
        api = ModelsApi(
            settings,
            Windows(settings),
            upstreams,
            authorize=lambda request: None,
            render=error_response,
            clock=lambda: now[0],
        )
        try:
            before = [m["id"] for m in await api.models()]
            assert api._listing is not None
            await api._listing
            after = await api.models()
            now[0] = REFRESH - 1  # kept, not asked again
            await api.models()
        finally:
            await api.aclose()
            await upstreams.aclose()
        return before, after

    before, after = asyncio.run(main())
    assert upstream.listings == 1
    assert before == [BIG_ID, SMALL_ID]
    assert [m["id"] for m in after] == [BIG_ID, SMALL_ID, "upstream-only@claude-bridge"]
    assert "listed by the upstream" in after[2]["description"]
