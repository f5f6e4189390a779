"""The journal's writer thread (proxy/journal/writer.py): the event loop hands finished
exchanges over, a bounded queue feeds the thread, a full queue makes the caller wait and is
said (a warning, `Recorder.stalls`, a metric, the dashboard), nothing is dropped.

No sleeps: the writer is held by events, and the clock `Background` reads when the queue is
full is what lets it go (so the wait is certain to happen, and to end).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_bridge.cli import render
from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Background, Job, Recorder
from claude_bridge.proxy.metrics import Metrics


class Held:
    """A writer that keeps the jobs until told to run them."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> float | None:
        self.jobs.append(job)
        return None

    def run(self) -> None:
        for job in self.jobs:
            job()
        self.jobs.clear()

    def close(self) -> None:
        self.run()


def finish(recorder: Recorder, n: int, body: bytes = b'{"model": "m"}') -> Exchange:
    exchange = Exchange(id=f"req_{n:03d}", route="messages", status=200)
    recorder("start", exchange)
    assert exchange.trace is not None
    exchange.trace.client_body(body)
    recorder("finish", exchange)
    return exchange


def held_writer(size: int) -> tuple[Background, threading.Event, Callable[[], float]]:
    """A background writer busy with a job that waits for `gate`, and the clock to give it:
    reading the clock (which `submit` does only when the queue is full) opens the gate."""
    gate, busy = threading.Event(), threading.Event()
    times = iter([10.0, 10.25])

    def clock() -> float:
        gate.set()
        return next(times)

    writer = Background(size, clock=clock)

    def hold() -> None:
        busy.set()
        gate.wait()

    writer.submit(hold)
    assert busy.wait(10)
    return writer, gate, clock


def test_the_finish_event_hands_over_and_the_writer_builds_later(tmp_path: Path) -> None:
    writer = Held()
    recorder = Recorder(tmp_path / "j.jsonl", writer=writer)
    exchange = finish(recorder, 1)
    exchange.notes.append("changed after it finished")  # the pipeline's object, not the record's
    exchange.status = 500
    assert len(writer.jobs) == 1 and recorder.written == 0
    assert not (tmp_path / "j.jsonl").exists()  # nothing built or written on the loop
    writer.run()
    recorder.close()
    (record,) = load(tmp_path / "j.jsonl").records
    assert record.request_id == "req_001" and record.status == 200 and record.notes == []


def test_records_are_complete_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    recorder = Recorder(path, writer=Background(64))  # room for all: no waits
    sent = [finish(recorder, n, b'{"model": "m", "n": %d}' % n).id for n in range(50)]
    hanging = Exchange(id="req_hanging", route="messages")
    recorder("start", hanging)
    recorder.close()  # waits for the writer: everything queued is written
    records = load(path).records[::-1]  # oldest first
    assert [r.request_id for r in records] == [*sent, "req_hanging"]
    assert [r.state for r in records] == ["complete"] * 50 + ["incomplete"]
    assert [r.client.body["n"] for r in records[:50]] == list(range(50))
    assert recorder.written == 51 and recorder.stalls == 0


def test_a_full_queue_waits_and_says_so_dropping_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer, _, _ = held_writer(size=1)
    path = tmp_path / "j.jsonl"
    recorder = Recorder(path, writer=writer)
    metrics = Metrics()
    recorder.on_stall(metrics.journal_stalled)
    with caplog.at_level(logging.WARNING, logger="claude_bridge.journal"):
        finish(recorder, 1)  # fills the queue (the writer is busy)
        finish(recorder, 2)  # full: waits, until the clock lets the writer go
    assert recorder.stalls == 1 and recorder.stalled == 0.25
    (warning,) = caplog.records
    assert "journal writer is behind" in warning.getMessage()
    assert "nothing is dropped" in warning.getMessage()
    scrape = metrics.exposition()[0].decode()
    assert "claude_bridge_journal_queue_full_total 1.0" in scrape
    assert "claude_bridge_journal_wait_seconds_total 0.25" in scrape
    recorder.close()
    assert [r.request_id for r in load(path).records[::-1]] == ["req_001", "req_002"]


def test_a_record_that_fails_to_build_is_logged_and_the_writer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = Background(2)
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="claude_bridge.journal"):
        writer.submit(broken)
        writer.submit(lambda: done.append(1))
        writer.close()
    assert done == [1]
    assert [r.getMessage() for r in caplog.records] == ["journal record not written"]


def test_the_dashboard_header_says_the_writer_is_behind_and_how_the_workers_are() -> None:
    info = render.ServerInfo(listen="127.0.0.1:8082", upstream="u", recording="/j.jsonl")
    view = render.View(
        info=info, now=0, uptime=1, requests=0, errors=0, input_tokens=0, cached_tokens=0,
        output_tokens=0, per_minute=0, in_flight=[], recent=[],
        health=render.Health(workers=2, serving=1, restarts=1, journal_stalls=3),
    )  # fmt: skip
    line = "".join(piece for piece, _ in render.header(view)[1])
    assert "(writer behind: 3 waits)" in line and "workers 1/2 (1 restarted)" in line
    quiet = render.View(**{**view.__dict__, "health": render.Health()})
    assert "workers" not in "".join(piece for piece, _ in render.header(quiet)[1])
