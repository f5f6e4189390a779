"""Load generators for the benchmark: `wrk` (with a Lua body script) when it is installed, else
a built-in asyncio HTTP/1.1 keep-alive client. Loopback only; every loop is bounded in time or
count.

The asyncio client is also used where `wrk` cannot look: time to first byte, whole-stream
timings, and many concurrent slow streams whose bodies are checked one by one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HEADERS = {
    "content-type": "application/json",
    "x-api-key": "sk-bench",
    "authorization": "Bearer sk-bench",
    "anthropic-version": "2023-06-01",
}


@dataclass(frozen=True)
class Target:
    """One HTTP endpoint and the body posted to it."""

    name: str
    port: int
    path: str
    body: bytes
    stream: bool
    headers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADERS))
    host: str = "127.0.0.1"

    def request(self) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"content-length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def ok(self, status: int, body: bytes) -> bool:
        """A 200 whose body is complete: a stream must end as its protocol says."""
        if status != 200:
            return False
        if not self.stream:
            return body[:1] == b"{"
        return b"message_stop" in body[-300:] or b"[DONE]" in body[-300:]


@dataclass
class Load:
    """What one load run measured; latencies in milliseconds."""

    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Timing:
    status: int
    ttfb: float  # seconds from sending the request to the first byte of the body
    total: float  # seconds to the last byte
    body: bytes


class Connection:
    """One keep-alive connection of the asyncio client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Target) -> Connection:
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 22)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def exchange(
        self,
        request: bytes,
        keep_body: bool = True,
        waits: list[tuple[float, float]] | None = None,
    ) -> Timing:
        """One request and its answer; `waits`, when given, gets each wait for a piece of a
        chunked body (the first from the request): (when it ended, how long), in seconds of
        `time.perf_counter`."""
        started = last = time.perf_counter()
        self.writer.write(request)
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        parts: list[bytes] = []
        ttfb = 0.0
        if chunked:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                data = await reader.readexactly(size + 2)
                if waits is not None:
                    now = time.perf_counter()
                    waits.append((now, now - last))
                    last = now
                if not ttfb:
                    ttfb = time.perf_counter() - started
                if size == 0:
                    break
                if keep_body:
                    parts.append(data[:-2])
                else:
                    parts[:] = [data[-302:-2]]
        elif length >= 0:
            data = await reader.readexactly(length)
            ttfb = time.perf_counter() - started
            parts.append(data)
        else:
            data = await reader.read()
            ttfb = time.perf_counter() - started
            parts.append(data)
        total = time.perf_counter() - started
        return Timing(status, ttfb, total, b"".join(parts))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def closed_loop(target: Target, concurrency: int, seconds: float) -> Load:
    """`concurrency` keep-alive clients sending `target`'s request back to back for `seconds`
    (awaitable, so several targets can be loaded side by side)."""
    request = target.request()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = await Connection.open(target)
        try:
            while time.perf_counter() < deadline:
                timing = await conn.exchange(request, keep_body=False)
                if not target.ok(timing.status, timing.body):
                    errors += 1
                latencies.append(timing.total * 1000)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    # A request still unanswered long after the end counts as an error (and is dropped).
    _, stuck = await asyncio.wait(workers, timeout=seconds + 30)
    for task in stuck:
        task.cancel()
        errors += 1
    await asyncio.gather(*stuck, return_exceptions=True)
    elapsed = time.perf_counter() - started
    return Load(
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50=_percentile(latencies, 50),
        p99=_percentile(latencies, 99),
        tool="asyncio",
    )


def asyncio_load(target: Target, concurrency: int, seconds: float) -> Load:
    return asyncio.run(closed_loop(target, concurrency, seconds))


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = %(path)s
%(headers)s
local f = assert(io.open(%(body_path)s, "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_load(target: Target, concurrency: int, seconds: float, wrk: str) -> Load:
    """Closed-loop load with `wrk -t1`: one thread is plenty on loopback and leaves the
    cores to the servers. wrk counts in whole seconds (at least 1)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(target.body)
        headers = "\n".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in target.headers.items()
        )
        script = Path(tmp) / "post.lua"
        script.write_text(
            _WRK_SCRIPT
            % {
                "path": json.dumps(target.path),
                "headers": headers,
                "body_path": json.dumps(str(body_path)),
            }
        )
        url = f"http://{target.host}:{target.port}"
        command = [
            wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(script), url,
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[6:])
            errors = int(data["errors"])
            # wrk counts non-2xx answers as errors; they must not pass for throughput.
            return Load(
                requests=int(data["requests"]),
                errors=errors,
                seconds=data["duration_us"] / 1e6,
                p50=data["p50_us"] / 1000,
                p99=data["p99_us"] / 1000,
                tool="wrk",
            )
    raise RuntimeError(f"wrk printed no result: {result.stdout[-500:]} {result.stderr[-500:]}")


def load(target: Target, concurrency: int, seconds: float, use_wrk: bool = True) -> Load:
    """`wrk` when asked for and installed, and the run is at least a second; else asyncio."""
    wrk = wrk_path() if use_wrk else None
    if wrk and seconds >= 1:
        return wrk_load(target, concurrency, seconds, wrk)
    return asyncio_load(target, concurrency, seconds)


async def _sequential(target: Target, count: int, timeout: float) -> list[Timing]:
    conn = await Connection.open(target)
    request = target.request()
    try:
        async with asyncio.timeout(timeout):
            return [await conn.exchange(request) for _ in range(count)]
    finally:
        conn.close()


def sequential(target: Target, count: int, timeout: float = 120.0) -> list[Timing]:
    """`count` requests one after another on one connection, with their timings and bodies;
    TimeoutError when they take more than `timeout` seconds in all."""
    return asyncio.run(_sequential(target, count, timeout))


@dataclass
class Swarm:
    ok: int
    failed: int
    seconds: float
    failures: list[str]


async def _swarm(target: Target, count: int, timeout: float) -> Swarm:
    request = target.request()
    ok = 0
    failures: list[str] = []

    async def one() -> None:
        nonlocal ok
        conn: Connection | None = None
        try:
            conn = await Connection.open(target)
            timing = await conn.exchange(request)
            if target.ok(timing.status, timing.body):
                ok += 1
            else:
                failures.append(f"status {timing.status}: {timing.body[-200:]!r}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                conn.close()

    started = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        failures.append("timed out")
    await asyncio.gather(*pending, return_exceptions=True)
    return Swarm(ok, count - ok, time.perf_counter() - started, failures[:5])


def swarm(target: Target, count: int, timeout: float) -> Swarm:
    """`count` requests at once, each on its own connection; each body checked."""
    return asyncio.run(_swarm(target, count, timeout))


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")
