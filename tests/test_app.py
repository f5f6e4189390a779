"""The app's last line of defence: a bug of ours still answers in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import IN_PROCESS_URL
from starlette.testclient import TestClient

from claude_bridge.proxy import pipeline
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.events import Bus

REQUEST = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi"}],
}


def test_an_internal_error_is_an_anthropic_500_and_ends_the_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "plan", broken)
    seen: list[tuple[str, int]] = []
    bus = Bus()
    bus.subscribe(lambda kind, exchange: seen.append((kind, exchange.status)))
    app = create_app(Settings(openai_base_url="http://127.0.0.1:9/v1"), bus=bus)

    with TestClient(app, base_url=IN_PROCESS_URL, raise_server_exceptions=False) as client:
        response = client.post("/v1/messages", json=REQUEST)

    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "api_error", "message": "internal proxy error"}
    assert "a bug" not in response.text and "Traceback" not in response.text
    assert seen[-1] == ("finish", 500)
