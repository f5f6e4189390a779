"""`serve --workers N`: N processes serving one port, watched and shown by the parent.

The parent binds before anything is drawn (one socket per worker and address, all on the same
port with `SO_REUSEPORT`, so the kernel spreads connections evenly: with one shared accept
queue, one worker tends to accept a whole burst of connections), starts the workers (`spawn`:
a fresh interpreter, no threads forked), and then only listens to them:

- each worker's bus has a `Relay`: on the event loop it appends a snapshot of the exchange to a
  deque (O(1)); a thread sends what accumulated, a batch every `SEND_INTERVAL`, over a pipe,
  with the progress of the exchanges still in flight (what the dashboard reads off the live
  objects in one process), the worker's log records and its journal writer's stalls;
- the parent keeps a mirror `Exchange` per exchange in flight and publishes the events on its
  own bus, so the dashboard, the request lines, JSON events and the request log work unchanged;
- a worker that dies while serving is said so and started again (its exchanges in flight end
  as failed on the dashboard), at once the first time; one that keeps dying soon after it
  starts is started again later each time (`Backoff`), so a crash at every start does not
  spin a core on interpreters starting; one that dies before it ever served means the proxy
  cannot start: every worker is stopped;
- Ctrl-C and SIGTERM reach the parent alone (the workers run in their own process group): the
  parent says at once what is in flight and sends every worker SIGTERM, which drains it as
  `serve` drains; a second Ctrl-C is passed on as SIGINT, ending what is left at once.

uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`) is not used: it has no channel
from the workers, and its signals kill rather than drain. Journals and metrics are the
caller's: each worker writes its own journal file, and `prometheus_client`'s multiprocess
mode (`PROMETHEUS_MULTIPROC_DIR`, set by `Supervisor` before the workers start) adds up the
workers' metrics at every scrape.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from logging.handlers import QueueHandler
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from .drain import Stopping, deadline
from .events import Bus, Exchange
from .logs import RequestIdFilter

log = logging.getLogger("claude_bridge.workers")

SEND_INTERVAL = 0.05
"""Seconds between two batches from a worker: events reach the parent's output this late."""
PROGRESS_EVERY = 5
"""Batches between two progress reports: 4 a second, as often as the dashboard draws."""
PARENT_GONE = "the parent process is gone"
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"

Message = tuple[Any, ...]
Entry = Callable[["Relay", list[socket.socket]], bool]
"""A worker's body: build the app with the relay on its bus, serve on the sockets until
stopped; whether it started. Picklable (a module-level function or a partial of one)."""


def snapshot(exchange: Exchange) -> dict[str, Any]:
    """The exchange's fields as they are now, without its trace (which stays in the worker)."""
    fields = exchange.__dict__.copy()
    fields.pop("trace", None)
    fields["notes"] = list(exchange.notes)
    return fields


# -- in a worker ---------------------------------------------------------------------------------


class Relay:
    """A worker's link to the parent: a bus listener, a log queue (`QueueHandler`'s), and
    the thread that sends both."""

    def __init__(self, conn: Connection, parent: int, interval: float = SEND_INTERVAL) -> None:
        self._conn = conn
        self._parent = parent
        self._interval = interval
        self._outbox: deque[Message] = deque()
        self._in_flight: dict[str, Exchange] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claude-bridge-relay", daemon=True)
        self.serving = False
        """The server has started (and so handles the stop signals itself)."""

    # On the event loop: O(1), never raises.

    def __call__(self, kind: str, exchange: Exchange) -> None:
        if kind == "start":
            self._in_flight[exchange.id] = exchange
        elif kind == "finish":
            self._in_flight.pop(exchange.id, None)
        self._outbox.append(("event", kind, snapshot(exchange)))

    def post(self, message: Message) -> None:
        self._outbox.append(message)

    def put_nowait(self, record: logging.LogRecord) -> None:
        """`QueueHandler`'s queue: the record, made picklable by the handler, goes along."""
        self._outbox.append(("log", record))

    def capture_logs(self) -> None:
        """Send claude_bridge's and uvicorn's log records to the parent, which writes them
        where `serve` writes its own (the levels stay as `logs.configure` set them)."""
        forward = QueueHandler(self)  # type: ignore[arg-type]  # a queue: put_nowait is enough
        forward.addFilter(RequestIdFilter())
        for name in ("claude_bridge", "uvicorn"):
            logger = logging.getLogger(name)
            logger.handlers[:] = [forward]
            logger.propagate = False

    def ready(self) -> None:
        self.serving = True
        self.post(("ready", os.getpid()))

    def stopping(self, stopping: Stopping) -> None:
        """The worker's drain began, or is ending what is left (`Drain.on_stop`)."""
        self.post(("stopping", stopping.in_flight, stopping.ends_in))

    def stalled(self, waited: float) -> None:
        """The journal writer's queue was full (`Recorder.on_stall`)."""
        self.post(("stall", waited))

    # The sending thread.

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Send what is left, then stop."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self._interval):
            ticks += 1
            progress = ticks % PROGRESS_EVERY == 0
            if os.getppid() != self._parent or not self._send(progress=progress):
                # Orphaned (the parent was killed): drain and stop rather than serve unseen.
                log.warning("%s: stopping", PARENT_GONE)
                os.kill(os.getpid(), signal.SIGTERM)
                return
        self._send(progress=False)

    def _send(self, *, progress: bool) -> bool:
        """Send what accumulated; False when the parent is gone."""
        batch: list[Message] = []
        outbox = self._outbox
        while outbox:
            batch.append(outbox.popleft())
        if progress:
            batch += [("progress", snapshot(e)) for e in list(self._in_flight.values())]
        if not batch:
            return True
        try:
            self._conn.send(batch)
        except OSError:
            return False
        except Exception:  # something in it cannot be pickled: the rest goes, it is named
            for message in batch:
                try:
                    self._conn.send([message])
                except OSError:
                    return False
                except Exception as exc:
                    lost = logging.makeLogRecord(
                        {"name": log.name, "levelno": logging.WARNING, "levelname": "WARNING"}
                    )
                    lost.msg = f"a {message[0]} message from this worker was lost: {exc}"
                    self._conn.send([("log", lost)])
        return True


def _child(entry: Entry, sockets: list[socket.socket], conn: Connection, parent: int) -> None:
    """A worker process: run `entry` with a relay to the parent."""
    # Ctrl-C at the terminal is the parent's to pass on (once, as SIGTERM): not this group's.
    os.setpgrp()
    relay = Relay(conn, parent)

    def stop(signum: int, frame: FrameType | None) -> None:
        # Before uvicorn handles the signals: stop starting. After it has drained, it raises
        # the signal that stopped it again: it ends nothing then, so the last events are sent.
        if not relay.serving:
            raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    relay.start()
    started = False
    try:
        started = entry(relay, sockets)
    finally:
        relay.close()
        conn.close()
    raise SystemExit(0 if started else 3)


# -- in the parent -------------------------------------------------------------------------------


@dataclass
class Backoff:
    """How long a dead worker's replacement waits: nothing when the worker had lived
    `stable_after` seconds, else `first` seconds, doubling with each quick death in a row up to
    `cap` (a worker that crashes while starting up again and again, say on a request that its
    client keeps sending, is started a few times a minute rather than back to back)."""

    first: float = 1.0
    cap: float = 30.0
    stable_after: float = 60.0
    _quick: dict[int, int] = field(default_factory=dict)

    def delay(self, index: int, lived: float) -> float:
        """The wait before worker `index` starts again, having lived `lived` seconds."""
        if lived >= self.stable_after:
            self._quick.pop(index, None)
            return 0.0
        quick = self._quick[index] = self._quick.get(index, 0) + 1
        if quick == 1:  # a first death soon after a start: it may be the machine's blip
            return 0.0
        return min(self.cap, self.first * 2.0 ** (quick - 2))


@dataclass
class Worker:
    index: int
    """1, 2, ...: names the worker in messages and its journal file."""
    life: int
    """0 for the first process of this index, 1 after its first restart, ..."""
    process: multiprocessing.process.BaseProcess
    conn: Connection | None
    started: float
    """When it was started (the supervisor's clock)."""
    ready: bool = False
    exchanges: set[str] = field(default_factory=set)
    """Its exchanges in flight (their mirrors)."""

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"


class Supervisor:
    """Starts `count` workers, shows their events on `bus`, restarts those that die, and on
    a stop signal drains them all. `entry(index, life)` is the body of worker `index`'s
    `life`-th process; `sockets[index - 1]` are its listening sockets."""

    def __init__(
        self,
        entry: Callable[[int, int], Entry],
        sockets: list[list[socket.socket]],
        bus: Bus,
        *,
        grace: float,
        on_stop: Callable[[Stopping], None] = lambda stopping: None,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self._entry = entry
        self._sockets = sockets
        self._bus = bus
        self._grace = grace
        self._on_stop = on_stop
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, Worker] = {}
        self._due: dict[int, tuple[float, int]] = {}
        """Workers to start again: index -> (when, life)."""
        self._mirror: dict[str, Exchange] = {}
        self._stopping = False
        self._ended = False
        self._failed: str | None = None
        self._reports: dict[int, Stopping] = {}
        self._reporting = False
        self.restarts = 0
        self.journal_stalls = 0

    @property
    def count(self) -> int:
        return len(self._sockets)

    def serving(self) -> int:
        """Workers serving now (started and not exited)."""
        return sum(1 for w in list(self._workers.values()) if w.ready)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    def run(self) -> bool:
        """Serve until a stop signal has drained every worker; False if they could not start
        (the reason has been logged)."""
        with self._signals():
            for index in range(1, self.count + 1):
                if not self._stopping:  # a stop signal may come while they start
                    self._start(index, 0)
            while self._workers or (self._due and not self._stopping):
                self._step()
        if self._failed is not None:
            log.error("%s", self._failed)
            return False
        return True

    # -- the loop

    def _step(self) -> None:
        timeout = 1.0
        if self._stopping:
            self._due.clear()  # a stop signal came while they waited: none starts
        for index, (when, life) in sorted(self._due.items()):
            left = when - self._clock()
            if left <= 0:
                del self._due[index]
                self._start(index, life)
            else:
                timeout = min(timeout, left)
        waiting: dict[object, Worker] = {}
        for worker in self._workers.values():
            waiting[worker.process.sentinel] = worker
            if worker.conn is not None:
                waiting[worker.conn] = worker
        if not waiting:  # only restarts to wait for
            time.sleep(timeout)
            return
        for ready in wait(list(waiting), timeout=timeout):  # type: ignore[arg-type]
            worker = waiting[ready]
            if ready is worker.conn:
                self._receive(worker)
            elif self._workers.get(worker.index) is worker:
                self._exited(worker)

    def _receive(self, worker: Worker) -> None:
        assert worker.conn is not None
        try:
            batch = worker.conn.recv()
        except (EOFError, OSError):
            worker.conn.close()
            worker.conn = None
            return
        for message in batch:
            self._apply(worker, message)

    def _apply(self, worker: Worker, message: Message) -> None:
        kind = message[0]
        if kind == "event":
            _, name, fields = message
            exchange = self._mirrored(worker, fields)
            if name == "finish":
                self._mirror.pop(exchange.id, None)
                worker.exchanges.discard(exchange.id)
            self._publish(name, exchange)
        elif kind == "progress":
            mirror = self._mirror.get(message[1]["id"])
            if mirror is not None:
                mirror.__dict__.update(message[1])
        elif kind == "log":
            record: logging.LogRecord = message[1]
            record.worker = worker.index
            logging.getLogger(record.name).handle(record)
        elif kind == "ready":
            worker.ready = True
            if worker.life:
                log.warning("%s is serving again", worker.name)
        elif kind == "stall":
            self.journal_stalls += 1
        elif kind == "stopping":
            self._reports[worker.index] = Stopping(message[1], message[2])
            self._report()

    def _publish(self, kind: str, exchange: Exchange) -> None:
        # In a context of its own: what a listener binds there (the request id for the log
        # records) stays with this exchange, not with the parent's next records.
        contextvars.copy_context().run(self._bus.publish, kind, exchange)

    def _mirrored(self, worker: Worker, fields: dict[str, Any]) -> Exchange:
        exchange = self._mirror.get(fields["id"])
        if exchange is None:
            exchange = self._mirror[fields["id"]] = Exchange(**fields)
            worker.exchanges.add(exchange.id)
        else:
            exchange.__dict__.update(fields)
        return exchange

    def _exited(self, worker: Worker) -> None:
        while worker.conn is not None and worker.conn.poll():
            self._receive(worker)  # what it sent before it died
        if worker.conn is not None:
            worker.conn.close()
        del self._workers[worker.index]
        _forget_metrics(worker.process.pid)
        worker.process.join()  # ended (its sentinel said so): reaped at once
        code = worker.process.exitcode
        self._lost(worker, code)
        if self._stopping:
            self._report()
            return
        how = f"was killed by signal {-code}" if code and code < 0 else f"exited ({code})"
        if not worker.ready:
            self._failed = f"{worker.name} {how} before it could serve (see above)"
            self._stop(signal.SIGTERM)
            return
        self.restarts += 1
        delay = self._backoff.delay(worker.index, self._clock() - worker.started)
        if delay <= 0:
            log.warning("%s %s; starting another", worker.name, how)
            self._start(worker.index, worker.life + 1)
            return
        log.warning(
            "%s %s, again soon after it started; starting another in %g s",
            worker.name,
            how,
            delay,
        )
        self._due[worker.index] = (self._clock() + delay, worker.life + 1)

    def _lost(self, worker: Worker, code: int | None) -> None:
        """Its exchanges in flight end, failed, for every listener."""
        for id_ in sorted(worker.exchanges):
            exchange = self._mirror.pop(id_, None)
            if exchange is None:
                continue
            exchange.finished = self._clock()
            exchange.status = exchange.status or 502
            exchange.error_type = exchange.error_type or "api_error"
            exchange.error = exchange.error or f"the worker serving it ended (exit code {code})"
            self._publish("finish", exchange)
        worker.exchanges.clear()

    def _start(self, index: int, life: int) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child,
            args=(self._entry(index, life), self._sockets[index - 1], writer, os.getpid()),
            name=f"claude-bridge-worker-{index}",
            daemon=False,
        )
        # The child starts ignoring Ctrl-C (inherited across exec) until it has left this
        # process group: a Ctrl-C meanwhile is the parent's alone.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        writer.close()
        self._workers[index] = Worker(index, life, process, reader, self._clock())

    # -- stopping

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._signalled) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._expect_reports()
            self._stop(signal.SIGTERM)
        elif signum == signal.SIGINT:
            # A second Ctrl-C ends what is in flight now; a third is uvicorn's force-quit.
            # (A repeated SIGTERM changes nothing, as for one process.)
            if not self._ended:
                self._ended = True
                self._expect_reports()
            self._stop(signal.SIGINT)

    def _expect_reports(self) -> None:
        """`on_stop` hears once every serving worker has said what it has in flight (its
        drain knows, to the request; the parent's view is a batch behind)."""
        self._reports = {}
        self._reporting = True
        self._report()

    def _report(self) -> None:
        serving = {w.index for w in self._workers.values() if w.ready}
        if not self._reporting or not serving <= set(self._reports):
            return
        self._reporting = False
        reports = [self._reports[i] for i in serving]
        # The workers share one grace period: they all end what is left at the same time.
        ends_in = reports[0].ends_in if reports else 0.0 if self._ended else deadline(self._grace)
        try:
            self._on_stop(Stopping(sum(r.in_flight for r in reports), ends_in))
        except Exception:
            log.exception("stop listener failed")

    def _stop(self, sig: int) -> None:
        self._stopping = True
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(worker.process.pid, sig)  # type: ignore[arg-type]


@contextlib.contextmanager
def shared_metrics(on: bool = True) -> Iterator[None]:
    """A directory for the workers' metrics (prometheus-client's multiprocess mode), in the
    environment the workers are started with; removed at the end."""
    if not on:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="claude-bridge-metrics-") as directory:
        os.environ[METRICS_DIR] = directory
        try:
            yield
        finally:
            del os.environ[METRICS_DIR]


def _forget_metrics(pid: int | None) -> None:
    """A dead worker's live gauges (requests in flight) leave the scrape; its counters stay."""
    directory = os.environ.get(METRICS_DIR)
    if directory and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
