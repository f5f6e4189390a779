"""Does one huge request body stall everyone else? Other clients' worst wait while claude-bridge
takes a 15 MB body (400,001 messages, under the 32 MB limit).

    .venv/bin/python bench/big_body.py [--clients 8] [--rounds 3] [--bridge-cmd CMD]

Starts, on loopback, the canned upstream (`bench/upstream.py`) and `claude-bridge serve` in
front of it (with `bench/run.py`'s helpers; `--bridge-cmd` runs another copy, e.g. an older
commit's). The big body is routed to a second canned upstream of its own (a route in a config
file): the canned upstream scans each body for its options, which for 15 MB holds its event
loop for a while too, and that must not count as the bridge's.

`--clients` keep-alive clients (`bench/loadgen.py`) each stream answers paced at a chunk every
`--delay-ms`, one after another, and note every wait for a piece of an answer (the first piece
timed from the request). Each round has two windows of the same length: one where a further
client posts the big body (`stream: true`) and reads its answer, then a baseline with the paced
clients only. Printed per round: how long the big request took, the other clients' worst wait
in each window (and when the worst one ended, from the big request's start), and the extra
wait the big body caused (the difference); then its median. A proxy that parses the body on
its event loop holds every stream still for that long.

A minute or two; the processes it starts are stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402  (bench/ is not a package)
import run  # noqa: E402

MESSAGES = 400_001
BIG_MODEL = "bench-big-body"
SETTLE_SECONDS = 0.5  # paced streams run this long before the big body, and after it


def big_body() -> bytes:
    """400,001 short turns, user first and last: 14.7 MB of JSON."""
    messages = [
        {"role": "assistant" if i % 2 else "user", "content": "hello?"} for i in range(MESSAGES)
    ]
    body = {"model": BIG_MODEL, "max_tokens": 10, "stream": True, "messages": messages}
    return run.compact(body)


@dataclass
class Window:
    worst: float  # seconds: the longest any paced client waited for a piece of an answer
    worst_at: float  # when that wait ended (`time.perf_counter`)
    waits: int
    failed: int


async def paced(target: loadgen.Target, clients: int, until: asyncio.Event) -> Window:
    """`clients` closed loops of paced streams until `until` is set."""
    request = target.request()
    waits: list[tuple[float, float]] = []
    failed = 0

    async def client() -> None:
        nonlocal failed
        while not until.is_set():
            conn = await loadgen.Connection.open(target)
            try:
                while not until.is_set():
                    timing = await conn.exchange(request, keep_body=False, waits=waits)
                    failed += not target.ok(timing.status, timing.body)
            except (OSError, asyncio.IncompleteReadError) as exc:
                failed += 1  # counted, and the client goes on with a new connection
                print(f"  a paced client's connection failed: {exc!r}", file=sys.stderr)
            finally:
                conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    at, worst = max(waits, key=lambda wait: wait[1])
    return Window(worst, at, len(waits), failed)


async def baseline(target: loadgen.Target, clients: int, seconds: float) -> Window:
    until = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, until.set)
    return await paced(target, clients, until)


@dataclass
class Big:
    status: int
    started: float  # `time.perf_counter`
    seconds: float


async def with_big_body(
    target: loadgen.Target, port: int, body: bytes, clients: int
) -> tuple[Window, Big, float]:
    """The paced clients, and meanwhile the big request: their window, the request, and how
    long the window lasted."""
    until = asyncio.Event()
    began = time.perf_counter()
    others = asyncio.create_task(paced(target, clients, until))
    await asyncio.sleep(SETTLE_SECONDS)
    big = await asyncio.to_thread(post, port, body)
    await asyncio.sleep(SETTLE_SECONDS)
    until.set()
    return await others, big, time.perf_counter() - began


def post(port: int, body: bytes) -> Big:
    """The big request, from a thread on a blocking socket: its 15 MB go out with no copy and
    without the GIL, so that this process's own event loop (the paced clients') never stalls
    on it, which would count against the bridge."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    try:
        conn.request("POST", "/v1/messages", body=body, headers=dict(loadgen.DEFAULT_HEADERS))
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    return Big(response.status, started, time.perf_counter() - started)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="paced streaming clients")
    parser.add_argument("--delay-ms", type=int, default=20, help="pace of their chunks")
    parser.add_argument("--chunks", type=int, default=50, help="chunks per paced answer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--bridge-cmd", help="command line that runs claude-bridge (default: this venv's)"
    )
    args = parser.parse_args(argv)
    body = big_body()
    user = f"bench-delay-{args.delay_ms}"
    small = run.compact(run.anthropic_small(True, args.chunks, user))
    print(
        f"# big body: {len(body) / 1e6:.1f} MB, {MESSAGES:,} messages; {args.clients} paced "
        f"clients, a chunk every {args.delay_ms} ms, {args.chunks} chunks an answer"
    )
    print(
        "round  big request (s)  status  with big body worst (ms)  (at, s)  "
        "baseline worst (ms)  extra wait (ms)"
    )
    extras: list[float] = []
    with tempfile.TemporaryDirectory(prefix="claude-bridge-big-body-") as tmp:
        command = [sys.executable, str(BENCH / "upstream.py"), "--port"]
        servers = run.routed_bench(
            args.bridge_cmd, Path(tmp), "sink", BIG_MODEL, lambda port: [*command, str(port)]
        )
        try:
            servers.start_all()
            port = servers.bridge.port
            target = loadgen.Target("bridge", port, "/v1/messages", small, True)
            asyncio.run(baseline(target, args.clients, 1.0))  # warm-up: connections, imports
            for round_no in range(1, args.rounds + 1):
                loaded, big, seconds = asyncio.run(with_big_body(target, port, body, args.clients))
                # As long as the loaded window: a longer window meets more of the machine's
                # own hiccups, which must not pass for the big body's.
                quiet = asyncio.run(baseline(target, args.clients, seconds))
                extra = loaded.worst - quiet.worst
                extras.append(extra)
                failed = loaded.failed + quiet.failed
                print(
                    f"{round_no:5}  {big.seconds:15.2f}  {big.status:6}  {ms(loaded.worst):>24}  "
                    f"{loaded.worst_at - big.started:+7.2f}  {ms(quiet.worst):>19}  "
                    f"{ms(extra):>15}" + (f"  ({failed} paced answers failed)" if failed else "")
                )
        finally:
            servers.stop_all()
    print(f"median extra wait: {statistics.median(extras) * 1000:.1f} ms (target: under 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
