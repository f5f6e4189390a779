"""Big request bodies are prepared in a worker process (proxy/offload.py) exactly as small ones
are inline: the same upstream request, the same 400, the same token count; and a worker whose
caller stops waiting is killed, one that dies is replaced.

End to end through the session's bridge on loopback (its worker starts with the first big
body), plus `Offload` itself with the jobs of tests/offload_jobs.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import Bridge
from offload_jobs import die, echo, wait_for_a_signal
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.tokens import count_request_tokens
from claude_bridge.proxy.core.validation import parse_body
from claude_bridge.proxy.models.anthropic import CountTokensRequest
from claude_bridge.proxy.offload import (
    OFFLOAD_BYTES,
    OFFLOAD_OBJECTS,
    Offload,
    WorkerFailed,
    worth_offloading,
)
from claude_bridge.proxy.plan import plan
from claude_bridge.proxy.tokenizer import count_text

MODEL = "claude-sonnet-4-6"


def big_body(**changes: Any) -> dict[str, Any]:
    """A conversation of more turns than the loop is given to prepare: for a worker."""
    turns = [
        {"role": "assistant" if n % 2 else "user", "content": f"turn {n}: some words"}
        for n in range(OFFLOAD_OBJECTS + 1)
    ]
    return {"model": MODEL, "max_tokens": 64, "messages": turns, **changes}


def encoded(body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    assert worth_offloading(raw)
    return raw


def test_a_big_body_goes_upstream_as_inline(
    bridge: Bridge, client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    body = big_body(system="Be brief.", stop_sequences=["END"])
    upstream.reply(JSONReply(completion("Hi!")))

    message = client.messages.create(**body)

    settings = bridge.settings
    inline = plan(encoded(body), settings, settings.endpoints(), {})
    assert upstream.last.json == inline.body
    assert message.content[0].type == "text" and message.content[0].text == "Hi!"
    assert message.model == MODEL


def test_a_big_invalid_body_is_the_same_400(
    bridge: Bridge, http: httpx.Client, upstream: FakeUpstream
) -> None:
    body = big_body()
    body["messages"][7]["role"] = "robot"
    settings = bridge.settings
    with pytest.raises(InvalidRequest) as inline:
        plan(encoded(body), settings, settings.endpoints(), {})

    response = http.post("/v1/messages", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {"type": "invalid_request_error", "message": inline.value.message}
    assert upstream.requests == []


def test_a_big_body_is_counted_as_inline(client: anthropic.Anthropic) -> None:
    body = big_body()
    del body["max_tokens"]

    counted = client.messages.count_tokens(**body)

    inline = count_request_tokens(parse_body(encoded(body), CountTokensRequest), count_text)
    assert counted.input_tokens == inline


def test_what_goes_to_a_worker_is_what_takes_long() -> None:
    few_big_turns = big_body(messages=[{"role": "user", "content": "word " * 200_000}])
    assert not worth_offloading(json.dumps(few_big_turns).encode())  # 1 MB, 2 objects
    assert worth_offloading(json.dumps(big_body()).encode())  # 3,001 turns
    huge = big_body(messages=[{"role": "user", "content": "word " * 2_000_000}])
    assert worth_offloading(json.dumps(huge).encode())  # 10 MB: dumped and copied, too
    at_the_limit = b"{" * OFFLOAD_OBJECTS + b" " * OFFLOAD_BYTES  # counted, never parsed
    assert not worth_offloading(at_the_limit)
    assert worth_offloading(b"{" + at_the_limit)


# -- the pool of workers ---------------------------------------------------------------------


@pytest.fixture
def jobs_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers started meanwhile can import tests/offload_jobs.py."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.getenv("PYTHONPATH")])))


def test_a_cancelled_job_kills_its_worker(jobs_importable: None) -> None:
    async def main() -> None:
        offload = Offload(workers=1)
        try:
            assert await offload.run(echo, b"abc", "warm") == (b"cba", "warm")
            (worker,) = offload._idle
            job = asyncio.create_task(offload.run(wait_for_a_signal, b""))
            await asyncio.sleep(0)  # the job is sent; the worker waits
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            assert await asyncio.to_thread(worker.process.wait) == -signal.SIGKILL
            assert await offload.run(echo, b"xyz", "again") == (b"zyx", "again")
        finally:
            await offload.aclose()

    asyncio.run(main())


def test_a_worker_that_dies_fails_its_job_only(jobs_importable: None) -> None:
    async def main() -> None:
        offload = Offload(workers=1)
        try:
            with pytest.raises(WorkerFailed) as failed:
                await offload.run(die, b"")
            assert failed.value.status == 500
            assert await offload.run(echo, b"ok", "after") == (b"ko", "after")
        finally:
            await offload.aclose()

    asyncio.run(main())
