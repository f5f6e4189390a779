"""Request throughput of `claude-bridge serve` with the live dashboard on and off.

Self-contained, loopback only, bounded in time (about 10 + rounds * (idle + seconds) s):

    .venv/bin/python bench/dashboard_overhead.py [--seconds 5] [--rounds 5] [--concurrency 8]

One real `claude-bridge serve` per mode runs on its own pseudo-terminal (so the dashboard is
really drawn, and the request lines really printed, to a terminal that is read continuously),
all in front of one canned upstream (`bench/upstream.py`). `bench/loadgen.py`'s keep-alive
closed loop drives every proxy at once with the same closed loop of `--concurrency` clients
sending non-streaming `POST /v1/messages`. Measuring the modes side by side, in the same
seconds, makes whatever else the machine is doing hit them alike: on a shared machine one mode
after the other varies by tens of percent from run to run, side by side it does not.

Reported per mode (medians over rounds; ratios to the first mode taken round by round):
requests per second, median latency, the proxy process's CPU time per request (user + system,
from /proc), and its CPU use while idle (the dashboard's fixed cost: four frames a second).
Last, the cost of one full dashboard frame, measured in this process.

Modes: `lines` (`--no-dashboard`: a line per request, i.e. dashboard off), `dashboard` (the
default on a terminal), `json` (`--log-format json`), `dashboard+file` (dashboard and
`--log-file`, which also turns on uvicorn's access records).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402  (bench/ is not a package)

CLI = Path(sys.executable).parent / "claude-bridge"
MODES: dict[str, list[str]] = {
    "lines": ["--no-dashboard"],
    "dashboard": [],
    "json": ["--log-format", "json"],
    "dashboard+file": ["--log-file", "{tmp}/bench.jsonl"],
}
REQUEST = json.dumps(
    {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello. " * 50}],
    }
).encode()


# -- load: loadgen's closed loop on every proxy at once -----------------------------------------


async def _load_all(ports: list[int], seconds: float, concurrency: int) -> list[loadgen.Load]:
    targets = [loadgen.Target("bridge", port, "/v1/messages", REQUEST, False) for port in ports]
    return await asyncio.gather(*(loadgen.closed_loop(t, concurrency, seconds) for t in targets))


# -- the proxy on a pseudo-terminal ----------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


@contextlib.contextmanager
def _proxy(args: list[str], upstream: int, port: int) -> Iterator[tuple[int, list[int]]]:
    """`claude-bridge serve` on a 120x40 pty whose output is read (and counted) continuously."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "TERM": "xterm-256color",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "BIG_MODEL": "bench-model",
    }
    process = subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    written = [0]

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            written[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        _wait_port(port, 15)
        yield process.pid, written
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        os.close(master)


def frame_cost(frames: int = 40) -> float:
    """Milliseconds to draw one full 120x40 frame (200 recent, 16 in flight) into a colour
    terminal: the dashboard's whole cost, paid 4 times a second whatever the traffic."""
    import io
    from datetime import datetime

    from rich.console import Console

    from claude_bridge.cli.dashboard import Dashboard
    from claude_bridge.cli.render import ServerInfo
    from claude_bridge.proxy.events import Exchange

    now = [1000.0]
    console = Console(
        file=io.StringIO(), width=120, height=40, force_terminal=True, color_system="truecolor"
    )
    info = ServerInfo("127.0.0.1:8082", "llm.example.com/v1", "qwen3-coder-30b", "qwen3-4b")
    board = Dashboard(info, console=console, clock=lambda: now[0], wall=datetime.now)
    for i in range(216):
        ex = Exchange(
            id=f"req_01{i:022d}",
            route="messages",
            client_model="claude-sonnet-4-6",
            upstream_model="qwen3-coder-30b",
            stream=True,
            started=1000.0 + i,
            first_byte=1000.3 + i,
        )
        board("start", ex)
        if i < 200:
            ex.finished, ex.status, ex.stop_reason = 1001.0 + i, 200, "end_turn"
            ex.input_tokens, ex.output_tokens = 12000, 300
            board("finish", ex)
    now[0] = 1300.0
    started = time.perf_counter()
    for _ in range(frames):
        console.print(board.renderable())
        console.file = io.StringIO()
    return (time.perf_counter() - started) / frames * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8, help="clients per proxy")
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds measured a round")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    options = parser.parse_args()
    if not CLI.exists():
        sys.exit(f"{CLI} not found: pip install -e . first")
    modes = options.modes.split(",")
    # Per mode, per round: requests/s, p50 ms, CPU ms/request, idle CPU %.
    results: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in modes}
    upstream_port = _free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", str(upstream_port)],
        start_new_session=True,
    )
    try:
        _wait_port(upstream_port, 10)
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            ports = [_free_port() for _ in modes]
            pids = [
                stack.enter_context(
                    _proxy([a.format(tmp=tmp) for a in MODES[mode]], upstream_port, port)
                )[0]
                for mode, port in zip(modes, ports, strict=True)
            ]
            asyncio.run(_load_all(ports, 1.0, options.concurrency))  # warm-up
            for round_ in range(options.rounds):
                before = [_cpu_seconds(pid) for pid in pids]
                started = time.monotonic()
                time.sleep(options.idle)
                idle_wall = time.monotonic() - started
                idle = [
                    (_cpu_seconds(p) - b) / idle_wall * 100
                    for p, b in zip(pids, before, strict=True)
                ]
                before = [_cpu_seconds(pid) for pid in pids]
                started = time.monotonic()
                loads = asyncio.run(_load_all(ports, options.seconds, options.concurrency))
                wall = time.monotonic() - started
                used = [_cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
                line = []
                for i, mode in enumerate(modes):
                    done, p50, errors = loads[i].requests, loads[i].p50, loads[i].errors
                    per_request = used[i] / done * 1000 if done else float("nan")
                    results[mode].append((done / wall, p50, per_request, idle[i]))
                    line.append(f"{mode} {done / wall:6.1f} req/s {per_request:5.2f} ms CPU")
                    if errors:
                        line[-1] += f" ({errors} errors)"
                print(f"round {round_ + 1}: " + "  |  ".join(line), flush=True)
    finally:
        upstream.send_signal(signal.SIGINT)
        try:
            upstream.wait(5)
        except subprocess.TimeoutExpired:
            upstream.kill()
    print(
        f"\n{options.rounds} rounds of {options.seconds:g} s, {options.concurrency} clients per "
        f"proxy, {len(modes)} proxies side by side, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}. Medians; ratios to {modes[0]} round by round:"
    )
    base = results[modes[0]]
    for mode in modes:
        rows = results[mode]
        rate, p50, cpu, idle = (statistics.median(r[i] for r in rows) for i in range(4))
        rate_ratio = statistics.median(r[0] / b[0] for r, b in zip(rows, base, strict=True))
        cpu_ratio = statistics.median(r[2] / b[2] for r, b in zip(rows, base, strict=True))
        ratios = [r[0] / b[0] for r, b in zip(rows, base, strict=True)]
        print(
            f"  {mode:<15} {rate:7.1f} req/s ({rate_ratio * 100 - 100:+5.1f}%, rounds "
            f"{min(ratios) * 100 - 100:+.0f}%..{max(ratios) * 100 - 100:+.0f}%)  "
            f"p50 {p50:6.1f} ms  CPU {cpu:5.2f} ms/request ({cpu_ratio * 100 - 100:+5.1f}%)  "
            f"idle CPU {idle:4.1f}%"
        )
    cost = frame_cost()
    print(
        f"\none dashboard frame (120x40, 200 recent, 16 in flight): {cost:.1f} ms; at "
        f"4 frames/s that is {cost * 4 / 10:.1f}% of one core, whatever the traffic"
    )


if __name__ == "__main__":
    main()
