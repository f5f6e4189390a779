"""`GET /metrics`: scraped after a scripted load over real loopback servers (the `anthropic`
SDK as the client), read back with prometheus-client's own parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import CLIENT_TIMEOUT, Bridge, make_client
from prometheus_client.parser import text_string_to_metric_families
from upstream import (
    FakeUpstream,
    JSONReply,
    Pause,
    SSEReply,
    chunk,
    completion,
    error_body,
    openai_usage,
    text_stream,
)

from claude_bridge.proxy import metrics as metrics_module
from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.metrics import OTHER, Metrics
from claude_bridge.proxy.pricing import Cost

TOKEN = "bridge-token-0123456789"
PRICES = {"big-model": {"input": 3.0, "output": 15.0, "cache_read": 0.3}}
HI = [{"role": "user", "content": "Hi"}]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(bridge: Bridge, key: str | None = TOKEN) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.get(bridge.url + "/metrics", headers=headers, timeout=CLIENT_TIMEOUT)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def test_metrics_count_a_scripted_load(
    make_bridge: Callable[..., Bridge], upstream: FakeUpstream
) -> None:
    bridge = make_bridge(auth_token=TOKEN, prices=PRICES, ping_interval=0.05)
    usage = openai_usage(1000, 50, cached=200)
    upstream.reply(
        *[SSEReply(text_stream(["Hel", "lo"], usage=usage)) for _ in range(3)],
        JSONReply(completion("ok", usage=openai_usage(300, 7))),
        JSONReply(completion("ok", usage=openai_usage(300, 7))),
        JSONReply(error_body("slow down", "rate_limit_error"), status=429),
        # Silent long enough for pings, whatever the machine's speed.
        SSEReply([chunk({"role": "assistant", "content": ""}), Pause(0.4), *text_stream(["!"])]),
    )
    with make_client(bridge, api_key=TOKEN) as sdk:
        for _ in range(3):
            with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=HI) as s:
                s.until_done()
        for _ in range(2):
            sdk.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=HI)
        with pytest.raises(Exception, match="slow down"):
            sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HI)
        with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=HI) as s:
            s.until_done()
        for _ in range(2):
            sdk.messages.count_tokens(model="claude-sonnet-4-5", messages=HI)
    headers = {"x-api-key": TOKEN}
    with httpx.Client(base_url=bridge.url, headers=headers, timeout=CLIENT_TIMEOUT) as http:
        assert http.post("/v1/messages", json={"model": "m"}).status_code == 400
        bad = http.post("/v1/messages/count_tokens", json={"messages": "no"})
        assert bad.status_code == 400

    response = scrape(bridge)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    m = parse(response.text)
    big = {"upstream": "default", "model": "big-model"}
    small = {"upstream": "default", "model": "small-model"}
    assert total(m, "claude_bridge_requests_total", **big, status="200") == 4
    assert total(m, "claude_bridge_requests_total", **small, status="200") == 2
    assert total(m, "claude_bridge_requests_total", **big, status="429") == 1
    assert total(m, "claude_bridge_requests_total", upstream="none", status="400") == 1
    assert total(m, "claude_bridge_request_duration_seconds_count") == 8
    assert total(m, "claude_bridge_time_to_first_token_seconds_count", **big) == 4
    assert total(m, "claude_bridge_time_to_first_token_seconds_count", **small) == 0
    assert total(m, "claude_bridge_upstream_errors_total", type="rate_limit_error") == 1
    assert total(m, "claude_bridge_upstream_errors_total") == 1  # not the refused body
    assert total(m, "claude_bridge_requests_in_flight") == 0
    assert total(m, "claude_bridge_stream_pings_total", upstream="default") >= 1
    assert total(m, "claude_bridge_count_tokens_requests_total", status="200") == 2
    assert total(m, "claude_bridge_count_tokens_requests_total", status="400") == 1

    # Three streams of 800 new + 200 cached input and 50 output; the pinged stream's usage.
    tokens = "claude_bridge_tokens_total"
    assert total(m, tokens, **big, kind="input") == 3 * 800 + 12
    assert total(m, tokens, **big, kind="cache_read") == 3 * 200
    assert total(m, tokens, **big, kind="output") == 3 * 50 + 5
    assert total(m, tokens, **small, kind="input") == 600
    cost = (3 * (800 * 3.0 + 200 * 0.3 + 50 * 15.0) + 12 * 3.0 + 5 * 15.0) / 1e6
    assert total(m, "claude_bridge_cost_usd_total", **big, source="config") == pytest.approx(cost)
    # No price for the small model on a loopback upstream: unknown, and counted as such.
    assert total(m, "claude_bridge_cost_usd_total", **small) == 0
    assert total(m, "claude_bridge_unpriced_requests_total", **small) == 2


def test_metrics_need_the_auth_token(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge(auth_token=TOKEN)
    for key in (None, "wrong"):
        refused = scrape(bridge, key)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
    assert scrape(bridge).status_code == 200


def test_metrics_can_be_turned_off(make_bridge: Callable[..., Bridge]) -> None:
    response = scrape(make_bridge(metrics=False))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def finished(model: str, **fields: Any) -> Exchange:
    exchange = Exchange(id="req_1", route="messages", upstream="default", upstream_model=model)
    exchange.status, exchange.finished = 200, 1.0
    for name, value in fields.items():
        setattr(exchange, name, value)
    return exchange


def test_each_metrics_object_counts_alone() -> None:
    """A private registry each: two apps in one process (tests, `replay send`) never mix."""
    first, second = Metrics(), Metrics()
    first("start", finished("a"))
    first("finish", finished("a", cost=Cost(0.5, "config")))
    assert total(parse(first.exposition()[0].decode()), "claude_bridge_requests_total") == 1
    assert total(parse(second.exposition()[0].decode()), "claude_bridge_requests_total") == 0


def test_model_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without routing rules the model is the client's choice: it cannot grow the scrape."""
    monkeypatch.setattr(metrics_module, "MAX_MODELS", 5)
    metrics = Metrics()
    for n in range(5 + 50):
        metrics("finish", finished(f"model-{n}", input_tokens=1))
    samples = parse(metrics.exposition()[0].decode())
    models = {dict(labels).get("model") for name, labels in samples if "requests_total" in name}
    assert len(models) == 5 + 1 and OTHER in models
    assert total(samples, "claude_bridge_requests_total", model=OTHER) == 50
    assert total(samples, "claude_bridge_tokens_total", kind="input") == 5 + 50
