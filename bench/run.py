"""The overhead benchmark: what claude-bridge adds between a client and a fast upstream.

    .venv/bin/python bench/run.py [--quick] [--litellm /tmp/litellm-venv/bin/litellm]

Starts, as separate processes on loopback: the canned upstream (`bench/upstream.py`),
`claude-bridge serve` pointed at it, a bare TCP relay (`bench/pipe.py`: the floor any Python
proxy pays per streamed chunk), and optionally LiteLLM's proxy. Drives them with `wrk`
(when installed; else the asyncio client in `bench/loadgen.py`) and prints one table. Every
figure is the median over rounds; "added" figures and ratios are computed within each round
(the same seconds of the same machine), then their median is taken. Targets are interleaved
round by round, in a rotating order, so drift in the machine's load hits them alike.

Sections: latency at concurrency 1 (small request, short stream, 50 KB Claude Code request
as JSON and as a stream), throughput at concurrency 32 (JSON and a 50-chunk stream),
streaming (per-chunk cost on 1,000-chunk streams, time to first byte), memory (RSS idle and
with 200 open slow streams; 1,000 concurrent slow streams must all complete).

Full run: a few minutes (longer with LiteLLM); `--quick`: about 30 s. Loopback only, every
load bounded in time or count; the processes it starts are stopped when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
from loadgen import Target, median

BENCH = Path(__file__).resolve().parent
CC50K = BENCH / "data" / "claude_code_50k.anthropic.json"
CLI = Path(sys.executable).parent / "claude-bridge"
BIG_MODEL = "bench-model"
SMALL_MODEL = "bench-model-small"
CLIENT_MODEL = "claude-sonnet-4-6"
SECTIONS = ("latency", "throughput", "stream", "memory")
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Plan:
    rounds: int
    latency_seconds: float
    throughput_seconds: float
    concurrency: int
    ttfb_requests: int
    burst_streams: int
    open_streams: int
    open_chunks: int
    open_delay_ms: int
    many_streams: int
    many_chunks: int
    many_delay_ms: int
    swarm_timeout: float  # seconds; a stream not done by then counts as failed


FULL = Plan(3, 2.0, 3.0, 32, 100, 5, 200, 30, 100, 1000, 10, 100, 90.0)
QUICK = Plan(3, 0.3, 1.0, 32, 20, 3, 200, 15, 100, 1000, 5, 60, 15.0)


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                if answer.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}{path} within {timeout:.0f} s")


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    restart: Callable[[], Server] | None = None

    def pids(self) -> list[int]:
        """The process and its descendants (LiteLLM may fork workers)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree = [self.proc.pid]
        for pid in tree:
            tree.extend(child for child, parent in parents.items() if parent == pid)
        return tree

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the process tree."""
        user, system = self.cpu_split()
        return user + system

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds used so far by the process tree."""
        user = system = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                user += int(fields[11])
                system += int(fields[12])
        return user / TICK, system / TICK

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start(
    name: str, command: list[str], env: dict[str, str], tmp: Path, port: int, ready: str
) -> Server:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,  # its own process group: stopped as a whole, and only it
        )
    server = Server(name, port, proc, log)
    server.restart = functools.partial(start, name, command, env, tmp, port, ready)
    try:
        wait_http(port, ready, 120 if name == "litellm" else 30, proc)
    except RuntimeError as exc:
        server.stop()
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} did not start: {exc}\n{tail}") from None
    return server


def routed_bench(
    bridge_cmd: str | None, tmp: Path, name: str, model: str, command: Callable[[int], list[str]]
) -> Bench:
    """The benchmark's servers (not started yet: `start_all`) plus a second upstream, `name`,
    started now from `command(port)` (it must answer `GET /stats`), to which the bridge sends
    the client model `model`: a route in a config file in `tmp`, the bridge's
    `CLAUDE_BRIDGE_HOME`. For a scenario whose upstream must not be the shared one."""
    port = free_port()
    second = start(name, command(port), {}, tmp, port, "/stats")
    base_url = json.dumps(f"http://127.0.0.1:{port}/v1")
    (tmp / "config.toml").write_text(
        f'[upstreams.{name}]\nbase_url = {base_url}\napi_key = "sk-bench"\n\n'
        f'[[routes]]\npattern = "{model}"\nupstream = "{name}"\nmodel = "{BIG_MODEL}"\n'
    )
    options = argparse.Namespace(
        bridge_cmd=bridge_cmd,
        bridge_env=[f"CLAUDE_BRIDGE_HOME={tmp}"],
        litellm=None,
        no_wrk=True,
    )
    bench = Bench(options, QUICK, tmp)
    bench.servers.append(second)
    return bench


def slow_model(delay_ms: int) -> str:
    """LiteLLM drops `metadata.user_id`, so its slow streams come from a model whose
    `api_base` path asks the upstream for the delay."""
    return f"bench-slow-{delay_ms}"


def litellm_config(path: Path, upstream: int, delays: tuple[int, ...]) -> None:
    def entry(name: str, prefix: str = "") -> dict[str, Any]:
        params = {
            "model": f"openai/{BIG_MODEL}",
            "api_base": f"http://127.0.0.1:{upstream}{prefix}/v1",
            "api_key": "sk-bench",
        }
        return {"model_name": name, "litellm_params": params}

    names = [CLIENT_MODEL, json.loads(CC50K.read_text())["model"]]
    models = [entry(name) for name in names]
    models += [entry(slow_model(delay), f"/d{delay}") for delay in sorted(set(delays))]
    config = {
        "model_list": models,
        "litellm_settings": {
            "use_chat_completions_url_for_anthropic_messages": True,
            "drop_params": True,
        },
        "general_settings": {"master_key": "sk-bench"},
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML


# -- bodies ----------------------------------------------------------------------------------


def anthropic_small(stream: bool, chunks: int, user: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": CLIENT_MODEL,
        "max_tokens": chunks,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    }
    if stream:
        body["stream"] = True
    if user:
        body["metadata"] = {"user_id": user}
    return body


def compact(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def translate_all(
    bodies: dict[str, dict[str, Any]], bridge: list[str], base_url: str
) -> dict[str, bytes]:
    """The OpenAI body claude-bridge sends for each Anthropic body (`claude-bridge translate`,
    with the served base URL, so the same provider rules apply), so the direct baseline posts
    exactly what the bridge would."""
    env = {
        **os.environ,
        "OPENAI_BASE_URL": base_url,
        "BIG_MODEL": BIG_MODEL,
        "SMALL_MODEL": SMALL_MODEL,
    }
    procs = {
        name: subprocess.Popen(
            [*bridge, "translate", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for name in bodies
    }
    out: dict[str, bytes] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(compact(bodies[name]), timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"claude-bridge translate failed: {stderr.decode()[-500:]}")
        out[name] = compact(json.loads(stdout))
    return out


# -- results ---------------------------------------------------------------------------------


@dataclass
class Results:
    """Raw per-round figures: key -> list of values (one per round)."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def med(self, key: str) -> float:
        return median(self.values.get(key, []))


def fmt(value: float, digits: int = 2, unit: str = "") -> str:
    if value != value:  # nan
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def machine_load(seconds: float = 1.0) -> float:
    """Cores kept busy by everything on the machine over `seconds` (while we are idle)."""
    busy0, total0 = cpu_busy()
    time.sleep(seconds)
    busy1, total1 = cpu_busy()
    cores = os.cpu_count() or 1
    return (busy1 - busy0) / max(total1 - total0, 1) * cores


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, tmp: Path) -> None:
        self.args = args
        self.plan = plan
        self.tmp = tmp
        self.results = Results()
        self.servers: list[Server] = []
        self.use_wrk = not args.no_wrk and loadgen.wrk_path() is not None
        self.bridge_cmd = shlex.split(args.bridge_cmd) if args.bridge_cmd else [str(CLI)]
        self.notes: list[str] = []
        self.broken: set[str] = set()  # targets that stopped answering streams

    # processes

    def start_all(self) -> None:
        upstream_port = free_port()
        self.upstream = start(
            "upstream",
            [sys.executable, str(BENCH / "upstream.py"), "--port", str(upstream_port)],
            {},
            self.tmp,
            upstream_port,
            "/stats",
        )
        self.servers.append(self.upstream)
        bridge_port = free_port()
        env = {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "BIG_MODEL": BIG_MODEL,
            "SMALL_MODEL": SMALL_MODEL,
        }
        for item in self.args.bridge_env:
            key, _, value = item.partition("=")
            env[key] = value
        self.bridge = start(
            "claude-bridge",
            [*self.bridge_cmd, "serve", "--port", str(bridge_port), "--no-dashboard"],
            env,
            self.tmp,
            bridge_port,
            "/",
        )
        self.servers.append(self.bridge)
        pipe_port = free_port()
        self.pipe = start(
            "pipe",
            [
                *(sys.executable, str(BENCH / "pipe.py"), "--port", str(pipe_port)),
                *("--upstream-port", str(upstream_port)),
            ],
            {},
            self.tmp,
            pipe_port,
            "/stats",
        )
        self.servers.append(self.pipe)
        self.litellm: Server | None = None
        if self.args.litellm:
            port = free_port()
            config = self.tmp / "litellm.yaml"
            delays = (self.plan.open_delay_ms, self.plan.many_delay_ms)
            litellm_config(config, upstream_port, delays)
            self.litellm = start(
                "litellm",
                [
                    *(self.args.litellm, "--config", str(config), "--host", "127.0.0.1"),
                    *("--port", str(port), "--num_workers", "1"),
                ],
                {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                self.tmp,
                port,
                "/health/liveliness",
            )
            self.servers.append(self.litellm)

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    # targets

    def build_targets(self) -> None:
        p = self.plan
        cc = json.loads(CC50K.read_text())
        cc_json = {**cc, "stream": False}
        anthropic = {
            "small_json": anthropic_small(False, 64),
            "small_stream": anthropic_small(True, 10),
            "cc50k_json": cc_json,
            "cc50k_stream": cc,
            "stream50": anthropic_small(True, 50),
            "stream1000": anthropic_small(True, 1000),
            "paced1000": anthropic_small(True, 1000, "bench-delay-1"),
            "paced10": anthropic_small(True, 10, "bench-delay-1"),
            "open": anthropic_small(True, p.open_chunks, f"bench-delay-{p.open_delay_ms}"),
            "many": anthropic_small(True, p.many_chunks, f"bench-delay-{p.many_delay_ms}"),
        }
        shapes = ("small_json", "small_stream", "cc50k_json", "cc50k_stream")
        translated = translate_all(
            {name: anthropic[name] for name in shapes},
            self.bridge_cmd,
            f"http://127.0.0.1:{self.upstream.port}/v1",
        )
        openai: dict[str, bytes] = {}
        for name, body in anthropic.items():
            if name in translated:
                openai[name] = translated[name]
                continue
            # The other streams differ from the short one only in max_tokens and user.
            derived = json.loads(translated["small_stream"])
            derived["max_tokens"] = body["max_tokens"]
            if "metadata" in body:
                derived["user"] = body["metadata"]["user_id"]
            openai[name] = compact(derived)
        self.targets: dict[str, dict[str, Target]] = {}
        for name, body in anthropic.items():
            stream = bool(body.get("stream"))
            raw = compact(body)
            row = {
                "direct": Target(
                    "direct", self.upstream.port, "/v1/chat/completions", openai[name], stream
                ),
                "bridge": Target("bridge", self.bridge.port, "/v1/messages", raw, stream),
            }
            if name in ("paced1000", "paced10"):
                row["pipe"] = Target(
                    "pipe", self.pipe.port, "/v1/chat/completions", openai[name], stream
                )
            if self.litellm is not None:
                if name in ("open", "many"):
                    delay = p.open_delay_ms if name == "open" else p.many_delay_ms
                    raw = compact({**body, "model": slow_model(delay)})
                row["litellm"] = Target("litellm", self.litellm.port, "/v1/messages", raw, stream)
            self.targets[name] = row
        self.sizes = {name: len(compact(body)) for name, body in anthropic.items()}

    def names(self, round_no: int) -> list[str]:
        names = ["direct", "bridge"] + (["litellm"] if self.litellm else [])
        shift = round_no % len(names)
        return names[shift:] + names[:shift]

    def server(self, name: str) -> Server | None:
        return {"bridge": self.bridge, "litellm": self.litellm, "pipe": self.pipe}.get(name)

    def check(self) -> None:
        """Every target answers every request as expected before anything is timed."""
        for scenario in ("small_json", "small_stream", "cc50k_json", "cc50k_stream", "stream50"):
            for name, target in self.targets[scenario].items():
                timings = loadgen.sequential(target, 20)
                bad = [t for t in timings if not target.ok(t.status, t.body)]
                if bad:
                    raise RuntimeError(
                        f"{name} answered {scenario} badly: {bad[0].status} {bad[0].body[:300]!r}"
                    )

    # sections

    def measure_load(self, key: str, target: Target, concurrency: int, seconds: float) -> None:
        server = self.server(target.name)
        cpu0 = server.cpu() if server else 0.0
        result = loadgen.load(target, concurrency, seconds, self.use_wrk)
        cpu = (server.cpu() - cpu0) if server else float("nan")
        r = self.results
        r.add(f"{key}.{target.name}.p50", result.p50)
        r.add(f"{key}.{target.name}.p99", result.p99)
        r.add(f"{key}.{target.name}.rps", result.rps)
        r.add(f"{key}.{target.name}.errors", result.errors)
        r.add(f"{key}.{target.name}.cpu_ms", cpu * 1000 / max(result.requests, 1))

    def latency(self, round_no: int) -> None:
        for scenario in ("small_json", "small_stream", "cc50k_json", "cc50k_stream"):
            for name in self.names(round_no):
                target = self.targets[scenario][name]
                self.measure_load(f"lat.{scenario}", target, 1, self.plan.latency_seconds)
            self.diff(f"lat.{scenario}")

    def throughput(self, round_no: int) -> None:
        for scenario in ("small_json", "stream50"):
            for name in self.names(round_no):
                target = self.targets[scenario][name]
                key = f"tp.{scenario}"
                self.measure_load(key, target, self.plan.concurrency, self.throughput_seconds)
            r = self.results
            for name in self.targets[scenario]:
                rps = r.values[f"{key}.{name}.rps"][-1]
                r.add(f"{key}.{name}.vs_direct", _ratio(rps, r.values[f"{key}.direct.rps"][-1]))
            if self.litellm:
                ratio = _ratio(
                    r.values[f"{key}.bridge.rps"][-1], r.values[f"{key}.litellm.rps"][-1]
                )
                r.add(f"{key}.bridge.vs_litellm", ratio)

    @property
    def throughput_seconds(self) -> float:
        # LiteLLM takes about 2 s a stream at concurrency 32 here: shorter runs finish none.
        return max(self.plan.throughput_seconds, 4.0 if self.litellm else 0.0)

    def diff(self, key: str) -> None:
        r = self.results
        for name in ("bridge", "litellm"):
            for q in ("p50", "p99"):
                mine = r.values.get(f"{key}.{name}.{q}")
                if mine:
                    r.add(f"{key}.{name}.added_{q}", mine[-1] - r.values[f"{key}.direct.{q}"][-1])

    def streams(self, name: str, scenario: str, count: int) -> list[loadgen.Timing] | None:
        """`count` streams one after another, each checked; None (and a note) when the target
        failed one or did not finish in time, after which it is not asked for streams again."""
        if name in self.broken:
            return None
        target = self.targets[scenario][name]
        nan = float("nan")
        try:
            timings = loadgen.sequential(target, count, timeout=30 + 0.5 * count)
        except (TimeoutError, OSError, ValueError) as exc:
            problem = f"{type(exc).__name__} {exc}".strip()
        else:
            bad = [t for t in timings if not target.ok(t.status, t.body)]
            if not bad:
                return timings
            problem = f"status {bad[0].status}: {bad[0].body[-200:]!r}"
        self.broken.add(name)
        self.notes.append(
            f"{TARGET_LABELS[name]} failed a {scenario} stream ({problem}); "
            "its later stream figures are left out"
        )
        self.results.add(f"failed.{name}", nan)
        return None

    def stream(self, round_no: int) -> None:
        r = self.results
        p = self.plan
        nan = float("nan")
        for name in self.names(round_no):
            timings = self.streams(name, "small_stream", p.ttfb_requests)
            r.add(f"ttfb.{name}", median([t.ttfb * 1000 for t in timings]) if timings else nan)
        for name in self.targets["small_stream"]:
            if name != "direct":
                r.add(
                    f"ttfb.{name}.added", r.values[f"ttfb.{name}"][-1] - r.values["ttfb.direct"][-1]
                )
        # Burst: the upstream writes 1,000 chunks back to back; added wall time per chunk.
        for name in self.names(round_no):
            server = self.server(name)
            cpu0 = server.cpu() if server else 0.0
            timings = self.streams(name, "stream1000", p.burst_streams)
            r.add(f"burst.{name}", median([t.total for t in timings]) if timings else nan)
            if server:
                cpu = (server.cpu() - cpu0) / p.burst_streams / 1000 * 1e6
                r.add(f"burst.{name}.cpu_us", cpu if timings else nan)
        for name in self.targets["stream1000"]:
            if name != "direct":
                added = r.values[f"burst.{name}"][-1] - r.values["burst.direct"][-1]
                r.add(f"burst.{name}.added_us", added / 1000 * 1e6)
        # Paced: a chunk a millisecond, so each arrives on its own, as tokens do; CPU per chunk
        # beyond a 10-chunk stream's (which carries the per-request cost).
        for name in ("bridge", "litellm", "pipe"):
            server = self.server(name)
            if server is None or name not in self.targets["paced1000"]:
                continue
            used: list[tuple[float, float]] = []
            for scenario in ("paced1000", "paced10"):
                user0, system0 = server.cpu_split()
                if self.streams(name, scenario, 1) is None:
                    break
                user1, system1 = server.cpu_split()
                used.append((user1 - user0, system1 - system0))
            if len(used) < 2:
                continue
            user = (used[0][0] - used[1][0]) / 990 * 1e6
            system = (used[0][1] - used[1][1]) / 990 * 1e6
            r.add(f"paced.{name}.cpu_us", user + system)
            r.add(f"paced.{name}.user_us", user)
            r.add(f"paced.{name}.sys_us", system)

    def fresh(self) -> None:
        """The memory section runs on new processes: RSS from a clean start, and concurrency
        not hampered by whatever the load rounds left behind."""
        for name in ("bridge", "litellm"):
            server = self.server(name)
            if server is None or server.restart is None:
                continue
            self.results.add(f"rss.{name}.loaded", server.rss_mb())
            server.stop()
            new = server.restart()
            self.servers[self.servers.index(server)] = new
            if name == "bridge":
                self.bridge = new
            else:
                self.litellm = new
            self.results.add(f"rss.{name}.idle", new.rss_mb())

    def memory(self) -> None:
        r = self.results
        p = self.plan
        self.fresh()
        for name in ("bridge", "litellm"):
            server = self.server(name)
            if server is None:
                continue
            target = self.targets["open"][name]
            for scenario in ("small_json", "small_stream", "cc50k_json"):
                loadgen.sequential(self.targets[scenario][name], 10, timeout=60)
            r.add(f"rss.{name}.before_open", server.rss_mb())
            peak, swarm = self.while_sampling(
                server, functools.partial(loadgen.swarm, target, p.open_streams, p.swarm_timeout)
            )
            r.add(f"rss.{name}.open", peak)
            r.add(f"open.{name}.failed", swarm.failed)
            if swarm.failures:
                self.notes.append(f"{name}, {p.open_streams} open streams: {swarm.failures[:2]}")
        for name in ("bridge", "litellm") if self.args.litellm_many else ("bridge",):
            server = self.server(name)
            if server is None:
                continue
            target = self.targets["many"][name]
            self.reset_upstream()
            peak, swarm = self.while_sampling(
                server, functools.partial(loadgen.swarm, target, p.many_streams, p.swarm_timeout)
            )
            stats = self.upstream_stats()
            r.add(f"many.{name}.ok", swarm.ok)
            r.add(f"many.{name}.failed", swarm.failed)
            r.add(f"many.{name}.seconds", swarm.seconds)
            r.add(f"many.{name}.upstream_peak", stats["streams_peak"])
            r.add(f"rss.{name}.many", peak)
            r.add(f"rss.{name}.after", server.rss_mb())
            if swarm.failures:
                self.notes.append(f"{name}, {p.many_streams} streams: {swarm.failures[:2]}")

    def while_sampling(
        self, server: Server, work: Callable[[], loadgen.Swarm]
    ) -> tuple[float, loadgen.Swarm]:
        """Runs `work` in a thread while sampling the server's RSS; (peak MB, result)."""
        box: list[loadgen.Swarm] = []
        thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
        thread.start()
        peak = 0.0
        while thread.is_alive():
            peak = max(peak, server.rss_mb())
            thread.join(0.05)
        if not box:
            raise RuntimeError("the swarm client crashed")
        return peak, box[0]

    def upstream_stats(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.upstream.port}/stats"
        with urllib.request.urlopen(url, timeout=5) as answer:
            stats: dict[str, int] = json.loads(answer.read())
            return stats

    def reset_upstream(self) -> None:
        url = f"http://127.0.0.1:{self.upstream.port}/stats"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):
            pass

    def progress(self, what: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {what}", file=sys.stderr, flush=True)

    def run(self) -> None:
        sections = self.args.sections
        self.started = time.monotonic()
        self.progress(
            "starting the upstream, claude-bridge" + (", litellm" if self.args.litellm else "")
        )
        self.start_all()
        self.progress("translating the bodies, checking every answer")
        self.build_targets()
        self.check()
        for round_no in range(self.plan.rounds):
            self.progress(f"round {round_no + 1} of {self.plan.rounds}")
            if "latency" in sections:
                self.latency(round_no)
            if "throughput" in sections:
                self.throughput(round_no)
            if "stream" in sections:
                self.stream(round_no)
        if "memory" in sections:
            self.progress("memory and concurrent streams")
            self.memory()


# -- the table -------------------------------------------------------------------------------

LABELS = {
    "small_json": "small JSON",
    "small_stream": "short stream, 10 chunks",
    "cc50k_json": "Claude Code 50 KB, JSON",
    "cc50k_stream": "Claude Code 50 KB, stream",
    "stream50": "stream, 50 chunks",
}
TARGET_LABELS = {"direct": "direct", "bridge": "claude-bridge", "litellm": "litellm"}


def table(bench: Bench, header: list[str]) -> list[str]:
    r = bench.results
    has_litellm = bench.litellm is not None
    names = ["direct", "bridge"] + (["litellm"] if has_litellm else [])
    out = header[:]
    sections = bench.args.sections
    if "latency" in sections:
        out += [
            "",
            "## Added latency, concurrency 1 (ms; whole response; added = minus direct, "
            "same round)",
            f"{'request':<36}{'target':<15}{'p50':>8}{'p99':>8}{'added p50':>11}"
            f"{'added p99':>11}{'CPU ms/req':>12}",
        ]
        for scenario in ("small_json", "small_stream", "cc50k_json", "cc50k_stream"):
            label = f"{LABELS[scenario]} ({bench.sizes[scenario] / 1024:.1f} KiB)"
            for i, name in enumerate(names):
                key = f"lat.{scenario}.{name}"
                added = name != "direct"
                out.append(
                    f"{label if i == 0 else '':<36}{TARGET_LABELS[name]:<15}"
                    f"{fmt(r.med(key + '.p50')):>8}{fmt(r.med(key + '.p99')):>8}"
                    f"{fmt(r.med(key + '.added_p50')) if added else '':>11}"
                    f"{fmt(r.med(key + '.added_p99')) if added else '':>11}"
                    f"{fmt(r.med(key + '.cpu_ms')) if added else '':>12}"
                )
    if "throughput" in sections:
        out += [
            "",
            f"## Throughput, concurrency {bench.plan.concurrency} (requests/s; ratios within "
            "each round)",
            f"{'request':<36}{'target':<15}{'req/s':>9}{'errors':>8}{'x direct':>10}"
            f"{'bridge/litellm':>16}{'CPU ms/req':>12}",
        ]
        for scenario in ("small_json", "stream50"):
            for i, name in enumerate(names):
                key = f"tp.{scenario}.{name}"
                versus = fmt(r.med(key + ".vs_litellm"), 1, "x") if name == "bridge" else ""
                errors = sum(r.values.get(key + ".errors", []))
                out.append(
                    f"{LABELS[scenario] if i == 0 else '':<36}{TARGET_LABELS[name]:<15}"
                    f"{fmt(r.med(key + '.rps'), 0):>9}{errors:>8.0f}"
                    f"{fmt(r.med(key + '.vs_direct'), 3):>10}"
                    f"{versus if has_litellm else '':>16}"
                    f"{fmt(r.med(key + '.cpu_ms')) if name != 'direct' else '':>12}"
                )
    if "stream" in sections:
        out += [
            "",
            "## Streaming (concurrency 1)",
            f"{'figure':<58}{'claude-bridge':>14}{'litellm' if has_litellm else '':>10}",
        ]

        def row(label: str, key: str, digits: int = 1) -> None:
            bridge = fmt(r.med(key.format("bridge")), digits)
            other = fmt(r.med(key.format("litellm")), digits) if has_litellm else ""
            out.append(f"{label:<58}{bridge:>14}{other:>10}")

        row("per chunk, 1,000-chunk burst: added wall time (µs)", "burst.{}.added_us")
        row("per chunk, 1,000-chunk burst: server CPU (µs)", "burst.{}.cpu_us")
        row("per chunk, 1,000 chunks paced 1 ms: server CPU (µs)", "paced.{}.cpu_us")
        row("  of which user (the process's own code)", "paced.{}.user_us")
        row("  of which system (kernel: loopback TCP, epoll)", "paced.{}.sys_us")
        out.append(
            f"{'  floor: a bare TCP relay on uvloop, same stream (µs)':<58}"
            f"{fmt(r.med('paced.pipe.cpu_us')):>14}"
        )
        out.append(
            f"{'1,000-chunk burst stream, direct: whole stream (ms)':<58}"
            f"{fmt(r.med('burst.direct') * 1000):>14}"
        )
        row("time to first byte, 10-chunk stream (ms)", "ttfb.{}", 2)
        row("time to first byte, added (ms)", "ttfb.{}.added", 2)
        out.append(f"{'time to first byte, direct (ms)':<58}{fmt(r.med('ttfb.direct')):>14}")
    if "memory" in sections:
        p = bench.plan
        out += [
            "",
            "## Memory and concurrency",
            f"{'figure':<58}{'claude-bridge':>14}{'litellm' if has_litellm else '':>10}",
        ]

        def mem(label: str, key: str, digits: int = 0) -> None:
            bridge = fmt(r.med(key.format("bridge")), digits)
            other = fmt(r.med(key.format("litellm")), digits) if has_litellm else ""
            out.append(f"{label:<58}{bridge:>14}{other:>10}")

        mem("RSS after the load rounds (MB)", "rss.{}.loaded")
        out.append("a new process for what follows:")
        mem("RSS idle, just started (MB)", "rss.{}.idle")
        mem("RSS after 30 requests (MB)", "rss.{}.before_open")
        mem(
            f"RSS peak, {p.open_streams} open streams, {p.open_chunks} x {p.open_delay_ms} ms (MB)",
            "rss.{}.open",
        )
        mem(f"  failed of those {p.open_streams}", "open.{}.failed")
        mem(
            f"{p.many_streams} concurrent streams, {p.many_chunks} x {p.many_delay_ms} ms: ok",
            "many.{}.ok",
        )
        mem("  failed", "many.{}.failed")
        mem(f"  wall time (s; limit {p.swarm_timeout:.0f})", "many.{}.seconds", 1)
        mem("  most streams open upstream at once", "many.{}.upstream_peak")
        mem("  RSS peak (MB)", "rss.{}.many")
        mem("RSS at the end (MB)", "rss.{}.after")
    out += ["", "## Targets"]
    checks = []
    if "latency" in sections:
        checks += [
            ("added p50, small request <= 1 ms", r.med("lat.small_json.bridge.added_p50"), 1.0),
            (
                "added p50, 50 KB Claude Code request <= 3 ms",
                r.med("lat.cc50k_json.bridge.added_p50"),
                3.0,
            ),
        ]
    if "stream" in sections:
        checks.append(
            ("per streamed chunk <= 30 µs (paced, CPU)", r.med("paced.bridge.cpu_us"), 30.0)
        )
        checks.append(
            ("per streamed chunk <= 30 µs (burst, wall)", r.med("burst.bridge.added_us"), 30.0)
        )
    if "memory" in sections:
        checks.append(("RSS <= 120 MB with 200 open streams", r.med("rss.bridge.open"), 120.0))
    for label, value, limit in checks:
        verdict = "-" if value != value else ("met" if value <= limit else "MISSED")
        out.append(f"{label:<58}{fmt(value):>14}{verdict:>10}")
    if "throughput" in sections:
        if has_litellm:
            value = r.med("tp.small_json.bridge.vs_litellm")
            verdict = "met" if value >= 10 else "MISSED"
            out.append(f"{'throughput >= 10x LiteLLM (small JSON, c=32)':<58}"
                       f"{fmt(value, 1, 'x'):>14}{verdict:>10}")  # fmt: skip
        else:
            out.append("throughput vs LiteLLM: not measured (no --litellm); see x direct above")
    if "memory" in sections:
        failed = r.med("many.bridge.failed")
        verdict = "met" if failed == 0 else "MISSED"
        out.append(f"{'1,000 concurrent slow streams, none failed':<58}{fmt(failed, 0):>14}"
                   f"{verdict:>10}")  # fmt: skip
    for note in bench.notes:
        out.append(f"note: {note}")
    return out


def version_of(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        text = (result.stdout or result.stderr).strip().splitlines()
        return text[0] if text else "?"
    return "?"


@contextlib.contextmanager
def more_files() -> Iterator[None]:
    """1,000 streams need 2,000+ sockets in the bridge: raise the soft limit (children
    inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, 65536)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="claude-bridge overhead benchmark (loopback only; see bench/run.py)."
    )
    parser.add_argument("--quick", action="store_true", help="about 30 s instead of minutes")
    parser.add_argument("--rounds", type=int, help="rounds to take medians over (default 3)")
    parser.add_argument(
        "--litellm", metavar="EXE", help="LiteLLM's `litellm` command, to compare with"
    )
    parser.add_argument(
        "--litellm-many",
        action="store_true",
        help="also send LiteLLM the 1,000 concurrent slow streams",
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio client only")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--bridge-cmd",
        help="command line that runs claude-bridge (default: this venv's `claude-bridge`), "
        "e.g. to measure a modified copy",
    )
    parser.add_argument(
        "--bridge-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for claude-bridge serve (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw per-round figures")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    started = time.monotonic()
    load_before = os.getloadavg()
    busy_before = machine_load()
    with tempfile.TemporaryDirectory(prefix="claude-bridge-bench-") as tmp, more_files():
        bench = Bench(args, plan, Path(tmp))
        try:
            bench.run()
        finally:
            bench.stop_all()
        load_after = os.getloadavg()
        busy_after = machine_load()
        wrk = version_of(["wrk", "--version"]) if bench.use_wrk else ""
        generator = (
            f"wrk ({wrk.split(' [')[0]}) for latency and throughput"
            if bench.use_wrk
            else "asyncio client"
        )
        litellm = f", LiteLLM: {args.litellm}" if args.litellm else ""
        header = [
            f"# claude-bridge overhead benchmark ({'quick' if args.quick else 'full'}, "
            f"{plan.rounds} rounds, {time.monotonic() - started:.0f} s)",
            f"load generator: {generator}; asyncio client for streams{litellm}",
            f"machine: {os.cpu_count()} CPUs; load average {load_before[0]:.2f} at start, "
            f"{load_after[0]:.2f} at end; other processes kept {busy_before:.2f} cores busy "
            f"just before the run, {busy_after:.2f} just after",
        ]
        lines = table(bench, header)
        print("\n".join(lines))
        if args.json:
            Path(args.json).write_text(
                json.dumps({"plan": vars(plan), "values": bench.results.values}, indent=1)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
