"""How long `claude-bridge` takes to answer a user: command start-up, and the first request.

    .venv/bin/python bench/startup.py [--runs 10]

Start-up: each command is run `--runs` times as a fresh process; printed are the minimum and
the median wall time of `--version`, `--help`, a Tab completion (what the shell scripts in
`completions/` ask), and `count-tokens` of a small request. Targets on the 2-core reference
machine: 150 ms for the first three, 300 ms for `count-tokens`.

First request: `serve` in front of the canned upstream (`bench/upstream.py`), then the first
request and the median of the next ten, each a small non-streaming Messages request. What the
first one costs more is what `serve` did not warm before it said it was listening.

The machine's load average is printed with the figures: on a busy machine they mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import free_port, start  # noqa: E402  (bench/ is not a package)

CLI = Path(sys.executable).parent / "claude-bridge"
SMALL = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}
COMPLETION_ENV = {
    "_CLAUDE_BRIDGE_COMPLETE": "complete_bash",
    "COMP_WORDS": "claude-bridge ",
    "COMP_CWORD": "1",
}
TARGETS_MS = {"--version": 150, "--help": 150, "completion": 150, "count-tokens": 300}


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


def startup(runs: int, tmp: Path) -> None:
    request = tmp / "small.json"
    request.write_text(json.dumps(SMALL), encoding="utf-8")
    env = {**os.environ, "HOME": str(tmp)}
    cases = {
        "--version": ([str(CLI), "--version"], env),
        "--help": ([str(CLI), "--help"], env),
        "completion": ([str(CLI)], {**env, **COMPLETION_ENV}),
        "count-tokens": ([str(CLI), "count-tokens", str(request)], env),
    }
    print(f"{'command':<14} {'min ms':>8} {'median ms':>10} {'target':>7}")
    for name, (command, environ) in cases.items():
        times = [timed(command, environ) * 1000 for _ in range(runs)]
        print(
            f"{name:<14} {min(times):>8.0f} {statistics.median(times):>10.0f} {TARGETS_MS[name]:>7}"
        )


def post(port: int) -> float:
    data = json.dumps(SMALL).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/messages",
        data=data,
        headers={"content-type": "application/json", "x-api-key": "bench"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
    return time.perf_counter() - started


def first_request(tmp: Path) -> None:
    upstream_port, port = free_port(), free_port()
    upstream = start(
        "upstream",
        [sys.executable, str(BENCH / "upstream.py"), "--port", str(upstream_port)],
        {},
        tmp,
        upstream_port,
        "/stats",
    )
    env = {
        "HOME": str(tmp),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_API_KEY": "bench",
        "BIG_MODEL": "bench-model",
    }
    bridge = start(
        "claude-bridge",
        [str(CLI), "serve", "--port", str(port), "--no-dashboard"],
        env,
        tmp,
        port,
        "/",
    )
    try:
        first = post(port)
        rest = [post(port) for _ in range(10)]
    finally:
        bridge.stop()
        upstream.stop()
    print(
        f"first request {first * 1000:.1f} ms, then median {statistics.median(rest) * 1000:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        startup(args.runs, Path(folder))
        first_request(Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
