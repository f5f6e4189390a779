"""What each upstream client stack costs the proxy per request, measured in one process.

    .venv/bin/python bench/client_stack.py [--requests 3000] [--uvloop]

Starts the canned upstream (`bench/upstream.py`) and sends it the same small chat request one
at a time through: httpx with its default transport (httpcore), httpx's client over
`proxy.transport`, an `httpx.Request` handed to `proxy.transport` directly (what the proxy
does), and aiohttp's client alone when it is installed (the transport's predecessor). Prints,
per stack, the median wall time and the CPU time of this process per request, for a JSON
answer and a 20-chunk stream (read piece by piece, as the proxy reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from claude_bridge.proxy.transport import PooledTransport

BENCH = Path(__file__).resolve().parent
SMALL = b'{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":64}'
STREAM = b'{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":20}'
HEADERS = {"content-type": "application/json", "accept": "application/json"}

Send = Callable[[bytes], Awaitable[int]]


def httpx_sender(client: httpx.AsyncClient, url: str) -> Send:
    async def send(body: bytes) -> int:
        request = client.build_request("POST", url, content=body)
        response = await client.send(request, stream=True)
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        finally:
            await response.aclose()
        return size

    return send


def transport_sender(transport: httpx.AsyncBaseTransport, url: str) -> Send:
    target = httpx.URL(url)
    timeout = {"connect": 5.0, "read": 30.0, "pool": 5.0}

    async def send(body: bytes) -> int:
        request = httpx.Request(
            "POST", target, headers=HEADERS, content=body, extensions={"timeout": timeout}
        )
        response = await transport.handle_async_request(request)
        size = 0
        try:
            async for chunk in response.stream:  # type: ignore[union-attr]
                size += len(chunk)
        finally:
            await response.aclose()
        return size

    return send


def aiohttp_sender(session: Any, url: str) -> Send:
    async def send(body: bytes) -> int:
        size = 0
        async with session.post(url, data=body, headers=HEADERS) as response:
            async for chunk in response.content.iter_any():
                size += len(chunk)
        return size

    return send


async def measure(send: Send, body: bytes, count: int) -> tuple[float, float]:
    """(median wall µs, mean CPU µs) per request, after a warm-up."""
    for _ in range(50):
        await send(body)
    walls = []
    cpu0 = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        await send(body)
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu0
    return statistics.median(walls) * 1e6, cpu / count * 1e6


async def run(port: int, count: int) -> None:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    timeout = httpx.Timeout(30.0, connect=5.0)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    stacks: list[tuple[str, Send, Callable[[], Awaitable[None]]]] = []
    plain = httpx.AsyncClient(headers=HEADERS, timeout=timeout, limits=limits)
    stacks.append(("httpx + httpcore (its own)", httpx_sender(plain, url), plain.aclose))
    transport = PooledTransport(max_connections=100, connect_timeout=5.0, read_timeout=30.0)
    over = httpx.AsyncClient(headers=HEADERS, timeout=timeout, transport=transport)
    stacks.append(("httpx + proxy.transport", httpx_sender(over, url), over.aclose))
    direct = PooledTransport(max_connections=100, connect_timeout=5.0, read_timeout=30.0)
    stacks.append(("proxy.transport (the proxy)", transport_sender(direct, url), direct.aclose))
    try:
        import aiohttp
    except ImportError:
        pass
    else:
        session = aiohttp.ClientSession(auto_decompress=False)
        stacks.append(("aiohttp alone", aiohttp_sender(session, url), session.close))
    print(f"{'stack':28} {'JSON wall':>10} {'JSON CPU':>10} {'stream wall':>12} {'stream CPU':>11}")
    for name, send, _ in stacks:
        json_wall, json_cpu = await measure(send, SMALL, count)
        stream_wall, stream_cpu = await measure(send, STREAM, count)
        print(
            f"{name:28} {json_wall:8.0f}µs {json_cpu:8.0f}µs {stream_wall:10.0f}µs "
            f"{stream_cpu:9.0f}µs"
        )
    for _, _, close in stacks:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--port", type=int, default=9187)
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # a benchmark helper, not a test: the upstream starts in ~0.1 s
        if args.uvloop:
            import uvloop

            uvloop.run(run(args.port, args.requests))
        else:
            asyncio.run(run(args.port, args.requests))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
