"""Throughput of `claude-bridge serve --workers N` against one worker, at concurrency 32.

    .venv/bin/python bench/workers.py [--workers 2] [--seconds 5] [--rounds 3]

Starts, as separate processes on loopback: the canned upstream (`bench/upstream.py`), one
`serve` with one worker and one with `--workers N`, both `--no-dashboard` (and one with
`--workers N --record`, recording to a temporary directory, with `--record`). Drives each with
the same closed loop of 32 keep-alive connections (`wrk` when installed, else the asyncio
client of `bench/loadgen.py`) posting a small non-streaming request, then a 50-chunk stream;
targets alternate within each round so drift in the machine's load hits them alike. Prints the
requests per second of each, the ratio to one worker (median of the per-round ratios), the CPU
time the proxy's processes spent per request (from /proc: what a second worker costs, less
sensitive to the machine's other load than throughput), and the load average before and after:
on a shared machine the ratio is what to read.

The load generator and the upstream share the cores with the proxy; on 2 cores that bounds
what a second worker can add.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from loadgen import Target
from run import BENCH, BIG_MODEL, CLI, Server, anthropic_small, compact, free_port, start

CONCURRENCY = 32
SCENARIOS = {"small_json": (False, 16), "stream50": (True, 50)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="also N workers recording")
    parser.add_argument("--no-wrk", action="store_true", help="the asyncio load generator")
    options = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"cores: {os.cpu_count()}; load generator: {'asyncio' if options.no_wrk else 'wrk'}")
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        try:
            up_port = free_port()
            servers.append(
                start(
                    "upstream",
                    [sys.executable, str(BENCH / "upstream.py"), "--port", str(up_port)],
                    {},
                    Path(tmp),
                    up_port,
                    "/stats",
                )
            )
            env = {
                "OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
                "OPENAI_API_KEY": "sk-bench",
                "BIG_MODEL": BIG_MODEL,
                "CLAUDE_BRIDGE_HOME": tmp,
            }
            variants = {"1 worker": ["--workers", "1"], f"{options.workers} workers": []}
            variants[f"{options.workers} workers"] = ["--workers", str(options.workers)]
            if options.record:
                variants[f"{options.workers} workers, recording"] = [
                    *("--workers", str(options.workers), "--record-dir", f"{tmp}/journal"),
                ]
            ports: dict[str, int] = {}
            proxies: dict[str, Server] = {}
            for name, args in variants.items():
                port = ports[name] = free_port()
                command = [str(CLI), "serve", "--port", str(port), "--no-dashboard", *args]
                proxy = start(name.replace(" ", "_"), command, env, Path(tmp), port, "/")
                servers.append(proxy)
                proxies[name] = proxy
            rps: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            for round_no in range(options.rounds):
                names = list(variants)
                names = names[round_no % len(names) :] + names[: round_no % len(names)]
                for scenario, (stream, chunks) in SCENARIOS.items():
                    body = compact(anthropic_small(stream, chunks))
                    for name in names:
                        target = Target(name, ports[name], "/v1/messages", body, stream)
                        used = proxies[name].cpu()
                        result = loadgen.load(
                            target, CONCURRENCY, options.seconds, not options.no_wrk
                        )
                        used = proxies[name].cpu() - used
                        if result.errors:
                            print(f"  {name} {scenario}: {result.errors} errors")
                        rps.setdefault((scenario, name), []).append(result.rps)
                        cpu.setdefault((scenario, name), []).append(
                            used / result.requests * 1e6 if result.requests else float("nan")
                        )
            for scenario in SCENARIOS:
                base = rps[(scenario, "1 worker")]
                for name in variants:
                    mine = rps[(scenario, name)]
                    ratios = [m / b for m, b in zip(mine, base, strict=True) if b]
                    print(
                        f"{scenario:>10} c{CONCURRENCY} {name:>24}: "
                        f"{statistics.median(mine):7.0f} req/s "
                        f"(rounds {', '.join(f'{x:.0f}' for x in mine)}); "
                        f"x{statistics.median(ratios):.2f} one worker; "
                        f"{statistics.median(cpu[(scenario, name)]):.0f} µs CPU a request "
                        "(all its processes)"
                    )
        finally:
            for server in reversed(servers):
                server.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
