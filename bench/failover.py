"""The failover path's added latency: the first target refuses at once, the second answers.

    .venv/bin/python bench/failover.py [--requests 300]

Loopback only, bounded: two scripted upstreams (tests/upstream.py) and claude-bridge in this
process (uvicorn in a thread, as the tests run it), sequential non-streaming requests over one
keep-alive connection. Four bridges, the same upstream answer:

* `direct`: one target, no chain (the baseline);
* `503 first`: a chain whose first target answers 503 at once, its breaker kept closed (the
  refusal is paid on every request: a re-plan for the second target, a second upstream call);
* `refused first`: the same, the first target's port closed (connection refused);
* `breaker open`: the first target's breaker open, so it is skipped without a call.

Prints each one's median and p95 latency and the median added to `direct`.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CLIENT_KEY, Bridge, bridge_settings, start_bridge  # noqa: E402
from upstream import FakeUpstream, JSONReply, completion, error_body  # noqa: E402

from claude_bridge.proxy.app import create_app  # noqa: E402
from claude_bridge.proxy.resilience.breaker import BreakerPolicy  # noqa: E402
from claude_bridge.proxy.resilience.health import Health  # noqa: E402

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "Hi"}],
}
NEVER_OPENS = BreakerPolicy(failures=10**9, min_calls=10**9)
ROUNDS = 5


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bridge(first_url: str | None, answering: str, policy: BreakerPolicy) -> Bridge:
    """A bridge whose big model is `m` on `answering`, behind `first:m` on `first_url`."""
    values: dict[str, Any] = {"big_model": "m"}
    if first_url is not None:
        values = {"upstreams": {"first": {"base_url": first_url}}, "big_model": ["first:m", "m"]}
    settings = bridge_settings(answering, **values)
    health = Health(settings, policy=policy)
    if first_url is not None and policy is not NEVER_OPENS:
        health["first"].breaker.trip()  # open for its cooldown (30 s): longer than a round
    return start_bridge(settings, app=create_app(settings, health=health))


def timings(client: httpx.Client, requests: int) -> list[float]:
    """Seconds per request."""
    spent = []
    for _ in range(requests):
        start = time.perf_counter()
        client.post("/v1/messages", json=BODY).raise_for_status()
        spent.append(time.perf_counter() - start)
    return spent


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per case, in 5 rounds")
    args = parser.parse_args(argv)
    # The failures are the point: their warnings would drown the figures.
    logging.getLogger("claude_bridge").setLevel(logging.ERROR)
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    with FakeUpstream() as answering, FakeUpstream() as refusing:
        answering.always(JSONReply(completion("Hello")))
        refusing.always(JSONReply(error_body("overloaded", "server_error"), 503))
        closed = f"http://127.0.0.1:{closed_port()}/v1"
        cases = {
            "direct": bridge(None, answering.base_url, NEVER_OPENS),
            "503 first": bridge(refusing.base_url, answering.base_url, NEVER_OPENS),
            "refused first": bridge(closed, answering.base_url, NEVER_OPENS),
            "breaker open": bridge(refusing.base_url, answering.base_url, BreakerPolicy()),
        }
        clients = {
            name: httpx.Client(base_url=b.url, headers=headers, timeout=30)
            for name, b in cases.items()
        }
        spent: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for client in clients.values():
                timings(client, 20)  # warm-up: connections, first translations
            # Rounds, the cases taking turns: a busy machine slows them alike.
            for _ in range(ROUNDS):
                for name, client in clients.items():
                    spent[name] += timings(client, max(args.requests // ROUNDS, 1))
        finally:
            for client in clients.values():
                client.close()
            for running in cases.values():
                running.stop()
    base = statistics.median(spent["direct"])
    print(f"{len(spent['direct'])} sequential non-streaming requests a case, keep-alive")
    print(f"{'case':14} {'median':>10} {'p95':>10} {'added (median)':>15}")
    for name, values in spent.items():
        ordered = sorted(values)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        median = statistics.median(values)
        print(f"{name:14} {ms(median):>10} {ms(p95):>10} {ms(median - base):>15}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
