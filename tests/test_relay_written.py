"""The relay that writes a plain stream itself (`pipeline._written`, what `serve` streams with)
against the one a consumer pulls pieces from (`Pipeline._relay`: the recording tap, the search
loop): the same bytes for every golden case, and a client that takes nothing holds the
upstream back. Pings, stalls, the drain and clients that leave are the end-to-end tests' (the
server streams this way)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import bridge_settings

from claude_bridge.proxy import pipeline as pipeline_module
from claude_bridge.proxy import upstream as upstream_module
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.stream import StreamTranslator
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.tokenizer import count_text

DATA = Path(__file__).parent / "data" / "stream"
CASES = sorted(p.name.removesuffix(".openai.sse") for p in DATA.glob("*.openai.sse"))
SPLIT = 7  # bytes per upstream piece: events cut anywhere


@functools.cache
def shared_pipeline() -> pipeline_module.Pipeline:
    settings = bridge_settings("http://127.0.0.1:9/v1")
    upstreams = upstream_module.Upstreams(settings)
    return pipeline_module.Pipeline(settings, upstreams, Bus(), encoder=lambda: count_text)


def relay(chunks: AsyncIterator[bytes], written: bool) -> AsyncGenerator[bytes, Any]:
    pipeline = shared_pipeline()
    translator = StreamTranslator(ReplyContext(model="m", message_id="msg_written"))
    exchange = Exchange(id="req_written", route="messages")
    upstream = pipeline.upstreams.default
    if written:
        way = pipeline_module._Relay(
            pipeline, AsyncExitStack(), upstream, translator, exchange, True
        )
        return pipeline_module._written(way, chunks)
    return pipeline._relay(AsyncExitStack(), upstream, chunks, translator, exchange)


async def pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), SPLIT):
        await asyncio.sleep(0)
        yield body[start : start + SPLIT]


async def client_bytes(body: bytes, written: bool) -> bytes:
    """What `app.Relayed` sends of the stream, joined."""
    got: list[bytes] = []

    async def write(data: bytes) -> None:
        got.append(data)

    stream = relay(pieces(body), written)
    got.append(await anext(stream))
    try:
        data = await stream.asend(write)
        while True:
            got.append(data)
            data = await anext(stream)
    except StopAsyncIteration:
        pass
    return b"".join(got)


@pytest.mark.parametrize("case", CASES)
def test_written_and_pulled_relays_send_the_same_bytes(case: str) -> None:
    body = (DATA / f"{case}.openai.sse").read_bytes()
    pulled = asyncio.run(client_bytes(body, written=False))
    assert asyncio.run(client_bytes(body, written=True)) == pulled
    last = pulled.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith((b"event: message_stop", b"event: error")), last


def test_a_client_that_takes_nothing_holds_the_upstream_back() -> None:
    """While a write waits for the client, nothing more is read from the upstream."""
    pulled = 0
    piece = b'data: {"choices":[{"index":0,"delta":{"content":"word"}}]}\n\n'

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield piece

    async def main() -> None:
        stuck = asyncio.get_running_loop().create_future()

        async def write(data: bytes) -> None:
            await stuck  # a client that does not read

        stream = relay(endless(), written=True)
        await anext(stream)
        sending = asyncio.ensure_future(stream.asend(write))
        for _ in range(200):  # let it read all it will (no timer: loop turns)
            await asyncio.sleep(0)
        sending.cancel()  # the client leaves
        with pytest.raises(asyncio.CancelledError):
            await sending

    asyncio.run(main())
    assert pulled == 1
