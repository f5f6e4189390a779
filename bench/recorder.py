"""What recording costs the event loop per exchange: a 50 KB Claude Code request answered by a
1,000-chunk stream, written by the journal's `Inline` writer (everything on the loop, as
before the writer thread) and by its `Background` writer (what `serve` uses).

    .venv/bin/python bench/recorder.py [--exchanges 40]

In process, no server: one exchange is driven through the recorder as the pipeline drives it
(the trace gets the client body, the upstream's 1,000 raw reads, and the client's stream goes
through `Trace.tap_client`), on an asyncio loop. Reported per writer (medians over exchanges):

- loop time at finish: the `finish` event's call into the recorder (building and writing the
  record inline, handing it over in the background);
- loop time per client chunk in `tap_client`;
- the worst lateness of a 1 ms ticker on the same loop while the record is being written: with
  a thread the GIL is shared, so the writer can still delay the loop (by up to the interpreter's
  switch interval, 5 ms, or a long C call such as one `json.dumps`).

A figure, not a test: the machine's load matters (printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from upstream import stream_frames

from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.journal.writer import Background, Inline, Recorder

CC50K = Path(__file__).resolve().parent / "data" / "claude_code_50k.anthropic.json"
CHUNKS = 1000
TICK = 0.001


def client_events(chunks: int) -> list[bytes]:
    """An Anthropic event stream of `chunks` text deltas, one read each."""
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message"}}
    reads = [b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"]
    for i in range(chunks):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
        delta["delta"]["text"] = f"word{i} "  # type: ignore[index]
        reads.append(b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    reads.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return reads


async def _stream(reads: list[bytes]) -> AsyncIterator[bytes]:
    for data in reads:
        yield data


async def one_exchange(
    recorder: Recorder, body: bytes, upstream: list[bytes], client: list[bytes], n: int
) -> tuple[float, float, float]:
    """(seconds of the finish call, seconds per client chunk in the tap, worst ticker lateness
    in the 50 ms after finish)."""
    exchange = Exchange(id=f"req_{n}", route="messages", stream=True, status=200)
    recorder("start", exchange)
    trace = exchange.trace
    assert trace is not None
    trace.client_request("POST", "/v1/messages", [("content-type", "application/json")])
    trace.client_body(body)
    trace.upstream_request("POST", "http://127.0.0.1:9/v1/chat/completions", [], body)
    trace.upstream_response(200, [("content-type", "text/event-stream")])
    for data in upstream:
        trace.upstream_chunk(data)
    trace.upstream_done()
    began = time.perf_counter()
    async for _ in trace.tap_client(_stream(client)):
        pass
    tapped = (time.perf_counter() - began) / len(client)
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            due = time.perf_counter() + TICK
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - due)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)
    began = time.perf_counter()
    recorder("finish", exchange)
    finish = time.perf_counter() - began
    await asyncio.sleep(0.05)
    stop.set()
    await ticking
    return finish, tapped, worst


async def measure(writer: str, exchanges: int, directory: Path) -> dict[str, float]:
    body = CC50K.read_bytes()
    upstream = stream_frames(CHUNKS, with_tool=False)
    client = client_events(CHUNKS)
    path = directory / f"{writer}.jsonl"
    recorder = Recorder(path, writer=Background() if writer == "background" else Inline())
    results = [await one_exchange(recorder, body, upstream, client, n) for n in range(exchanges)]
    recorder.close()
    assert recorder.written == exchanges, recorder.written
    finish, tapped, worst = zip(*results, strict=True)
    return {
        "finish_ms": statistics.median(finish) * 1000,
        "finish_max_ms": max(finish) * 1000,
        "tap_us_per_chunk": statistics.median(tapped) * 1e6,
        "ticker_late_ms": statistics.median(worst) * 1000,
        "ticker_late_max_ms": max(worst) * 1000,
        "record_kb": path.stat().st_size / exchanges / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=40)
    options = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"one exchange: {CC50K.stat().st_size // 1024} KB request, {CHUNKS}-chunk stream")
    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as tmp:
        for writer in ("inline", "background"):
            row = asyncio.run(measure(writer, options.exchanges, Path(tmp)))
            print(
                f"{writer:>10}: loop time at finish {row['finish_ms']:.3f} ms median "
                f"(max {row['finish_max_ms']:.3f}); tap {row['tap_us_per_chunk']:.2f} µs/chunk; "
                f"1 ms ticker late by {row['ticker_late_ms']:.2f} ms median "
                f"(max {row['ticker_late_max_ms']:.2f}) while writing; "
                f"{row['record_kb']:.0f} KB a record"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
