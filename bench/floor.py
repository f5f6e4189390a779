"""The floor for a proxy on claude-bridge's stack: what any proxy built this way pays.

    python bench/floor.py --port 9300 --upstream-port 9100

A Starlette app on uvicorn (httptools, uvloop: `serve`'s server) that forwards
`POST /v1/chat/completions` to the upstream through claude-bridge's own pooled transport (an
`httpx.Request` handed to it straight, as `serve` does, without httpx's client), and does only
the work no translating proxy can skip: it parses the client's JSON body and writes it out
again, parses the upstream's answer (the JSON reply, or each SSE event of a stream) and writes
it out again. No validation, no translation, no routing, no limits, no logs, no recording, no
dashboard. `bench/agent.py` sends it the body the direct target gets and prints its figures
beside claude-bridge's: a target this proxy misses on a machine, no proxy made of these parts
meets there.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import cast

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from claude_bridge.proxy.transport import PooledTransport

EVENT_END = b"\n\n"
DATA = b"data: "


def app(upstream_port: int) -> Starlette:
    transport = PooledTransport(max_connections=100, connect_timeout=5, read_timeout=60)
    url = httpx.URL(f"http://127.0.0.1:{upstream_port}/v1/chat/completions")
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        upstream = httpx.Request("POST", url, content=orjson.dumps(body), headers=headers)
        answer = await transport.handle_async_request(upstream)
        if not body.get("stream"):
            reply = orjson.loads(await answer.aread())
            return Response(orjson.dumps(reply), answer.status_code, media_type="application/json")
        return StreamingResponse(_events(answer), media_type="text/event-stream")

    async def stats(request: Request) -> Response:
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/stats", stats),
        ]
    )


async def _events(answer: httpx.Response) -> AsyncIterator[bytes]:
    """Each SSE event parsed and written again, sent on as soon as it is whole."""
    pending = b""
    try:
        async for piece in cast(httpx.AsyncByteStream, answer.stream):
            pending += piece
            *events, pending = pending.split(EVENT_END)
            for event in events:
                data = event.removeprefix(DATA)
                if data != b"[DONE]":
                    data = orjson.dumps(orjson.loads(data))
                yield DATA + data + EVENT_END
    finally:
        await answer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app(args.upstream_port),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
