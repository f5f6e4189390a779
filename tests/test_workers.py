"""`claude-bridge serve --workers 2` as a user runs it: a real process on a free port in front of
a scripted upstream (proxy/workers.py, cli/commands/serve.py).

Two runs: one records a journal, answers requests on fresh connections, and is stopped with
SIGTERM while a stream is in flight; one loses a worker to SIGKILL. Each costs a few seconds
(two interpreters start per run).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from conftest import UPSTREAM_KEY
from typer.testing import CliRunner
from upstream import FakeUpstream, JSONReply, Pause, SSEReply, completion, text_stream

from claude_bridge.cli import listen
from claude_bridge.cli.main import app as cli_app
from claude_bridge.proxy.config import ConfigError, load_settings
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.workers import Backoff, Relay, Supervisor, Worker

CLI = Path(sys.executable).parent / "claude-bridge"
WAIT = 30.0
"""Seconds anything may take before the test fails instead of hanging."""
HI = [{"role": "user", "content": "hi"}]
REQUESTS_200 = 'claude_bridge_requests_total{model="big",status="200",upstream="default"}'


@dataclass
class Serve:
    """A running `claude-bridge serve --log-format json`: its JSON lines, read as they come."""

    process: subprocess.Popen[str]
    out: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    err: queue.Queue[str] = field(default_factory=queue.Queue)
    url: str = ""
    readers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Serve:
        assert self.process.stdout is not None and self.process.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        listening = self.next_event(lambda e: e.get("event") == "listening")
        self.url = f"http://{listening['listen']}"
        return self

    def _read(self, stream: IO[str], is_json: bool) -> None:
        for line in stream:
            if is_json:
                self.out.put(json.loads(line))
            else:
                self.err.put(line)

    def next_event(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            event = self.out.get(timeout=WAIT)
            if wanted(event):
                return event

    def next_log(self, text: str) -> str:
        while True:
            line = self.err.get(timeout=WAIT)
            if text in line:
                return line

    def workers(self) -> set[int]:
        """The worker processes' pids (the parent's children but multiprocessing's tracker)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == self.process.pid and b"spawn_main" in command:
                found.add(int(entry.name))
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(WAIT)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(WAIT)
            for worker in self.workers():  # none, unless the parent failed to stop them
                os.kill(worker, signal.SIGKILL)
            for reader in self.readers:  # to the end of the output: every process is gone
                reader.join(WAIT)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def serve(upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def run(*args: str) -> Serve:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CLAUDE_BRIDGE_", "OPENAI_"))
            },
            "CLAUDE_BRIDGE_HOME": str(tmp_path / "home"),
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "BIG_MODEL": "big",
            "CLAUDE_BRIDGE_RETRIES": "0",
        }
        command = [str(CLI), "serve", "--port", "0", "--workers", "2", "--log-format", "json"]
        process = subprocess.Popen(
            [*command, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        served = Serve(process)
        started.append(served)
        return served.start()

    yield run
    for served in started:
        served.stop()


def fresh_requests(url: str, count: int) -> list[str]:
    """`count` requests, each on a new connection (spread over the workers by the kernel);
    the request ids of the answers."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": HI}
    ids = []
    for _ in range(count):
        with httpx.Client(timeout=WAIT) as http:
            answer = http.post(url + "/v1/messages", json=body)
        assert answer.status_code == 200, answer.text
        ids.append(answer.headers["request-id"])
    return ids


def test_two_workers_serve_one_port_record_one_journal_and_drain_on_sigterm(
    serve: Callable[..., Serve], upstream: FakeUpstream, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    served = serve("--record-dir", str(journal))
    upstream.always(JSONReply(completion("Hello.")))
    sent = fresh_requests(served.url, 24)
    assert len(served.workers()) == 2
    finished = [served.next_event(lambda e: e.get("event") == "finish") for _ in sent]
    assert sorted(e["request_id"] for e in finished) == sorted(sent)  # shown by the parent
    # Whichever worker answers the scrape, it counts both.
    scrape = httpx.get(served.url + "/metrics", timeout=WAIT).text
    counted = [line for line in scrape.splitlines() if line.startswith(REQUESTS_200)]
    assert [line.rsplit(" ", 1)[1] for line in counted] == [f"{len(sent)}.0"], counted

    # A stream in flight when SIGTERM comes: it ends as it should, then both workers exit.
    upstream.always(None)
    # The pause makes the window the signal arrives in; the grace period (5 s) outlasts it.
    first, rest = text_stream(["Still ", "here."])[:2], text_stream(["Still ", "here."])[2:]
    upstream.reply(SSEReply([*first, Pause(1.0), *rest]))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": HI, "stream": True}
    with (
        httpx.Client(timeout=WAIT) as http,
        http.stream("POST", served.url + "/v1/messages", json=body) as stream,
    ):
        lines = stream.iter_lines()
        assert next(line for line in lines if "Still" in line)
        served.process.send_signal(signal.SIGTERM)
        stopping = served.next_event(lambda e: e.get("event") == "stopping")
        assert stopping["in_flight"] == 1
        after = list(lines)
    assert any("message_stop" in line for line in after), after
    assert served.stop() == 0
    assert served.workers() == set()

    files = sorted(path.name for path in journal.glob("*.jsonl"))
    assert [name.rsplit("-", 1)[1] for name in files] == ["w1.jsonl", "w2.jsonl"], files
    for path in journal.glob("*.jsonl"):
        assert path.read_text().strip(), f"{path.name}: this worker answered nothing"
    listed = CliRunner().invoke(cli_app, ["replay", "list", str(journal), "--json", "-n", "0"])
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.stdout)
    assert len(records) == len(sent) + 1
    assert {r["request_id"] for r in records} >= set(sent)
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), reverse=True)


def test_a_killed_worker_is_said_and_started_again(
    serve: Callable[..., Serve], upstream: FakeUpstream
) -> None:
    served = serve()
    upstream.always(JSONReply(completion("Hello.")))
    fresh_requests(served.url, 4)
    before = served.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    said = json.loads(served.next_log("starting another"))
    assert f"pid {victim}" in said["msg"] and "killed by signal 9" in said["msg"]
    assert said["level"] == "warning" and "request_id" not in said
    served.next_log("is serving again")
    after = served.workers()
    assert len(after) == 2 and victim not in after and before - {victim} < after
    fresh_requests(served.url, 8)  # every connection, whichever socket it lands on, is served
    scrape = httpx.get(served.url + "/metrics", timeout=WAIT).text
    assert "claude_bridge_requests_in_flight" in scrape
    assert served.stop() == 0


# -- in process: the pieces serve puts together -------------------------------------------------


def test_the_workers_listen_on_one_port_that_nothing_else_can_take() -> None:
    groups = listen.bind_group("127.0.0.1", 0, 2)
    try:
        (first,), (second,) = groups
        assert first is not second
        port = listen.bound_port(groups[0])
        assert second.getsockname()[1] == port
        with pytest.raises(listen.ListenError, match=f"port {port} .* already in use"):
            listen.bind_group("127.0.0.1", port, 2)  # another `serve --workers` is refused
    finally:
        for group in groups:
            for sock in group:
                sock.close()


@pytest.mark.parametrize(
    ("value", "outcome"),
    [("2", 2), ("auto", os.cpu_count()), ("0", "at least 1"), ("many", "a number of processes")],
)
def test_the_workers_setting(value: str, outcome: int | str) -> None:
    env = {"CLAUDE_BRIDGE_WORKERS": value}
    if isinstance(outcome, int):
        assert load_settings(env=env, config_path=None, dotenv_path=None).worker_count() == outcome
    else:
        with pytest.raises(ConfigError, match=f"setting workers: .*{outcome}"):
            load_settings(env=env, config_path=None, dotenv_path=None)


def test_the_parent_mirrors_what_a_worker_relays() -> None:
    """Events with their fields, the progress of what is in flight (the dashboard reads it off
    the mirror), and log records, through a real pipe."""
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    relay = Relay(writer, os.getppid())  # as in a worker: the parent is ours
    seen: list[tuple[str, int, int]] = []
    bus = Bus()
    bus.subscribe(lambda kind, e: seen.append((kind, e.output_so_far, e.status)))
    supervisor = Supervisor(lambda index, life: print, [[]], bus, grace=5)
    worker = Worker(1, 0, context.Process(), reader, started=0.0)
    exchange = Exchange(id="req_1", route="messages", stream=True)
    relay("start", exchange)
    exchange.output_chars = 40  # streamed since: no event says so
    relay.start()
    supervisor._receive(worker)  # its first batch: the start
    assert seen == [("start", 0, 0)]
    (mirror,) = supervisor._mirror.values()
    assert mirror.output_so_far == 0
    supervisor._receive(worker)  # the next: progress (a quarter of a second later)
    assert mirror.output_so_far == 10 and mirror.stream
    exchange.status, exchange.output_tokens = 200, 12
    relay("finish", exchange)
    relay.put_nowait(
        logging.LogRecord("claude_bridge.test", logging.INFO, "", 0, "hello", None, None)
    )
    relay.close()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("claude_bridge.test").addHandler(handler)
    try:
        supervisor._receive(worker)
    finally:
        logging.getLogger("claude_bridge.test").removeHandler(handler)
    assert seen[1:] == [("finish", 12, 200)] and supervisor._mirror == {}
    (record,) = records
    assert record.getMessage() == "hello" and record.worker == 1  # type: ignore[attr-defined]
    reader.close()


def test_a_worker_that_keeps_dying_soon_after_it_starts_waits_longer_each_time() -> None:
    backoff = Backoff(first=1.0, cap=30.0, stable_after=60.0)
    quick = [backoff.delay(1, lived=2.0) for _ in range(8)]
    # The first death may be a blip: at once; then 1 s, doubling, up to the cap.
    assert quick == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay(2, lived=2.0) == 0.0  # every worker counts its own
    assert backoff.delay(1, lived=60.0) == 0.0  # a worker that had served a while: at once,
    assert backoff.delay(1, lived=2.0) == 0.0  # and the count starts again


def _ready_then_gone(relay: Relay, sockets: list[Any]) -> bool:
    """A worker that says it serves, and ends at once (a crash after start-up)."""
    relay.ready()
    return True


def _gone_before_ready(relay: Relay, sockets: list[Any]) -> bool:
    return False


def _dies_after_ready_three_times(index: int, life: int) -> Callable[[Relay, list[Any]], bool]:
    return _ready_then_gone if life < 3 else _gone_before_ready


def test_the_supervisor_waits_before_starting_a_worker_that_keeps_dying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real processes: a worker that dies right after it started is started again at once,
    then after the backoff's delays; one that cannot start at all stops the proxy."""
    supervisor = Supervisor(
        _dies_after_ready_three_times,
        [[]],
        Bus(),
        grace=5,
        backoff=Backoff(first=0.05, cap=0.1, stable_after=60.0),
    )
    with caplog.at_level(logging.WARNING, logger="claude_bridge.workers"):
        assert supervisor.run() is False
    said = [r.getMessage() for r in caplog.records if " exited (" in r.getMessage()]
    assert [m.split("; ", 1)[1] for m in said[:3]] == [
        "starting another",
        "starting another in 0.05 s",
        "starting another in 0.1 s",
    ]
    assert "again soon after it started" in said[1]
    assert "before it could serve" in said[3]
    assert supervisor.restarts == 3
