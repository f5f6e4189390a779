"""CPU-heavy work on big request bodies, in worker processes, off the event loop.

Parsing, validating and translating a 14.7 MB body of 400,001 short messages takes seconds of
CPU however it is done. Measured on 2 cores, the event loop's worst stall meanwhile (what every
other stream waits for its next chunk or ping):

* inline: the whole work, 10-17 s;
* in a thread: still 0.8-1.4 s. `json.loads` and `json.dumps` of 15 MB each hold the GIL in
  one go for a few hundred ms, and so does each full garbage collection over the millions of
  new objects; a shorter `sys.setswitchinterval` (1 ms) made the work slower and the stalls
  no shorter;
* in a worker process: nothing left on the loop of a few ms (bench/big_body.py): a thread
  writes the body to the worker's pipe and reads the answer back (see `Offload`); the worker
  runs at a lower priority, so that it does not take a core from the loop either.

So the bodies that would take long go to a worker (`worth_offloading`); the others stay inline,
where they take a few milliseconds, less than a round trip to a worker.

The workers are plain child processes (`python -c`), not `multiprocessing`'s: that one re-imports
the main module in every child (a script that starts the server unguarded would start it again)
and moves data through threads of its own. A job is a picklable function, a body and more
arguments; the answer is bytes and a result, or an exception. Bodies travel as they are, the
rest pickled, each part length-prefixed on the child's stdin and stdout. Workers start when
first needed and stay; a worker whose caller stops waiting (the client left) is killed, so it
does not work on for nobody, and a new one starts on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

from .core.errors import BridgeError

log = logging.getLogger("claude_bridge.offload")

T = TypeVar("T")

# What a body costs to prepare follows the number of JSON objects in it, not its size: 7-17 us
# an object on a slow 2-core machine whatever their shape (400,001 short messages: seconds; a
# realistic 1 MB Claude Code conversation, 3,200 objects: 48 ms; 8 MB of one text: 19 ms).
# Bodies under `OFFLOAD_BYTES` stay inline unexamined (at most ~2,600 objects: ~40 ms). Larger
# ones are counted (`{`s: under 0.1 us a KB) and go to a worker beyond `OFFLOAD_OBJECTS`, or beyond
# `OFFLOAD_ALWAYS` bytes; the others stay inline, where a round trip to a worker would cost
# them more than they hold the loop.
OFFLOAD_BYTES = 64 * 1024
OFFLOAD_OBJECTS = 3_000
OFFLOAD_ALWAYS = 8 * 1024 * 1024
# Workers running at once: one core is left to the event loop.
MAX_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
WORKER_NICENESS = 10
_HEADER = 8
_CHILD = "from claude_bridge.proxy.offload import serve; serve()"


def worth_offloading(body: bytes) -> bool:
    """Whether preparing `body` (a JSON request) would hold the event loop too long."""
    size = len(body)
    if size < OFFLOAD_BYTES:
        return False
    if size >= OFFLOAD_ALWAYS:
        return True
    # Counted by what deleting them leaves: `replace` finds them with `memchr`, four times
    # faster than `count`'s look at every byte where they are sparse (a Claude Code body), and
    # stops after `limit` where they are not.
    limit = OFFLOAD_OBJECTS + 1
    return size - len(body.replace(b"{", b"", limit)) >= limit


class WorkerFailed(BridgeError):
    """A worker died (killed, out of memory) before it answered."""


Job = Callable[..., tuple[bytes, T]]
"""A worker's job: `job(data, *args) -> (bytes, result)`. The bytes both ways travel as they
are, the rest pickled: pickling a 15 MB body would copy it once more, holding the GIL."""


class Offload:
    """A small pool of worker processes; `run` is safe to cancel.

    A worker is started and spoken to from a thread: `subprocess` starts it with `vfork`, where
    uvloop's own spawn forks the whole proxy (tens of ms of stall for a big process), and the
    pipes' reads and writes give up the GIL and copy nothing, where an asyncio transport would
    copy a 15 MB body in one go (tens of ms on a slow machine)."""

    def __init__(self, workers: int = MAX_WORKERS) -> None:
        self._workers = workers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        self._started: set[_Worker] = set()

    async def run(self, job: Job[T], data: bytes, *args: Any) -> tuple[bytes, T]:
        """`job(data, *args)` in a worker: what it returned, or its exception raised here."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an app run under one loop after another (TestClient)
            self._slots = asyncio.Semaphore(self._workers)
            self._loop = loop
        meta = pickle.dumps((job, args), protocol=pickle.HIGHEST_PROTOCOL)
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            try:
                if worker is None:
                    worker = await asyncio.to_thread(_Worker)
                    self._started.add(worker)
                meta, data = await asyncio.to_thread(worker.call, meta, data)
            except BaseException:
                # Cancelled mid-job, or the worker died: its late answer must reach nobody.
                if worker is not None:
                    worker.kill()
                    self._started.discard(worker)
                    # Reaped, its pipes closed, in a thread: the process takes a moment to go.
                    with contextlib.suppress(RuntimeError):  # the loop's executor is shut down
                        loop.run_in_executor(None, worker.stop)
                raise
            self._idle.append(worker)
        ok, value = pickle.loads(meta)
        if not ok:
            raise value
        return data, value

    async def aclose(self) -> None:
        workers = list(self._started)
        self._idle.clear()
        self._started.clear()
        for worker in workers:
            worker.kill()
            await asyncio.to_thread(worker.stop)


class _Worker:
    """One worker process; `call` blocks (it runs in a thread)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def call(self, meta: bytes, data: bytes) -> tuple[bytes, bytes]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            for part in (meta, data):
                stdin.write(len(part).to_bytes(_HEADER, "big"))
                stdin.write(part)
            stdin.flush()
            return _read_part(stdout), _read_part(stdout)
        except (OSError, ValueError, EOFError) as exc:  # a broken pipe, a cut answer
            self.stop()
            raise WorkerFailed(
                f"the worker process preparing the request failed ({type(exc).__name__})"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def stop(self) -> None:
        """Kill it, reap it, close its pipes (blocks for as long as the process takes to go)."""
        self.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # flushing to a dead process
                if pipe is not None:
                    pipe.close()


def _read_part(stdout: IO[bytes]) -> bytes:
    """One length-prefixed part; a buffered read of the whole size reads into the result."""
    header = stdout.read(_HEADER)
    size = int.from_bytes(header, "big")
    part = stdout.read(size)
    if len(header) < _HEADER or len(part) < size:
        raise EOFError
    return part


# -- the worker's side -----------------------------------------------------------------------


def serve() -> None:
    """A worker's loop: jobs in on stdin, answers out on stdout, until stdin closes."""
    # Behind the event loop for the CPU: on a machine short of cores, the streams in flight
    # must not wait for a core this bulk work holds.
    os.nice(WORKER_NICENESS)
    jobs = sys.stdin.buffer
    # The answers get stdout's descriptor to themselves: a stray print goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while header := jobs.read(_HEADER):
        meta = jobs.read(int.from_bytes(header, "big"))
        data = jobs.read(int.from_bytes(jobs.read(_HEADER), "big"))
        for part in _answer(meta, data):
            answers.write(len(part).to_bytes(_HEADER, "big"))
            answers.write(part)
        answers.flush()


def _answer(meta: bytes, data: bytes) -> tuple[bytes, bytes]:
    # The job makes millions of objects and drops them all at its end, none in a cycle:
    # collecting meanwhile would only traverse them again and again (it tripled the time).
    gc.disable()
    out = b""
    try:
        job, args = pickle.loads(meta)
        out, value = job(data, *args)
        result: tuple[bool, Any] = (True, value)
    except BridgeError as exc:
        result = (False, exc)
    except Exception as exc:  # a bug: the traceback goes to the log (stderr is the proxy's)
        log.exception("a worker job failed")
        result = (False, RuntimeError(f"a worker job failed: {type(exc).__name__}: {exc}"))
    finally:
        gc.enable()
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), out
