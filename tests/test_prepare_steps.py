"""A big client body is prepared in steps with the event loop free between them, so that the
streams of other requests get their chunks meanwhile (issue 18's head-of-line figure); a small
one is prepared in one go (a loop turn costs more than its whole preparation)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import bridge_settings

from claude_bridge.proxy import pipeline as pipeline_module
from claude_bridge.proxy import upstream as upstream_module
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.tokenizer import count_text


def body(text_bytes: int) -> bytes:
    message = {"role": "user", "content": "x" * text_bytes}
    return json.dumps(
        {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [message]}
    ).encode()


@pytest.mark.parametrize(
    ("size", "first"), [(1_000, "plan"), (pipeline_module.STEP_BYTES + 1, "other request")]
)
def test_what_runs_before_planning(size: int, first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = bridge_settings("http://127.0.0.1:9/v1")
    pipeline = pipeline_module.Pipeline(
        settings, upstream_module.Upstreams(settings), Bus(), encoder=lambda: count_text
    )
    order: list[str] = []
    planned = pipeline_module.plan

    def plan(*args: Any, **kwargs: Any) -> Any:
        order.append("plan")
        return planned(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "plan", plan)

    async def prepare() -> None:
        # Ready to run before the preparation starts: it runs at the first loop turn.
        asyncio.get_running_loop().call_soon(order.append, "other request")
        await pipeline.prepare(body(size), Exchange(id="req_steps", route="messages"), {})

    asyncio.run(prepare())
    assert order[0] == first
