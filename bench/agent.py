"""The agent-shaped benchmark: what claude-bridge adds to the requests a coding agent sends.

    .venv/bin/python bench/agent.py [--rounds 3] [--litellm /tmp/litellm-venv/bin/litellm]

The method of BerriAI's AIGatewayBench: overhead = the same load sent through the proxy minus
sent directly to the same mock upstream (`bench/upstream.py`; the direct requests carry the
OpenAI body claude-bridge would send, from `claude-bridge translate`), both in the same round,
targets interleaved in a rotating order; each figure is the median over rounds. The servers
and the load generator are `bench/run.py`'s and `bench/loadgen.py`'s.

Scenarios (issue 18's table, whose targets the table ends with):

* added p50 / p99 at concurrency 1: a small request, and a ~100k-token Claude Code session
  (`bench/session.py`: a captured first turn plus 40 `Read` round trips, ~480 KB);
* added p50 / p99 at concurrency 16: the small request, and the 50 KB Claude Code request;
* head-of-line: 16 clients read streams paced at a chunk every 10 ms, while a further client
  posts the session body twice a second; the extra gap between chunks (p99 of each gap minus
  the pacing) against a window of the paced streams alone;
* CPU per streamed chunk: a 1,000-chunk stream paced a chunk a millisecond minus a 10-chunk
  one, per chunk; a bare TCP relay (`bench/pipe.py`) beside it is the floor for the wake-ups
  and socket calls.

Every figure is also taken of `bench/floor.py`, the floor proxy: Starlette on uvicorn with
claude-bridge's upstream transport, parsing and writing again what it forwards and doing
nothing else. The targets' table says where that proxy misses a target too: no proxy made of
these parts meets it on the machine the benchmark ran on.

With `--litellm`, LiteLLM's proxy takes the same load in the same rounds (not the head-of-line
window); with `--baseline-cmd`, so does another build of claude-bridge (an older commit's, say),
so that before and after are measured in the same seconds. About a minute a round (more with
LiteLLM). Loopback only; every load is bounded in time; the processes it starts are stopped
when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # bench/ is not a package: its modules are imported from its folder
import run
from session import session_body

HOL_STREAMS = 16
HOL_DELAY_MS = 10
HOL_CHUNKS = 100
HOL_BIG_EVERY = 0.5  # seconds between the big requests' starts
HOL_HELD_END = 2  # the last pieces: the usage chunk's news and the end
PACED_DELAY_MS = 1


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    body: str
    concurrency: int
    seconds: float
    p50_target: float | None
    p99_target: float


LATENCY = (
    Scenario("c1_small", "small request, c=1", "small", 1, 2.0, None, 0.75),
    Scenario("c1_session", "~100k-token session (~480 KB), c=1", "session", 1, 3.0, 3.0, 6.0),
    Scenario("c16_small", "small request, c=16", "small", 16, 2.0, None, 5.0),
    Scenario("c16_cc50k", "50 KB Claude Code request, c=16", "cc50k", 16, 2.0, None, 15.0),
)


def bodies() -> dict[str, dict[str, Any]]:
    """The Anthropic bodies, by name."""
    cc50k = json.loads(run.CC50K.read_text())
    return {
        "small": run.anthropic_small(False, 64),
        "session": {**session_body(), "stream": False},
        "cc50k": {**cc50k, "stream": False},
        "stream": run.anthropic_small(True, 10),
    }


class Agent:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        # `run.Bench` starts the servers; the slow models LiteLLM needs are its plan's delays.
        plan = dataclasses.replace(
            run.QUICK, open_delay_ms=PACED_DELAY_MS, many_delay_ms=HOL_DELAY_MS
        )
        options = argparse.Namespace(
            bridge_cmd=args.bridge_cmd, bridge_env=args.bridge_env, litellm=args.litellm,
            no_wrk=True,
        )  # fmt: skip
        self.bench = run.Bench(options, plan, tmp)
        self.baseline_cmd = args.baseline_cmd
        self.baseline: run.Server | None = None
        self.rounds = args.rounds
        self.results = run.Results()
        self.labels = {**run.TARGET_LABELS, "baseline": "baseline build", "floor": "floor proxy"}

    def start(self) -> None:
        bench = self.bench
        bench.start_all()
        if self.baseline_cmd:
            port = run.free_port()
            command = [*shlex.split(self.baseline_cmd), "serve", "--port", str(port)]
            env = {
                "OPENAI_BASE_URL": f"http://127.0.0.1:{bench.upstream.port}/v1",
                "OPENAI_API_KEY": "sk-bench",
                "BIG_MODEL": run.BIG_MODEL,
                "SMALL_MODEL": run.SMALL_MODEL,
            }
            self.baseline = run.start(
                "baseline", [*command, "--no-dashboard"], env, bench.tmp, port, "/"
            )
            bench.servers.append(self.baseline)
        port = run.free_port()
        self.floor = run.start(
            "floor",
            [
                *(sys.executable, str(run.BENCH / "floor.py"), "--port", str(port)),
                *("--upstream-port", str(bench.upstream.port)),
            ],
            {},
            bench.tmp,
            port,
            "/stats",
        )
        bench.servers.append(self.floor)

    def names(self, round_no: int) -> list[str]:
        """The targets in this round's order (a rotation: drift hits them alike)."""
        names = ["direct", "bridge", "floor"] + (["baseline"] if self.baseline else [])
        names += ["litellm"] if self.bench.litellm else []
        shift = round_no % len(names)
        return names[shift:] + names[:shift]

    def server(self, name: str) -> run.Server | None:
        """The process that serves `name` (for `direct`, the mock upstream)."""
        servers = {"direct": self.bench.upstream, "baseline": self.baseline, "floor": self.floor}
        return servers.get(name) or self.bench.server(name)

    # -- targets ---------------------------------------------------------------------------

    def build(self) -> None:
        bench = self.bench
        anthropic = bodies()
        openai = run.translate_all(
            anthropic, bench.bridge_cmd, f"http://127.0.0.1:{bench.upstream.port}/v1"
        )
        self.sizes = {name: len(run.compact(body)) for name, body in anthropic.items()}
        self.targets: dict[str, dict[str, loadgen.Target]] = {}
        for name, body in anthropic.items():
            self.targets[name] = self._row(
                run.compact(body), openai[name], bool(body.get("stream"))
            )
        for name, chunks, delay in (
            ("paced1000", 1000, PACED_DELAY_MS),
            ("paced10", 10, PACED_DELAY_MS),
            ("hol", HOL_CHUNKS, HOL_DELAY_MS),
        ):
            mine = run.anthropic_small(True, chunks, f"bench-delay-{delay}")
            theirs = {**json.loads(openai["stream"]), "max_tokens": chunks}
            theirs["user"] = f"bench-delay-{delay}"
            row = self._row(run.compact(mine), run.compact(theirs), True)
            row["pipe"] = dataclasses.replace(row["direct"], name="pipe", port=bench.pipe.port)
            if "litellm" in row:  # LiteLLM drops `user`: its slow streams are a model of their own
                slow = run.compact({**mine, "model": run.slow_model(delay)})
                row["litellm"] = dataclasses.replace(row["litellm"], body=slow)
            self.targets[name] = row

    def _row(self, mine: bytes, theirs: bytes, stream: bool) -> dict[str, loadgen.Target]:
        bench = self.bench
        row = {
            "direct": loadgen.Target(
                "direct", bench.upstream.port, "/v1/chat/completions", theirs, stream
            ),
            "bridge": loadgen.Target("bridge", bench.bridge.port, "/v1/messages", mine, stream),
        }
        row["floor"] = dataclasses.replace(row["direct"], name="floor", port=self.floor.port)
        if bench.litellm is not None:
            row["litellm"] = loadgen.Target(
                "litellm", bench.litellm.port, "/v1/messages", mine, stream
            )
        if self.baseline is not None:
            row["baseline"] = dataclasses.replace(
                row["bridge"], name="baseline", port=self.baseline.port
            )
        return row

    def check(self) -> None:
        """Every target answers as expected before anything is timed."""
        for scenario, row in self.targets.items():
            for name, target in row.items():
                if scenario == "paced1000" or (name == "pipe" and scenario == "hol"):
                    continue
                timings = loadgen.sequential(target, 2)
                bad = [t for t in timings if not target.ok(t.status, t.body)]
                if bad:
                    raise RuntimeError(
                        f"{name} answered {scenario} badly: {bad[0].status} {bad[0].body[:300]!r}"
                    )

    # -- sections --------------------------------------------------------------------------

    def latency(self, round_no: int) -> None:
        r = self.results
        for scenario in LATENCY:
            row = self.targets[scenario.body]
            for name in self.names(round_no):
                server = self.server(name)
                before = server.cpu() if server else 0.0
                load = loadgen.asyncio_load(row[name], scenario.concurrency, scenario.seconds)
                if load.errors:
                    self.bench.notes.append(f"{name}, {scenario.label}: {load.errors} errors")
                r.add(f"{scenario.key}.{name}.p50", load.p50)
                r.add(f"{scenario.key}.{name}.p99", load.p99)
                if server and load.requests:
                    used = (server.cpu() - before) / load.requests * 1e6
                    r.add(f"{scenario.key}.{name}.cpu", used)
            for name in row:
                for q in ("p50", "p99"):
                    mine = r.values[f"{scenario.key}.{name}.{q}"][-1]
                    direct = r.values[f"{scenario.key}.direct.{q}"][-1]
                    r.add(f"{scenario.key}.{name}.added_{q}", mine - direct)

    def head_of_line(self) -> None:
        r = self.results
        big = self.targets["session"]
        for name in ("direct", "bridge", "floor", "baseline"):
            if name not in self.targets["hol"]:
                continue
            paced = self.targets["hol"][name]
            for window, load in (("alone", None), ("big", big[name])):
                gaps = asyncio.run(_paced_window(paced, load, seconds=4.0))
                r.add(f"hol.{name}.{window}", loadgen._percentile(gaps, 99))
            alone, loaded = r.values[f"hol.{name}.alone"][-1], r.values[f"hol.{name}.big"][-1]
            r.add(f"hol.{name}.extra", loaded - alone)

    def cpu_per_chunk(self) -> None:
        r = self.results
        for name in ("bridge", "floor", "baseline", "pipe", "litellm"):
            server = self.server(name)
            if server is None:
                continue
            used = []
            for scenario in ("paced1000", "paced10"):
                before = server.cpu()
                timings = loadgen.sequential(self.targets[scenario][name], 1, timeout=60)
                if not self.targets[scenario][name].ok(timings[0].status, timings[0].body):
                    raise RuntimeError(f"{name} failed a paced stream: {timings[0].body[-200:]!r}")
                used.append(server.cpu() - before)
            r.add(f"cpu.{name}", (used[0] - used[1]) / 990 * 1e6)

    def run(self) -> None:
        bench = self.bench
        bench.started = time.monotonic()
        bench.progress("starting the upstream, claude-bridge, the floor proxy, the relay" + (
            ", litellm" if bench.args.litellm else ""))  # fmt: skip
        self.start()
        bench.progress("translating the bodies, checking every answer")
        self.build()
        self.check()
        for round_no in range(self.rounds):
            bench.progress(f"round {round_no + 1} of {self.rounds}: latency")
            self.latency(round_no)
            bench.progress(f"round {round_no + 1} of {self.rounds}: head-of-line, CPU per chunk")
            self.head_of_line()
            self.cpu_per_chunk()

    # -- the table -------------------------------------------------------------------------

    def table(self, header: list[str]) -> list[str]:
        r = self.results
        names = self.names(0)
        label = self.labels
        out = [
            *header,
            "",
            "## Latency (ms, whole response; added = minus direct, same round) and the server's"
            " CPU per request (µs; LiteLLM's with its workers)",
            f"{'scenario':<40}{'target':<15}{'p50':>8}{'p99':>8}{'added p50':>11}"
            f"{'added p99':>11}{'p99 x direct':>14}{'CPU':>8}",
        ]
        for scenario in LATENCY:
            for i, name in enumerate(names):
                key = f"{scenario.key}.{name}"
                added = name != "direct"
                ratio = run._ratio(r.med(key + ".p99"), r.med(f"{scenario.key}.direct.p99"))
                out.append(
                    f"{scenario.label if i == 0 else '':<40}{label[name]:<15}"
                    f"{run.fmt(r.med(key + '.p50')):>8}{run.fmt(r.med(key + '.p99')):>8}"
                    f"{run.fmt(r.med(key + '.added_p50')) if added else '':>11}"
                    f"{run.fmt(r.med(key + '.added_p99')) if added else '':>11}"
                    f"{run.fmt(ratio, 1, 'x') if added else '':>14}"
                    f"{run.fmt(r.med(key + '.cpu'), 0):>8}"
                )
        out += [
            "",
            f"## Head-of-line: {HOL_STREAMS} streams paced {HOL_DELAY_MS} ms a chunk; p99 of "
            f"(gap between chunks - {HOL_DELAY_MS} ms), alone and with the session body posted "
            f"every {HOL_BIG_EVERY:g} s (ms)",
            f"{'target':<15}{'alone':>10}{'with big':>10}{'extra':>10}",
        ]
        for name in ("direct", "bridge", "floor", "baseline"):
            if f"hol.{name}.alone" not in r.values:
                continue
            out.append(
                f"{label[name]:<15}{run.fmt(r.med(f'hol.{name}.alone')):>10}"
                f"{run.fmt(r.med(f'hol.{name}.big')):>10}{run.fmt(r.med(f'hol.{name}.extra')):>10}"
            )
        out += ["", "## CPU per streamed chunk, 1,000 chunks paced 1 ms (µs)"]
        for name in ("bridge", "floor", "baseline", "pipe", "litellm"):
            if f"cpu.{name}" in r.values:
                title = "bare TCP relay (wake-ups, sockets)" if name == "pipe" else label[name]
                out.append(f"{title:<40}{run.fmt(r.med(f'cpu.{name}'), 1):>10}")
        before = "baseline" in names
        out += [
            "",
            "## Issue 18's targets",
            f"{'figure':<58}{'now':>12}{'baseline' if before else '':>10}{'floor':>10}"
            f"{'target':>10}{'':>8}",
        ]
        checks: list[tuple[str, str, float]] = []
        for scenario in LATENCY:
            if scenario.p50_target is not None:
                checks.append(
                    (
                        f"added p50, {scenario.label}",
                        f"{scenario.key}.{{}}.added_p50",
                        scenario.p50_target,
                    )
                )
            checks.append(
                (
                    f"added p99, {scenario.label}",
                    f"{scenario.key}.{{}}.added_p99",
                    scenario.p99_target,
                )
            )
        checks.append(
            ("head-of-line: extra p99 gap over the paced streams alone", "hol.{}.extra", 2.0)
        )
        checks.append(("CPU per streamed chunk, paced (µs)", "cpu.{}", 40.0))
        for text, key, limit in checks:
            value = r.med(key.format("bridge"))
            then = run.fmt(r.med(key.format("baseline"))) if before else ""
            floor = r.med(key.format("floor"))
            verdict = "-" if value != value else ("met" if value <= limit else "MISSED")
            out.append(
                f"{text:<58}{run.fmt(value):>12}{then:>10}{run.fmt(floor):>10}"
                f"{run.fmt(limit):>10}{verdict:>8}"
                + ("  (the floor proxy misses it too)" if floor > limit else "")
            )
        if self.bench.litellm:
            out.append("")
            for scenario in LATENCY:
                ratio = run._ratio(
                    r.med(f"{scenario.key}.litellm.added_p99"),
                    r.med(f"{scenario.key}.bridge.added_p99"),
                )
                out.append(f"LiteLLM's added p99 / claude-bridge's, {scenario.label}: "
                           f"{run.fmt(ratio, 1, 'x')}")  # fmt: skip
        out += [f"note: {note}" for note in self.bench.notes]
        return out


async def _paced_window(
    paced: loadgen.Target, big: loadgen.Target | None, seconds: float
) -> list[float]:
    """`HOL_STREAMS` clients read `paced` streams back to back for `seconds` while, if `big`
    is given, one more posts it every `HOL_BIG_EVERY` seconds; each gap between two pieces of
    a stream, minus the pacing, in ms."""
    until = time.perf_counter() + seconds
    gaps: list[float] = []
    request = paced.request()

    async def client() -> None:
        conn = await loadgen.Connection.open(paced)
        try:
            while time.perf_counter() < until:
                waits: list[tuple[float, float]] = []
                timing = await conn.exchange(request, keep_body=False, waits=waits)
                if not paced.ok(timing.status, timing.body):
                    raise RuntimeError(f"a paced stream failed: {timing.body[-200:]!r}")
                # Only the gaps between content pieces: the first wait is the request's own
                # latency, and an OpenAI stream's role chunk (before the text) and its usage
                # chunk (after the finish) carry no Anthropic event of their own: claude-bridge
                # sends their news with the next piece, a gap of two pacings that is the
                # translation, not a wait (it made 2% of the gaps, the whole of the p99).
                gaps.extend(
                    (wait - HOL_DELAY_MS / 1000) * 1000 for _, wait in waits[2:-HOL_HELD_END]
                )
        finally:
            conn.close()

    async def sender(target: loadgen.Target) -> None:
        conn = await loadgen.Connection.open(target)
        request = target.request()
        try:
            while (start := time.perf_counter()) < until:
                timing = await conn.exchange(request, keep_body=False)
                if not target.ok(timing.status, timing.body):
                    raise RuntimeError(f"a big request failed: {timing.body[-200:]!r}")
                await asyncio.sleep(max(0.0, start + HOL_BIG_EVERY - time.perf_counter()))
        finally:
            conn.close()

    tasks = [client() for _ in range(HOL_STREAMS)] + ([sender(big)] if big else [])
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 60)
    return gaps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take medians over")
    parser.add_argument("--litellm", metavar="EXE", help="LiteLLM's `litellm` command")
    parser.add_argument("--bridge-cmd", help="command line that runs claude-bridge")
    parser.add_argument(
        "--baseline-cmd", help="another build's command line, measured in the same rounds"
    )
    parser.add_argument(
        "--bridge-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for claude-bridge serve (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the raw per-round figures")
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_before, busy_before = os.getloadavg(), run.machine_load()
    with tempfile.TemporaryDirectory(prefix="claude-bridge-agent-") as tmp, run.more_files():
        agent = Agent(args, Path(tmp))
        try:
            agent.run()
        finally:
            agent.bench.stop_all()
    load_after, busy_after = os.getloadavg(), run.machine_load()
    header = [
        f"# claude-bridge agent-shaped benchmark ({args.rounds} rounds, "
        f"{time.monotonic() - started:.0f} s; asyncio load generator"
        + (f"; LiteLLM: {args.litellm}" if args.litellm else "") + ")",
        f"machine: {os.cpu_count()} CPUs; load average {load_before[0]:.2f} at start, "
        f"{load_after[0]:.2f} at end; other processes kept {busy_before:.2f} cores busy just "
        f"before the run, {busy_after:.2f} just after",
        f"bodies: small {agent.sizes['small']:,} B, 50 KB request {agent.sizes['cc50k']:,} B, "
        f"session {agent.sizes['session']:,} B",
    ]  # fmt: skip
    print("\n".join(agent.table(header)))
    if args.json:
        Path(args.json).write_text(json.dumps(agent.results.values, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
