"""Does a hostile upstream hurt the proxy, or the other clients? A gzip bomb served to one
client while others stream normal answers.

    .venv/bin/python bench/hostile_upstream.py [--clients 8] [--rounds 3] [--bridge-cmd CMD]

Starts, on loopback, the canned upstream (`bench/upstream.py`), a bomb upstream (this script,
`--serve-bomb`), and `claude-bridge serve` in front of both (with `bench/run.py`'s helpers; a
route in a config file sends the model `bench-gzip-bomb` to the bomb; `--bridge-cmd` runs
another copy, e.g. an older commit's). The bomb is one streamed answer, `content-encoding:
gzip`, whose ~380 KB inflate to `--inflated-mb` (128) MB of ordinary chunk events, sent as fast
as the connection takes them: what was found to raise the proxy's memory by gigabytes and
stall every client for seconds.

`--clients` keep-alive clients stream paced answers throughout (`bench/big_body.py`'s `paced`:
every wait for a piece of an answer noted). Each round: a baseline window with them alone,
then one where a further client asks for the bomb and reads its answer to the end. Printed per
round and as medians: the proxy's RSS growth during the bomb (peak minus before), the other
clients' worst extra wait (worst in the bomb window minus worst in the baseline), how the bomb
answer ended (`error` event, `message_stop`, or cut) and how long it took. Targets: the bomb
ends with an `error` event, RSS grows by under 50 MB, other clients wait under 100 ms more.

A minute or two; the processes it starts are stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import big_body  # noqa: E402  (bench/ is not a package)
import loadgen  # noqa: E402
import run  # noqa: E402

BOMB_MODEL = "bench-gzip-bomb"
BASELINE_SECONDS = 3.0  # the paced clients alone, before each bomb
SETTLE_SECONDS = 0.5  # paced streams run this long before the bomb, and after it
BOMB_TIMEOUT = 120.0  # seconds: a bomb answer not done by then counts as stuck
RSS_EVERY = 0.01  # seconds between samples of the proxy's memory


# -- the bomb upstream (a process of its own, so its work is not the bench's) ---------------


def bomb(inflated_mb: int) -> bytes:
    """One SSE answer: a role chunk, content chunks up to `inflated_mb` MB, the end; gzipped."""

    def event(choice: dict[str, object]) -> bytes:
        body = {"id": "chatcmpl-bomb", "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [packer.compress(event({"index": 0, "delta": {"role": "assistant", "content": ""}}))]
    word = event({"index": 0, "delta": {"content": "boom "}})
    block = word * (1024 * 1024 // len(word))
    parts.extend(packer.compress(block) for _ in range(inflated_mb))
    parts.append(packer.compress(event({"index": 0, "delta": {}, "finish_reason": "stop"})))
    parts.append(packer.compress(b"data: [DONE]\n\n") + packer.flush())
    return b"".join(parts)


async def serve_bomb(port: int, inflated_mb: int) -> None:
    packed = bomb(inflated_mb)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            request = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in request.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if request.startswith(b"GET /stats"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            else:
                writer.write(head)
                for start in range(0, len(packed), 16384):
                    piece = packed[start : start + 16384]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the measurement -------------------------------------------------------------------------


class RSSPeak:
    """The proxy's peak resident memory while running, sampled in a thread."""

    def __init__(self, server: run.Server) -> None:
        self.server = server
        self.before = server.rss_mb()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_EVERY):
            self.peak = max(self.peak, self.server.rss_mb())

    def stop(self) -> float:
        """MB grown, peak over before."""
        self._stop.set()
        self._thread.join()
        return self.peak - self.before


@dataclass
class Drunk:
    """How the bomb's answer went for its client."""

    status: int
    tail: bytes  # its last bytes
    seconds: float

    @property
    def ending(self) -> str:
        if self.status != 200:
            return f"status {self.status}" if self.status else "stuck"
        if b"event: error" in self.tail:
            return "error event"
        return "message_stop" if b"message_stop" in self.tail else "cut"


async def drink(target: loadgen.Target) -> Drunk:
    """Ask for `target` and read the answer to its end in big reads, keeping only its tail:
    the bomb's client costs the bench's event loop next to nothing (the paced clients' waits
    are the proxy's, not this one's)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(target.host, target.port)
    status, tail = 0, b""
    try:
        async with asyncio.timeout(BOMB_TIMEOUT):
            writer.write(target.request())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            while data := await reader.read(1 << 20):
                tail = (tail + data)[-400:]
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        status = status if tail else 0
    finally:
        writer.close()
    return Drunk(status, tail, time.perf_counter() - started)


async def with_bomb(
    target: loadgen.Target, bomb_target: loadgen.Target, clients: int, server: run.Server
) -> tuple[big_body.Window, Drunk, float]:
    until = asyncio.Event()
    others = asyncio.create_task(big_body.paced(target, clients, until))
    await asyncio.sleep(SETTLE_SECONDS)
    rss = RSSPeak(server)
    drunk = await drink(bomb_target)
    await asyncio.sleep(SETTLE_SECONDS)
    grown = rss.stop()
    until.set()
    return await others, drunk, grown


def bomb_config(port: int) -> str:
    """The bridge's config: the bomb's model goes to the bomb upstream on `port`."""
    base_url = json.dumps(f"http://127.0.0.1:{port}/v1")
    return (
        f'[upstreams.bomb]\nbase_url = {base_url}\napi_key = "sk-bench"\n\n'
        f'[[routes]]\npattern = "{BOMB_MODEL}"\nupstream = "bomb"\nmodel = "{run.BIG_MODEL}"\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="paced streaming clients")
    parser.add_argument("--delay-ms", type=int, default=20, help="pace of their chunks")
    parser.add_argument("--chunks", type=int, default=50, help="chunks per paced answer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflated-mb", type=int, default=128, help="what the bomb inflates to")
    parser.add_argument(
        "--bridge-cmd", help="command line that runs claude-bridge (default: this venv's)"
    )
    parser.add_argument("--serve-bomb", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bomb:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_bomb(args.serve_bomb, args.inflated_mb))
        return 0
    user = f"bench-delay-{args.delay_ms}"
    small = run.compact(run.anthropic_small(True, args.chunks, user))
    asked = {**run.anthropic_small(True, 10), "model": BOMB_MODEL}
    print(
        f"# gzip bomb: {len(bomb(args.inflated_mb)) / 1e3:.0f} KB inflating to "
        f"{args.inflated_mb} MB of events; {args.clients} paced clients, a chunk every "
        f"{args.delay_ms} ms, {args.chunks} chunks an answer"
    )
    print("round  RSS growth (MB)  baseline worst  bomb worst  extra wait (ms)  bomb ended  (s)")
    grown_all: list[float] = []
    extras: list[float] = []
    with tempfile.TemporaryDirectory(prefix="claude-bridge-hostile-") as tmp:
        bomb_port = run.free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-bomb", str(bomb_port)]
        command += ["--inflated-mb", str(args.inflated_mb)]
        bomber = run.start("bomb", command, {}, Path(tmp), bomb_port, "/stats")
        (Path(tmp) / "config.toml").write_text(bomb_config(bomb_port))
        bench = argparse.Namespace(
            bridge_cmd=args.bridge_cmd,
            bridge_env=[f"CLAUDE_BRIDGE_HOME={tmp}"],
            litellm=None,
            no_wrk=True,
        )
        servers = run.Bench(bench, run.QUICK, Path(tmp))
        servers.servers.append(bomber)
        try:
            servers.start_all()
            port = servers.bridge.port
            target = loadgen.Target("bridge", port, "/v1/messages", small, True)
            closing = {**loadgen.DEFAULT_HEADERS, "connection": "close"}  # read to the end
            request = run.compact(asked)
            bomb_target = loadgen.Target("bridge", port, "/v1/messages", request, True, closing)
            asyncio.run(
                big_body.baseline(target, args.clients, BASELINE_SECONDS)
            )  # warm-up: connections, imports
            for round_no in range(1, args.rounds + 1):
                quiet = asyncio.run(big_body.baseline(target, args.clients, BASELINE_SECONDS))
                loaded, drunk, grown = asyncio.run(
                    with_bomb(target, bomb_target, args.clients, servers.bridge)
                )
                extra = loaded.worst - quiet.worst
                grown_all.append(grown)
                extras.append(extra)
                failed = loaded.failed + quiet.failed
                print(
                    f"{round_no:5}  {grown:15.1f}  {big_body.ms(quiet.worst):>14}  "
                    f"{big_body.ms(loaded.worst):>10}  {big_body.ms(extra):>15}  "
                    f"{drunk.ending:>12} {drunk.seconds:5.1f}"
                    + (f"  ({failed} paced answers failed)" if failed else "")
                )
        finally:
            servers.stop_all()
    print(
        f"median RSS growth: {statistics.median(grown_all):.1f} MB (target: under 50 MB); "
        f"median extra wait: {statistics.median(extras) * 1000:.1f} ms (target: under 100 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
